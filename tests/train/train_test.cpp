// The trainer: config validation, the schedule, token shards, exact resume, the non-finite guard and damaged
// checkpoints. Tiny models and byte-level shards of real text keep each run well under a second.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/model/model.h"
#include "lmforge/train/config.h"
#include "lmforge/train/dataset.h"
#include "lmforge/train/trainer.h"
#include "temp_dir_test.h"

namespace lmforge::train {
namespace {

namespace fs = std::filesystem;

const char* kTinyLlama = R"({"model_type":"llama","vocab_size":257,"hidden_size":32,"intermediate_size":64,
  "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":64,
  "rms_norm_eps":1e-5,"initializer_range":0.02,"layer_types":["sliding_attention","full_attention"],
  "sliding_window":8})";
const char* kTinyMoe = R"({"model_type":"deepseek_v3","vocab_size":257,"hidden_size":32,"intermediate_size":64,
  "num_hidden_layers":2,"num_attention_heads":4,"q_lora_rank":null,"kv_lora_rank":16,"qk_nope_head_dim":8,
  "qk_rope_head_dim":4,"v_head_dim":8,"moe_intermediate_size":16,"first_k_dense_replace":1,"n_shared_experts":1,
  "n_routed_experts":4,"num_experts_per_tok":2,"scoring_func":"sigmoid","topk_method":"noaux_tc","n_group":1,
  "topk_group":1,"norm_topk_prob":true,"routed_scaling_factor":1.0,"moe_bias_update_speed":0.001,
  "aux_loss_alpha":0.001,"moe_capacity_factor":1.2,"moe_router_noise_std":0.1,"initializer_range":0.02})";

class TrainTest : public lmforge::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    data::ByteShardOptions o;
    o.shard_tokens = 9000;  // several shards: reads cross shard boundaries
    data::write_byte_shards({"/usr/share/common-licenses/GPL-3"}, path("shards"), o);
  }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(path(name)) << text;
    return path(name);
  }
  TrainConfig config(const char* model_json, const std::string& run, const std::string& extra = "") {
    write("model.json", model_json);
    std::string t =
        "[model]\nconfig = \"model.json\"\nseed = 3\n[data]\ntrain = \"shards\"\nseq_len = 16\n"
        "micro_batch = 2\n[optimizer]\nlr = 3e-3\n[schedule]\nwarmup_steps = 2\n[training]\n"
        "max_steps = 12\nglobal_batch = 4\nthreads = 1\n[checkpoint]\ndir = \"" +
        run + "\"\nevery = 4\nkeep_last = 2\n[logging]\nevery = 1\nval_every = 6\nval_batches = 2\n" + extra;
    return load_train_config(write(run + ".toml", t));
  }
  std::vector<std::pair<int64_t, double>> losses(const std::string& run) {
    std::ifstream f(path(run) + "/log.jsonl");
    std::vector<std::pair<int64_t, double>> out;
    std::string line;
    while (std::getline(f, line)) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss") && !j.contains("event"))
        out.emplace_back(j["step"].get<int64_t>(), j["loss"].get<double>());
    }
    return out;
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(TrainTest, BadConfigsNameTheKey) {
  write("m.json", kTinyLlama);
  const std::string base = "[model]\nconfig = \"m.json\"\n[data]\ntrain = \"shards\"\n[checkpoint]\ndir = \"r\"\n";
  struct Case {
    std::string extra, needle;
  };
  for (const Case& c : std::vector<Case>{
           {"[training]\nmax_stepz = 3\n", "max_stepz: unknown key"},
           {"[training]\nmax_steps = \"3\"\n", "max_steps: must be an integer"},
           {"[optimizer]\nlr = -1.0\n", "lr:"},
           {"[training]\nglobal_batch = 12\n", "global_batch"},  // micro_batch 8 does not divide 12
           {"[training]\nprecision = \"fp8\"\n", "precision"},
           {"[training]\nloss_scale_growth_interval = 0\n", "loss_scale_growth_interval"},
           {"[bogus]\nx = 1\n", "unknown section [bogus]"},
           {"[schedule]\nwarmup_steps = 5000\n", "warmup_steps"},
       }) {
    const std::string msg = error_of([&] { parse_train_config(base + c.extra, "t.toml", dir_.string()); });
    EXPECT_NE(msg.find(c.needle), std::string::npos) << c.extra << " -> " << msg;
    EXPECT_NE(msg.find("t.toml"), std::string::npos) << msg;
  }
  EXPECT_NE(error_of([&] { parse_train_config("[model]\nconfig = ", "t.toml", "."); }).find("t.toml:2"),
            std::string::npos);
}

