// Runs a shell command line (usually the lmforge binary, LMFORGE_BINARY) for the CLI tests: stdout and stderr
// together, and the exit code (-1 when it did not exit normally).
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace lmforge::testing {

struct CliRun {
  int code;
  std::string out;
};

inline CliRun sh(const std::string& script) {
  FILE* p = popen(("(" + script + ") 2>&1").c_str(), "r");
  std::string out;
  if (!p) return {-1, out};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace lmforge::testing
