// `lmforge data ...` as a user runs it: exit codes, messages naming file:line:field, reports, atomic outputs.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "temp_dir_test.h"

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

class DataCli : public lmforge::testing::TempDirTest {
 protected:
  std::string write(const std::string& name, const std::string& body) {
    std::ofstream(path(name), std::ios::binary) << body;
    return path(name);
  }
  std::string read(const std::string& name) {
    std::ifstream f(path(name));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  static std::string fixture(const std::string& name) {
    return std::string(LMFORGE_SOURCE_DIR) + "/tests/data/fixtures/" + name;
  }
};

TEST_F(DataCli, CleanWritesOutputReportAndSummary) {
  const auto in = write("in.jsonl",
                        "{\"id\":7,\"text\":\"<p>Mail me:  a.b@example.com</p>\\u0007\"}\n"
                        "{\"id\":8,\"text\":\"<br>\"}\n");
  CliRun r = run("data clean --input " + in + " --output " + path("out.jsonl") + " --strip-html --mask-pii --report " +
                 path("rep.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("clean: 2 documents"), std::string::npos) << r.out;
  EXPECT_EQ(read("out.jsonl"), "{\"id\":7,\"text\":\"Mail me: <EMAIL>\"}\n");
  auto rep = nlohmann::json::parse(read("rep.json"));
  EXPECT_EQ(rep["stage"], "clean");
  EXPECT_EQ(rep["documents_in"], 2);
  EXPECT_EQ(rep["documents_out"], 1);
  EXPECT_EQ(rep["dropped"]["empty_after_clean"]["documents"], 1);
  EXPECT_EQ(rep["counters"]["pii_email"], 1);
}

TEST_F(DataCli, BadInputExitsTwoNamingFileLineAndField) {
  const auto in = write("bad.jsonl", "{\"text\":\"ok\"}\n{\"body\":\"x\"}\n{\"text\":\n");
  CliRun r = run("data clean --input " + in + " --output " + path("o.jsonl"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("bad.jsonl:2: field 'text' missing"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(path("o.jsonl")));
  r = run("data clean --skip-bad --json --quiet --input " + in + " --output " + path("o.jsonl"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto rep = nlohmann::json::parse(r.out);
  EXPECT_EQ(rep["dropped"]["missing_field"]["documents"], 1);
  EXPECT_EQ(rep["dropped"]["bad_json"]["documents"], 1);
  EXPECT_EQ(run("data clean --input " + path("none.jsonl") + " --output " + path("o.jsonl")).code, 2);
  EXPECT_EQ(run("data clean --input " + in + " --output " + path("o.jsonl") + " --invalid-utf8 maybe").code, 2);
  const auto bad8 = write("b8.jsonl", "{\"text\":\"\xff\"}\n");
  r = run("data clean --invalid-utf8 error --input " + bad8 + " --output " + path("o.jsonl"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("b8.jsonl:1: invalid UTF-8"), std::string::npos) << r.out;
}

TEST_F(DataCli, HugeSingleLineAndEmptyFile) {
  std::string big = "{\"text\":\"" + std::string(100 << 20, 'a') + "\"}\n";
  const auto in = write("big.jsonl", big);
  big.clear();
  CliRun r = run("data clean --quiet --input " + in + " --output " + path("o.jsonl"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(std::filesystem::file_size(path("o.jsonl")), (100u << 20) + 12);
  r = run("data clean --input " + write("empty.jsonl", "") + " --output " + path("e.jsonl"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read("e.jsonl"), "");
}

}  // namespace

namespace {
TEST_F(DataCli, DedupRealEmailKeepsFirstOccurrenceDeterministically) {
  const std::string in = fixture("spam_assassin_slice.jsonl");
  CliRun a = run("data dedup --quiet --input " + in + " --output " + path("a.jsonl") + " --report " + path("rep.json"));
  ASSERT_EQ(a.code, 0) << a.out;
  auto rep = nlohmann::json::parse(read("rep.json"));
  EXPECT_EQ(rep["documents_in"], 200);
  EXPECT_EQ(rep["dropped"]["exact_duplicate"]["documents"], 19);
  EXPECT_EQ(rep["counters"]["lsh_bands"], 9);
  const int64_t out = rep["documents_out"];
  EXPECT_EQ(out + 19 + rep["dropped"]["near_duplicate"]["documents"].get<int64_t>(), 200);
  // Same result with one thread and with the Bloom filter.
  CliRun b = run("data dedup --quiet --bloom --bloom-capacity 10000 --input " + in + " --output " + path("b.jsonl"));
  ASSERT_EQ(b.code, 0) << b.out;
  CliRun c = run("data dedup --quiet --input " + in + " --output " + path("c.jsonl"));
  setenv("LMFORGE_THREADS", "1", 1);
  CliRun d = run("data dedup --quiet --input " + in + " --output " + path("d.jsonl"));
  unsetenv("LMFORGE_THREADS");
  EXPECT_EQ(read("a.jsonl"), read("b.jsonl"));
  EXPECT_EQ(read("a.jsonl"), read("d.jsonl"));
  // The first message survives; ids keep their input order.
  std::istringstream lines(read("a.jsonl"));
  std::string first;
  std::getline(lines, first);
  EXPECT_EQ(nlohmann::json::parse(first)["id"], "00002");
  EXPECT_EQ(run("data dedup --input " + in + " --output " + path("x.jsonl") + " --threshold 2").code, 2);
}
}  // namespace

namespace {
TEST_F(DataCli, FilterAndStats) {
  const std::string in = fixture("spam_assassin_slice.jsonl");
  const std::string tok =
      std::string(LMFORGE_SOURCE_DIR) + "/tests/tokenizer/fixtures/mini_deepseek_pattern.tokenizer.json";
  const auto bl = write("block.txt", "# comment line\n(?i)\\bviagra\\b\n\n(?i)free money\n");
  CliRun r = run("data filter --quiet --json --input " + in + " --output " + path("f.jsonl") + " --block-list " + bl +
                 " --quality --min-chars 100");
  ASSERT_EQ(r.code, 0) << r.out;
  auto rep = nlohmann::json::parse(r.out);
  EXPECT_EQ(rep["documents_in"], 200);
  EXPECT_GT(rep["documents_out"].get<int>(), 50);
  EXPECT_GT(rep["dropped"]["mean_word_length"]["documents"].get<int>(), 0);
  // With a tokenizer the default window is 32-2048 tokens.
  r = run("data filter --quiet --json --input " + in + " --output " + path("t.jsonl") + " --tokenizer " + tok);
  ASSERT_EQ(r.code, 0) << r.out;
  rep = nlohmann::json::parse(r.out);
  EXPECT_EQ(rep["documents_out"].get<int>() +
                rep["dropped"].value("too_few_tokens", nlohmann::json{{"documents", 0}})["documents"].get<int>() +
                rep["dropped"].value("too_many_tokens", nlohmann::json{{"documents", 0}})["documents"].get<int>(),
            200);
  EXPECT_EQ(run("data filter --input " + in + " --output " + path("x.jsonl") + " --block-regex '(bad'").code, 2);
  EXPECT_EQ(run("data filter --input " + in + " --output " + path("x.jsonl") + " --min-tokens 5").code, 2);

  r = run("data stats --quiet --input " + in + " --tokenizer " + tok + " --report " + path("s.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto s = nlohmann::json::parse(r.out);
  EXPECT_EQ(s["documents"], 200);
  EXPECT_EQ(s["exact_duplicates"], 19);
  EXPECT_GT(s["tokens"].get<int64_t>(), 10000);
  EXPECT_EQ(s["chars_per_document"]["max"], 2488);
  EXPECT_EQ(nlohmann::json::parse(read("s.json")), s);
  // --output: the same statistics in a file, nothing on stdout.
  r = run("data stats --quiet --input " + in + " --tokenizer " + tok + " --output " + path("o.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(r.out.empty()) << r.out;
  auto o = nlohmann::json::parse(read("o.json"));
  o.erase("read");
  s.erase("read");  // the read timings differ between runs
  EXPECT_EQ(o, s);
  r = run("data stats --quiet --input " + in + " --output " + path("no/such/folder/o.json"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("no/such/folder/o.json"), std::string::npos) << r.out;
}
}  // namespace

namespace {
TEST_F(DataCli, ShardWithTokenizerOrBytes) {
  const std::string in = fixture("spam_assassin_slice.jsonl");
  const std::string tok =
      std::string(LMFORGE_SOURCE_DIR) + "/tests/tokenizer/fixtures/mini_deepseek_pattern.tokenizer.json";
  CliRun r = run("data shard --quiet --json --eos-id 0 --input " + in + " --output " + path("s") + " --tokenizer " +
                 tok + " --report " + path("r.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["train_documents"].get<int>() + j["val_documents"].get<int>(), 200);
  EXPECT_EQ(j["bytes_per_id"], 2);
  EXPECT_TRUE(std::filesystem::exists(path("s/manifest.json")));
  EXPECT_EQ(nlohmann::json::parse(read("r.json")), j);
  // Without --eos-id the tokenizer's own end-of-text token is used.
  r = run("data shard --quiet --json --input " + in + " --output " + path("s2") + " --tokenizer " + tok);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["eos_id"], 1057);
  EXPECT_EQ(run("data shard --input " + in + " --output " + path("s3")).code, 2);  // neither --bytes nor --tokenizer
  r = run("data shard --bytes --quiet --json --input /usr/share/common-licenses/GPL-3 --output " + path("b"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_GT(nlohmann::json::parse(r.out)["train_tokens"].get<int>(), 30000);
  // --bytes reads like every stage: a bad line is named, or counted and skipped with --skip-bad.
  const auto bad = write("bad.jsonl", "{\"text\":\"one\"}\n{\"body\":\"two\"}\n{\"text\":\"three\"}\n");
  r = run("data shard --bytes --quiet --input " + bad + " --output " + path("b2"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("bad.jsonl:2: field 'text' missing"), std::string::npos) << r.out;
  r = run("data shard --bytes --quiet --json --skip-bad --input " + bad + " --output " + path("b3"));
  ASSERT_EQ(r.code, 0) << r.out;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["documents"], 2);
  EXPECT_EQ(j["read"]["dropped"]["missing_field"]["documents"], 1);
}
}  // namespace

namespace {
TEST_F(DataCli, OneConfigFileForEveryStage) {
  const auto in =
      write("in.jsonl", "{\"text\":\"<b>Write to a@b.com</b>\"}\n{\"text\":\"<b>write TO a@b.com!</b>\"}\n");
  const auto cfg =
      write("pipeline.toml", "[input]\ninput = [\"" + in + "\"]\nskip-bad = true\n\n[clean]\noutput = \"" +
                                 path("clean.jsonl") +
                                 "\"\nstrip-html = true\nmask-pii = true\n\n[dedup]\n"
                                 "method = \"exact\"\n\n[filter]\nmin-chars = 3\nblock-regex = [\"x{5}\"]\n");
  CliRun r = run("data clean --quiet --config " + cfg);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read("clean.jsonl"), "{\"text\":\"Write to <EMAIL>\"}\n{\"text\":\"write TO <EMAIL>!\"}\n");
  // A flag on the command line wins over the file.
  r = run("data clean --quiet --config " + cfg + " --output " + path("c2.jsonl") + " --text-unit line");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("data dedup --quiet --json --config " + cfg + " --input " + path("clean.jsonl") + " --output " +
          path("d.jsonl"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["dropped"]["exact_duplicate"]["documents"], 1);
  // Errors name the file, the section and the key.
  const auto bad = write("bad.toml", "[filter]\nmin-chars = \"many\"\n");
  r = run("data filter --config " + bad + " --input " + in + " --output " + path("f.jsonl"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("bad.toml: [filter] min-chars"), std::string::npos) << r.out;
  const auto unknown = write("unknown.toml", "[dedup]\nthreshhold = 0.5\n");
  r = run("data dedup --config " + unknown + " --input " + in + " --output " + path("f.jsonl"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("[dedup] threshhold: unknown key"), std::string::npos) << r.out;
  r = run("data dedup --output " + path("f.jsonl"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--input is required"), std::string::npos) << r.out;
}
}  // namespace

namespace {
TEST_F(DataCli, RunChainsTheStagesOfTheConfig) {
  const std::string tok =
      std::string(LMFORGE_SOURCE_DIR) + "/tests/tokenizer/fixtures/mini_deepseek_pattern.tokenizer.json";
  const auto cfg = write("p.toml", "[pipeline]\nstages = [\"clean\", \"dedup\", \"filter\", \"shard\"]\nwork = \"" +
                                       path("w") + "\"\n[input]\ninput = [\"" + fixture("spam_assassin_slice.jsonl") +
                                       "\"]\n[clean]\nstrip-html = true\n[filter]\nmin-chars = 100\n[shard]\n"
                                       "tokenizer = \"" +
                                       tok + "\"\n");
  CliRun r = run("data run --config " + cfg);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto dedup = nlohmann::json::parse(read("w/2-dedup.report.json"));
  const auto filter = nlohmann::json::parse(read("w/3-filter.report.json"));
  EXPECT_EQ(nlohmann::json::parse(read("w/1-clean.report.json"))["documents_in"], 200);
  EXPECT_EQ(filter["documents_in"], dedup["documents_out"]);  // each stage reads the previous one's output
  EXPECT_TRUE(std::filesystem::exists(path("w/4-shard/manifest.json")));
  const auto bad = write("bad.toml", "[pipeline]\nstages = [\"shard\", \"clean\"]\n");
  r = run("data run --config " + bad);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("must come last"), std::string::npos) << r.out;
  // A failing stage stops the run with its exit code.
  const auto fails = write("f.toml", "[pipeline]\nstages = [\"clean\", \"dedup\"]\nwork = \"" + path("w2") +
                                         "\"\n[input]\ninput = [\"" + fixture("spam_assassin_slice.jsonl") +
                                         "\"]\n[dedup]\nthreshold = 7\n");
  r = run("data run --config " + fails);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("stage dedup failed"), std::string::npos) << r.out;
  r = run("data run --processes --config " + fails);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("stage dedup failed"), std::string::npos) << r.out;
}

// The single pass and the process chain give the same documents, shards, statistics and reports (timings aside).
TEST_F(DataCli, RunInOnePassEqualsTheProcessChain) {
  const std::string tok =
      std::string(LMFORGE_SOURCE_DIR) + "/tests/tokenizer/fixtures/mini_deepseek_pattern.tokenizer.json";
  auto config = [&](const std::string& work) {
    return write(work + ".toml",
                 "[pipeline]\nstages = [\"clean\", \"dedup\", \"filter\", \"stats\", \"shard\"]\n"
                 "work = \"" +
                     path(work) + "\"\n[input]\ninput = [\"" + fixture("spam_assassin_slice.jsonl") +
                     "\"]\nskip-bad = true\n[clean]\nstrip-html = true\nmask-pii = true\n"
                     "[dedup]\nthreshold = 0.7\n[filter]\nmin-chars = 100\nquality = true\n"
                     "[stats]\ntokenizer = \"" +
                     tok + "\"\n[shard]\ntokenizer = \"" + tok + "\"\nval-fraction = 0.2\nshard-tokens = 5000\n");
  };
  CliRun one = run("data run --quiet --config " + config("one"));
  ASSERT_EQ(one.code, 0) << one.out;
  CliRun chain = run("data run --processes --config " + config("chain"));
  ASSERT_EQ(chain.code, 0) << chain.out;
  // The single pass writes no intermediate files, only the last JSONL stage's output.
  EXPECT_FALSE(std::filesystem::exists(path("one/1-clean.jsonl")));
  EXPECT_FALSE(std::filesystem::exists(path("one/2-dedup.jsonl")));
  EXPECT_TRUE(std::filesystem::exists(path("chain/2-dedup.jsonl")));
  EXPECT_EQ(read("one/3-filter.jsonl"), read("chain/3-filter.jsonl"));
  EXPECT_GT(read("one/3-filter.jsonl").size(), 10000u);
  auto untimed = [](nlohmann::json j) {
    j.erase("seconds");
    j.erase("mb_per_s");
    return j;
  };
  for (const char* rep : {"1-clean.report.json", "2-dedup.report.json", "3-filter.report.json"}) {
    const auto a = nlohmann::json::parse(read(std::string("one/") + rep));
    const auto b = nlohmann::json::parse(read(std::string("chain/") + rep));
    EXPECT_EQ(untimed(a), untimed(b)) << rep;
  }
  const auto dedup = nlohmann::json::parse(read("one/2-dedup.report.json"));
  EXPECT_GT(dedup["dropped"]["exact_duplicate"]["documents"].get<int>(), 0);
  EXPECT_GT(dedup["dropped"]["near_duplicate"]["documents"].get<int>(), 0);
  auto stats_a = nlohmann::json::parse(read("one/4-stats.json"));
  auto stats_b = nlohmann::json::parse(read("chain/4-stats.json"));
  stats_a["read"] = untimed(stats_a["read"]);
  stats_b["read"] = untimed(stats_b["read"]);
  EXPECT_EQ(stats_a, stats_b);
  auto shard_a = nlohmann::json::parse(read("one/5-shard.report.json"));
  auto shard_b = nlohmann::json::parse(read("chain/5-shard.report.json"));
  shard_a["read"] = untimed(shard_a["read"]);
  shard_b["read"] = untimed(shard_b["read"]);
  EXPECT_EQ(shard_a, shard_b);
  EXPECT_EQ(nlohmann::json::parse(read("one/5-shard/manifest.json")),
            nlohmann::json::parse(read("chain/5-shard/manifest.json")));  // same shards, sha256 and all
}
}  // namespace

namespace {
TEST_F(DataCli, ProgressOnStderrUnlessQuiet) {
  const std::string in = fixture("spam_assassin_slice.jsonl");
  ::setenv("LMFORGE_PROGRESS", "bar", 1);  // as on a terminal
  CliRun r = run("data clean --input " + in + " --output " + path("c.jsonl"));
  CliRun q = run("data clean --quiet --input " + in + " --output " + path("q.jsonl"));
  ::unsetenv("LMFORGE_PROGRESS");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\r[====================] data clean: "), std::string::npos) << r.out;  // full at the end
  EXPECT_NE(r.out.find("MB/s, 200 documents, ETA 0m00s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nclean: 200 documents"), std::string::npos) << r.out;  // the summary on its own line
  ASSERT_EQ(q.code, 0) << q.out;
  EXPECT_EQ(q.out, "");
}
}  // namespace