TEST_F(TrainTest, CosineScheduleWithWarmupAndFloor) {
  TrainConfig c = config(kTinyLlama, "run");
  c.lr = 1.0;
  c.warmup_steps = 4;
  c.max_steps = 14;
  c.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(c.lr_at(0), 0.25);
  EXPECT_DOUBLE_EQ(c.lr_at(3), 1.0);
  EXPECT_NEAR(c.lr_at(4), 1.0, 1e-12);
  EXPECT_NEAR(c.lr_at(9), 0.1 + 0.9 * 0.5, 1e-12);  // halfway through the decay
  EXPECT_NEAR(c.lr_at(14), 0.1, 1e-12);
  EXPECT_NEAR(c.lr_at(100), 0.1, 1e-12);
}

TEST_F(TrainTest, ShardsRoundTripAndDamageIsNamed) {
  const std::vector<uint32_t> ids = {1, 2, 65535, 7};
  data::write_shard(path("a.bin"), ids);
  data::ShardReader r(path("a.bin"));
  ASSERT_EQ(r.size(), 4);
  EXPECT_EQ(r.width(), 2);
  EXPECT_EQ(r.at(2), 65535u);
  data::write_shard(path("b.bin"), {70000, 1});
  EXPECT_EQ(data::ShardReader(path("b.bin")).width(), 4);
  EXPECT_EQ(data::ShardReader(path("b.bin")).at(0), 70000u);
  fs::resize_file(path("a.bin"), fs::file_size(path("a.bin")) - 1);
  EXPECT_NE(error_of([&] { data::ShardReader x(path("a.bin")); }).find("count"), std::string::npos);
  // The manifest names a missing shard.
  fs::remove(path("shards") + "/train-00001.bin");
  const std::string msg = error_of([&] { data::load_manifest(path("shards")); });
  EXPECT_NE(msg.find("missing shard train-00001.bin"), std::string::npos) << msg;
}

TEST_F(TrainTest, JsonlDocumentsSplitByHashAndBadLinesAreNamed) {
  {
    std::ofstream f(path("docs.jsonl"));
    for (int i = 0; i < 200; ++i)
      f << nlohmann::json({{"text", "document number " + std::to_string(i)}}).dump() << "\n";
  }
  data::ByteShardOptions o;
  o.val_fraction = 0.1;
  data::ByteShardReport r = data::write_byte_shards({path("docs.jsonl")}, path("j"), o);
  EXPECT_EQ(r.documents, 200);
  data::Manifest m = data::load_manifest(path("j"), true);
  ASSERT_EQ(m.val.size(), 1u);
  EXPECT_GT(m.val[0].documents, 5);  // about 20 of 200
  EXPECT_LT(m.val[0].documents, 40);
  EXPECT_EQ(m.train[0].documents + m.val[0].documents, 200);
  // Every document ends with EOS: count them in the train shard.
  data::ShardReader tr(path("j/") + m.train[0].file);
  int64_t eos = 0;
  for (int64_t i = 0; i < tr.size(); ++i) eos += tr.at(i) == data::kByteEos;
  EXPECT_EQ(eos, m.train[0].documents);
  std::ofstream(path("bad.jsonl")) << "{\"text\": \"ok\"}\n{\"txt\": 1}\n";
  const std::string msg = error_of([&] { data::write_byte_shards({path("bad.jsonl")}, path("k"), o); });
  EXPECT_NE(msg.find("bad.jsonl:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'text'"), std::string::npos) << msg;
}

TEST_F(TrainTest, DatasetIsDeterministicAndCoversEveryWindowPerEpoch) {
  Dataset d(path("shards"), 16, 5, 257);
  const int64_t W = d.windows_per_epoch();
  int64_t pos = 0;
  std::set<std::vector<int32_t>> seen;
  for (int64_t i = 0; i < W; ++i) {
    Batch b = d.next(1, pos);
    const int32_t* p = b.inputs.data<int32_t>();
    seen.insert(std::vector<int32_t>(p, p + 16));
    // targets are the inputs shifted by one
    EXPECT_EQ(b.inputs.data<int32_t>()[1], b.targets.data<int32_t>()[0]);
  }
  EXPECT_GT(static_cast<int64_t>(seen.size()), W * 9 / 10);  // windows are distinct (text rarely repeats 16 bytes)
  Dataset d2(path("shards"), 16, 5, 257);
  int64_t p1 = 37, p2 = 37;
  EXPECT_EQ(d.next(3, p1).inputs.to_double_vector(), d2.next(3, p2).inputs.to_double_vector());
  EXPECT_TRUE(d.has_validation());
}

