// The lmforge binary as a user runs it: exit codes, --version/--help, and the `bench ops --json` contract.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace {

struct CliRun {
  int code;
  std::string out;
};

CliRun run(const std::string& args) {
  const std::string cmd = std::string(LMFORGE_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Cli, VersionAndHelp) {
  CliRun v = run("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_NE(v.out.find("lmforge "), std::string::npos);
  CliRun h = run("--help");
  EXPECT_EQ(h.code, 0);
  for (const char* sub : {"data", "tokenizer", "init-model", "forward", "train", "finetune", "eval", "quantize",
                          "export", "generate", "serve", "bench", "runs", "report", "pipeline"})
    EXPECT_NE(h.out.find(sub), std::string::npos) << sub;
}

TEST(Cli, BadUsageExitsTwoAndNamesTheFlag) {
  CliRun r = run("--no-such-flag");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--no-such-flag"), std::string::npos) << r.out;
  CliRun t = run("bench ops --threads zero");
  EXPECT_EQ(t.code, 2);
  EXPECT_NE(t.out.find("--threads"), std::string::npos) << t.out;
  EXPECT_EQ(run("").code, 2);  // a subcommand is required
}

TEST(Cli, UnbuiltStagesSayWhichIssueBuildsThem) {
  CliRun r = run("serve");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("not built yet"), std::string::npos) << r.out;
}

TEST(Cli, BenchOpsJsonContract) {
  CliRun r = run("bench ops --quick --json --filter rmsnorm --repeats 2");
  ASSERT_EQ(r.code, 0) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  int rows = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    auto j = nlohmann::json::parse(line);
    for (const char* key : {"op", "shape", "threads", "ms", "reference", "ratio"})
      EXPECT_TRUE(j.contains(key)) << key << " missing in " << line;
    EXPECT_TRUE(j.contains("gflops") || j.contains("gbps")) << line;
    EXPECT_GT(j["ms"].get<double>(), 0.0);
    EXPECT_GT(j["ratio"].get<double>(), 0.0);
    if (j["op"].get<std::string>().rfind("rmsnorm", 0) == 0) ++rows;
  }
  EXPECT_GE(rows, 2) << r.out;
}

}  // namespace
