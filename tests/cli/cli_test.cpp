// The lmforge binary as a user runs it: exit codes, --version/--help, and the `bench ops --json` contract.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace {

struct CliRun {
  int code;
  std::string out;
};

std::string escape_single_quotes(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out;
}

CliRun run(const std::string& args) {
  const std::string cmd = "bash -c '" + escape_single_quotes(std::string(LMFORGE_BINARY) + " " + args) + "' 2>&1";
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

// lmforge tokenizer: encode/decode through pipes, --jsonl, info, train, and exit 2 naming the line or field.
TEST(Cli, TokenizerEncodeDecodeInfoTrain) {
  const std::string fixtures = std::string(LMFORGE_SOURCE_DIR) + "/tests/tokenizer/fixtures/";
  const std::string tok = fixtures + "mini_gpt2_template.tokenizer.json";
  CliRun e = run("tokenizer encode --no-special --tokenizer " + tok + " <<< 'Hello world'");
  ASSERT_EQ(e.code, 0) << e.out;
  CliRun d = run("tokenizer encode --tokenizer " + tok + " --no-special <<< 'Hello 世界' | " + LMFORGE_BINARY +
                 " tokenizer decode --tokenizer " + tok);
  EXPECT_EQ(d.code, 0);
  EXPECT_EQ(d.out, "Hello 世界\n");
  CliRun j = run("tokenizer encode --jsonl --tokenizer " + tok + " <<< '{\"text\": \"hi\"}'");
  ASSERT_EQ(j.code, 0) << j.out;
  auto ids = nlohmann::json::parse(j.out)["ids"];
  EXPECT_GE(ids.size(), 3u);  // <bos> ... <eos>
  CliRun bad = run("tokenizer encode --jsonl --tokenizer " + tok + " <<< $'{\"text\": \"a\"}\\n{\"txt\": 1}'");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.out.find("stdin:2: field \"text\" missing"), std::string::npos) << bad.out;
  CliRun skip =
      run("tokenizer encode --jsonl --skip-bad --tokenizer " + tok + " <<< $'{\"text\": \"a\"}\\n{\"txt\": 1}'");
  EXPECT_EQ(skip.code, 0) << skip.out;
  CliRun inv = run("tokenizer encode --tokenizer " + tok + " < <(printf 'a\\xffb')");
  EXPECT_EQ(inv.code, 2);
  EXPECT_NE(inv.out.find("not valid UTF-8"), std::string::npos) << inv.out;
  EXPECT_EQ(run("tokenizer encode --replace-invalid --tokenizer " + tok + " < <(printf 'a\\xffb')").code, 0);
  CliRun info = run("tokenizer info --json --tokenizer " + tok);
  ASSERT_EQ(info.code, 0) << info.out;
  EXPECT_EQ(nlohmann::json::parse(info.out)["decoder"], "ByteLevel");
  CliRun unsupported = run("tokenizer info --tokenizer " + fixtures + "gpt2.expected.json");
  EXPECT_EQ(unsupported.code, 2);
  EXPECT_NE(unsupported.out.find("gpt2.expected.json: model: missing"), std::string::npos) << unsupported.out;
  const std::string out = "/tmp/lmforge_cli_tok_" + std::to_string(getpid()) + ".json";
  CliRun train = run("tokenizer train --input /usr/share/common-licenses/GPL-3 --vocab-size 400 --json --out " + out +
                     " --special-tokens '<s>,</s>'");
  ASSERT_EQ(train.code, 0) << train.out;
  EXPECT_EQ(run("tokenizer info --tokenizer " + out).code, 0);
  std::remove(out.c_str());
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