TEST_F(TrainTest, LossFallsAndResumeReproducesTheUninterruptedRun) {
  for (const char* model : {kTinyLlama, kTinyMoe}) {
    SCOPED_TRACE(model == kTinyLlama ? "llama" : "moe");
    fs::remove_all(path("a"));
    fs::remove_all(path("b"));
    RunOptions quiet;
    quiet.quiet = true;
    RunResult a = run_training(config(model, "a"), quiet);
    EXPECT_EQ(a.steps_done, 12);
    RunOptions stop = quiet;
    stop.stop_at = 5;
    RunResult b1 = run_training(config(model, "b"), stop);
    EXPECT_TRUE(b1.interrupted);
    EXPECT_EQ(b1.steps_done, 5);
    RunOptions resume = quiet;
    resume.resume = true;
    RunResult b2 = run_training(config(model, "b"), resume);
    EXPECT_EQ(b2.steps_done, 12);
    auto la = losses("a"), lb = losses("b");
    ASSERT_EQ(la.size(), 12u);
    EXPECT_EQ(la, lb);  // bit for bit
    EXPECT_LT(la.back().second, la.front().second - 0.5);
    EXPECT_TRUE(fs::exists(path("a") + "/final/model.safetensors"));
    std::ifstream rep(path("a") + "/report.html");
    std::string html((std::istreambuf_iterator<char>(rep)), std::istreambuf_iterator<char>());
    EXPECT_NE(html.find("<svg"), std::string::npos);
    EXPECT_NE(html.find("validation loss"), std::string::npos);
    // keep_last = 2: steps 8 and 12 remain.
    int n = 0;
    for (const auto& e : fs::directory_iterator(path("a") + "/checkpoints"))
      n += e.path().filename().string()[0] != '.';
    EXPECT_EQ(n, 2);
    // The final model loads and is a valid model directory.
    model::CausalLM m = model::CausalLM::load(path("a") + "/final");
    EXPECT_GT(m.num_parameters(), 0);
  }
}

TEST_F(TrainTest, FreshRunRefusesToOverwriteAndResumeNeedsACheckpoint) {
  RunOptions o;
  o.quiet = true;
  o.resume = true;
  EXPECT_NE(error_of([&] { run_training(config(kTinyLlama, "r"), o); }).find("no checkpoint"), std::string::npos);
  o.resume = false;
  o.stop_at = 4;
  run_training(config(kTinyLlama, "r"), o);
  EXPECT_NE(error_of([&] { run_training(config(kTinyLlama, "r"), o); }).find("--resume"), std::string::npos);
}

