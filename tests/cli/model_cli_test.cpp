// init-model, forward, data shard and train as a user runs them: outputs, exit codes, and clean stops on signals.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_run.h"
#include "lmforge/io/safetensors.h"
#include "temp_dir_test.h"

namespace {

namespace fs = std::filesystem;

using lmforge::testing::CliRun;
using lmforge::testing::sh;

const std::string kBin = LMFORGE_BINARY;
const char* kTiny = R"({"model_type":"llama","vocab_size":257,"hidden_size":32,"intermediate_size":64,
  "num_hidden_layers":2,"num_attention_heads":4,"max_position_embeddings":64,"initializer_range":0.02})";

class ModelCli : public lmforge::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    std::ofstream(path("tiny.json")) << kTiny;
  }
};

TEST_F(ModelCli, InitModelThenForwardWritesLogits) {
  CliRun r = sh(kBin + " init-model --config " + path("tiny.json") + " --seed 7 --out " + path("m"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(path("m/config.json")));
  std::ofstream(path("ids.txt")) << "1 2 3\n4 5";
  r = sh(kBin + " forward --model " + path("m") + " --ids-file " + path("ids.txt") + " --out " + path("l.st"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto t = lmforge::io::load_safetensors(path("l.st"));
  ASSERT_TRUE(t.count("logits"));
  EXPECT_EQ(t.at("logits").shape(), (lmforge::Shape{5, 257}));
  // Same seed, same weights: init-model is deterministic.
  sh(kBin + " init-model --config " + path("tiny.json") + " --seed 7 --out " + path("m2"));
  std::ifstream a(path("m/model.safetensors"), std::ios::binary), b(path("m2/model.safetensors"), std::ios::binary);
  EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), {}, std::istreambuf_iterator<char>(b)));
}

TEST_F(ModelCli, BadInputExitsTwoNamingTheCulprit) {
  std::ofstream(path("ids.txt")) << "1 999";
  sh(kBin + " init-model --config " + path("tiny.json") + " --out " + path("m"));
  CliRun r = sh(kBin + " forward --model " + path("m") + " --ids-file " + path("ids.txt") + " --out " + path("x"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("vocab_size"), std::string::npos) << r.out;
  // Truncated weights.
  fs::resize_file(path("m/model.safetensors"), fs::file_size(path("m/model.safetensors")) - 10);
  std::ofstream(path("ok.txt")) << "1 2";
  r = sh(kBin + " forward --model " + path("m") + " --ids-file " + path("ok.txt") + " --out " + path("x"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
  // A config whose heads do not divide the hidden size.
  std::ofstream(path("bad.json")) << R"({"model_type":"llama","vocab_size":64,"hidden_size":30,"intermediate_size":8,
    "num_hidden_layers":1,"num_attention_heads":4})";
  r = sh(kBin + " init-model --config " + path("bad.json") + " --out " + path("b"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("num_attention_heads"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(path("b/model.safetensors")));
}

TEST_F(ModelCli, SigtermSavesACheckpointAndResumeContinues) {
  CliRun r = sh(kBin + " data shard --bytes --input /usr/share/common-licenses/GPL-3 --output " + path("shards"));
  ASSERT_EQ(r.code, 0) << r.out;
  std::ofstream(path("t.toml")) << "[model]\nconfig = \"tiny.json\"\n[data]\ntrain = \"shards\"\nseq_len = 16\n"
                                   "micro_batch = 2\n[training]\nmax_steps = 1000000\nthreads = 1\n"
                                   "[checkpoint]\ndir = \"run\"\nevery = 0\n[logging]\nevery = 100\n";
  // Signal only once the run is under way (its log has the start event): a signal that arrives before the handler
  // is installed would just kill the process. The wait is bounded, and so is the run if the signal were lost.
  const std::string log = path("run/log.jsonl");
  const std::string wait_started = "for i in $(seq 600); do grep -q '\"event\":\"" + std::string("%s") + "\"' " + log +
                                   " 2>/dev/null && break; sleep 0.1; done; sleep 0.3; ";
  auto signal_when = [&](const char* event) {
    std::string w = wait_started;
    w.replace(w.find("%s"), 2, event);
    return w;
  };
  r = sh("timeout 300 " + kBin + " train --quiet --config " + path("t.toml") + " & pid=$!; " + signal_when("start") +
         "kill -TERM $pid; wait $pid");
  EXPECT_EQ(r.code, 0) << r.out;
  std::ifstream f(log);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"interrupted\""), std::string::npos) << text;
  ASSERT_TRUE(fs::exists(path("run/checkpoints")));
  EXPECT_FALSE(fs::is_empty(path("run/checkpoints")));
  // Resume (with a --set override) continues the run; a second SIGTERM stops it the same way. (SIGINT is ignored
  // by background jobs of a non-interactive shell, and the trainer leaves ignored signals alone.)
  r = sh("timeout 300 " + kBin + " train --quiet --resume --config " + path("t.toml") +
         " --set training.max_steps=100000000 & pid=$!; " + signal_when("resume") + "kill -TERM $pid; wait $pid");
  EXPECT_EQ(r.code, 0) << r.out;
  std::ifstream g(log);
  text.assign((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"resume\""), std::string::npos) << text;
}

}  // namespace