TEST_F(TrainTest, CorruptCheckpointIsNamedAndLeftAlone) {
  RunOptions o;
  o.quiet = true;
  o.stop_at = 4;
  run_training(config(kTinyLlama, "r"), o);
  const std::string ck = path("r") + "/checkpoints/step-00000004/model.safetensors";
  ASSERT_TRUE(fs::exists(ck));
  {
    std::fstream f(ck, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  const auto size = fs::file_size(ck);
  const auto mtime = fs::last_write_time(ck);
  o.resume = true;
  o.stop_at = 0;
  const std::string msg = error_of([&] { run_training(config(kTinyLlama, "r"), o); });
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("sha256"), std::string::npos) << msg;
  EXPECT_EQ(fs::file_size(ck), size);
  EXPECT_EQ(fs::last_write_time(ck), mtime);
}

// A hostile fp16 loss scale in trainer.json (negative, or not finite) is refused on --resume, naming the field.
TEST_F(TrainTest, CheckpointWithABadLossScaleIsRefused) {
  RunOptions o;
  o.quiet = true;
  o.stop_at = 4;
  TrainConfig c = config(kTinyLlama, "ls_bad");
  c.precision = "fp16";
  run_training(c, o);
  const std::string tj = path("ls_bad") + "/checkpoints/step-00000004/trainer.json";
  ASSERT_TRUE(fs::exists(tj));
  std::ifstream in(tj);
  nlohmann::json j = nlohmann::json::parse(in);
  in.close();
  j["loss_scale"] = -8.0;
  std::ofstream(tj) << j.dump();
  o.resume = true;
  o.stop_at = 0;
  const std::string msg = error_of([&] { run_training(c, o); });
  EXPECT_NE(msg.find("loss_scale"), std::string::npos) << msg;
  EXPECT_NE(msg.find("trainer.json"), std::string::npos) << msg;
}

// bf16 and fp16 mixed precision: the loss falls about as far as in f32, and --resume is still bit-exact (the fp16
// loss scale and its good-step counter are part of the checkpoint).
TEST_F(TrainTest, MixedPrecisionTrainsAndResumesExactly) {
  RunOptions quiet;
  quiet.quiet = true;
  fs::remove_all(path("f32"));
  run_training(config(kTinyLlama, "f32"), quiet);
  const double f32_last = losses("f32").back().second;
  for (const char* prec : {"bf16", "fp16"}) {
    SCOPED_TRACE(prec);
    const std::string a = std::string(prec) + "a", b = std::string(prec) + "b";
    auto cfg = [&](const std::string& run) {
      TrainConfig c = config(kTinyLlama, run);
      c.precision = prec;
      c.loss_scale_growth_interval = 3;
      return c;
    };
    run_training(cfg(a), quiet);
    RunOptions stop = quiet;
    stop.stop_at = 5;
    run_training(cfg(b), stop);
    RunOptions resume = quiet;
    resume.resume = true;
    run_training(cfg(b), resume);
    auto la = losses(a), lb = losses(b);
    // fp16 may skip a step or two while the loss scale backs off from its initial 65536.
    ASSERT_GE(la.size(), 10u);
    EXPECT_EQ(la, lb);
    EXPECT_LT(la.back().second, la.front().second - 0.5);
    EXPECT_NEAR(la.back().second, f32_last, 0.05 * f32_last);  // tiny model, 12 steps: within 5% of f32
  }
}

// fp16: a loss scale far too large overflows; each overflow skips the step and halves the scale (logged), and
// none of it counts towards the non-finite guard, so training goes on and the loss falls.
TEST_F(TrainTest, Fp16LossScaleBacksOffOnOverflow) {
  TrainConfig c = config(kTinyLlama, "ls");
  c.precision = "fp16";
  c.loss_scale = 1e12;
  c.max_nonfinite_steps = 2;
  c.max_steps = 30;
  c.warmup_steps = 0;
  RunOptions quiet;
  quiet.quiet = true;
  RunResult r = run_training(c, quiet);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.steps_done, 30);
  std::ifstream f(path("ls") + "/log.jsonl");
  int overflows = 0;
  double last_scale = 0;
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.value("event", "") == "overflow") {
      ++overflows;
      last_scale = j["loss_scale"].get<double>();
    }
  }
  EXPECT_GE(overflows, 3);  // 1e12 * 2^-k: several halvings before the gradients fit in f16
  EXPECT_LT(last_scale, 1e12 / 4);
  auto l = losses("ls");
  ASSERT_FALSE(l.empty());
  EXPECT_LT(l.back().second, l.front().second);
}

TEST_F(TrainTest, NonFiniteStepsAreSkippedThenTheRunStops) {
  // A model whose weights hold a NaN: every step is non-finite; after max_nonfinite_steps the run stops with
  // exit code 1 and writes no checkpoint.
  write("m.json", kTinyLlama);
  model::CausalLM m(model::load_model_config(path("m.json")));
  m.init_random(1);
  m.parameters()[1].value().data<float>()[5] = NAN;  // layer 0 input norm: every token
  m.save(path("nanmodel"));
  write("n.toml",
        "[model]\ninit_from = \"nanmodel\"\n[data]\ntrain = \"shards\"\nseq_len = 16\nmicro_batch = 2\n"
        "[training]\nmax_steps = 20\nthreads = 1\nmax_nonfinite_steps = 3\n[checkpoint]\ndir = \"n\"\n"
        "every = 1\n[logging]\nevery = 1\n");
  RunOptions o;
  o.quiet = true;
  RunResult r = run_training(load_train_config(path("n.toml")), o);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(fs::exists(path("n") + "/checkpoints"));
  std::ifstream f(path("n") + "/log.jsonl");
  std::string log((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("\"nonfinite\""), std::string::npos);
  EXPECT_NE(log.find("\"stopped\""), std::string::npos);
}

}  // namespace
}  // namespace lmforge::train
