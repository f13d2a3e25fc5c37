// lmforge quantize / prune / eval perplexity as a user runs them: outputs, files, and exit code 2 with one line for
// bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_run.h"
#include "lmforge/kernels/qgemm.h"
#include "lmforge/model/model.h"
#include "temp_dir_test.h"

namespace {

namespace fs = std::filesystem;

using lmforge::testing::CliRun;
using lmforge::testing::sh;
const std::string kBin = LMFORGE_BINARY;

class QuantCli : public lmforge::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    const char* j = R"({"model_type":"llama","vocab_size":257,"hidden_size":128,"intermediate_size":256,
      "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,"max_position_embeddings":128})";
    lmforge::model::CausalLM m(lmforge::model::parse_model_config(nlohmann::json::parse(j), "tiny"));
    m.init_random(1);
    m.save(path("f32"));
    std::ofstream(path("text.txt")) << "The quick brown fox jumps over the lazy dog. " << std::string(20, 'a')
                                    << " GNU General Public License, version 3, of the Free Software Foundation.\n";
  }
  nlohmann::json ppl(const std::string& dir, const std::string& flags = "") {
    const CliRun r = sh(kBin + " eval perplexity --model " + dir + " --data " + path("text.txt") +
                        " --ctx 64 --stride 32 --json" + flags + " 2>/dev/null");
    EXPECT_EQ(r.code, 0) << r.out;
    return nlohmann::json::parse(r.out);
  }
};

TEST_F(QuantCli, QuantizeThenEvalPerplexity) {
  const nlohmann::json base = ppl(path("f32"));
  EXPECT_GT(base["tokens"].get<int>(), 100);
  EXPECT_NEAR(base["ppl"].get<double>(), std::exp(base["nll"].get<double>()), 1e-6);
  for (const std::string type : {"q8_0", "q4_0", "q4_g128", "int8"}) {
    const CliRun q =
        sh(kBin + " quantize --model " + path("f32") + " --type " + type + " --out " + path(type) + " --json");
    ASSERT_EQ(q.code, 0) << q.out;
    const nlohmann::json cfg = nlohmann::json::parse(std::ifstream(path(type) + "/config.json"));
    EXPECT_EQ(cfg["quantization_config"]["format"], type);
    EXPECT_EQ(cfg["quantization_config"]["lm_head_format"], "q8_0");
    const nlohmann::json r = ppl(path(type));
    EXPECT_EQ(r["tokens"], base["tokens"]);
    EXPECT_NE(r["nll"].get<double>(), base["nll"].get<double>());
    EXPECT_NEAR(r["nll"].get<double>(), base["nll"].get<double>(), 0.1);  // random weights: near-uniform output
  }
  // The k-quants: the LM head q6_K by default (llama.cpp's), q4_K_M's mix per tensor; inputs of 128 (all but
  // down_proj here) fall back to q8_0, recorded per tensor.
  for (const std::string type : {"q4_K", "q6_K", "q4_K_M", "Q4_K_S"}) {
    const CliRun q =
        sh(kBin + " quantize --model " + path("f32") + " --type " + type + " --out " + path(type) + " --json");
    ASSERT_EQ(q.code, 0) << q.out;
    const nlohmann::json qc = nlohmann::json::parse(std::ifstream(path(type) + "/config.json"))["quantization_config"];
    EXPECT_EQ(qc["format"], type == "q6_K" ? "q6_K" : "q4_K");
    EXPECT_EQ(qc["lm_head_format"], "q6_K");
    EXPECT_EQ(qc["tensor_formats"]["model.layers.0.self_attn.q_proj.weight"], "q8_0");
    EXPECT_FALSE(qc["tensor_formats"].contains("model.layers.0.mlp.down_proj.weight") && type != "q4_K_M");
    if (type == "q4_K_M") {  // 2 layers: use_more_bits picks layer 1 (the last eighth)
      EXPECT_EQ(qc["tensor_formats"]["model.layers.1.mlp.down_proj.weight"], "q6_K");
      EXPECT_EQ(qc["details"]["mix"], "q4_K_M");
    }
    if (type == "Q4_K_S") {  // the first four v_proj at q5_K (inputs of 128 here: q8_0 wins); no down_proj override
      EXPECT_EQ(qc["details"]["mix"], "q4_K_S");
      EXPECT_EQ(qc["tensor_formats"]["model.layers.1.self_attn.v_proj.weight"], "q8_0");
      EXPECT_FALSE(qc["tensor_formats"].contains("model.layers.1.mlp.down_proj.weight"));
    }
    const nlohmann::json r = ppl(path(type));
    EXPECT_EQ(r["tokens"], base["tokens"]);
    EXPECT_NEAR(r["nll"].get<double>(), base["nll"].get<double>(), 0.1);
  }
  const CliRun g = sh(kBin + " quantize --model " + path("f32") + " --type gptq-q4 --calib " + path("text.txt") +
                      " --calib-tokens 200 --calib-ctx 64 --out " + path("gptq"));
  ASSERT_EQ(g.code, 0) << g.out;
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(path("gptq") + "/config.json"))["quantization_config"]["method"],
            "gptq");
  (void)ppl(path("gptq"));
}

// The default runs the windows on the inference engine, the weights as stored; --reference on the f32 model (a
// quantized dir dequantized). The same tokens and, at f32 and for the 64-token windows (the engine's products take
// the dequantized-sgemm path from 64 rows), the same perplexity within summation order; the f16 KV cache moves it a
// little.
TEST_F(QuantCli, EvalPerplexityOnTheEngine) {
  ASSERT_EQ(sh(kBin + " quantize --model " + path("f32") + " --type q8_0 --out " + path("q8")).code, 0);
  ASSERT_EQ(sh(kBin + " quantize --model " + path("f32") + " --type bf16 --out " + path("bf16")).code, 0);
  ASSERT_EQ(sh(kBin + " quantize --model " + path("f32") + " --type q4_g128 --out " + path("g128")).code, 0);
  for (const std::string dir : {"f32", "q8", "bf16", "g128"}) {
    SCOPED_TRACE(dir);
    const nlohmann::json ref = ppl(path(dir), " --reference"), eng = ppl(path(dir));
    EXPECT_EQ(ref["engine"], false);
    EXPECT_EQ(eng["engine"], true);
    EXPECT_EQ(ppl(path(dir), " --engine")["nll"], eng["nll"]);
    EXPECT_EQ(eng["tokens"], ref["tokens"]);
    EXPECT_EQ(eng["windows"], ref["windows"]);
    // Where the CPU has AVX-512 VNNI the engine's q8_0 and q4_g128 prefill dots 8-bit activations as its decode
    // does (the reference keeps them f32): 1.85e-5 (q8_0) and 2.4e-5 (q4_g128) relative on a Zen 4 host.
    const bool int8_prefill =
        (dir == "q8" || dir == "g128") && lmforge::kernels::cpu::qgemm_available(lmforge::kernels::cpu::QImpl::Vnni);
    EXPECT_NEAR(eng["nll"].get<double>(), ref["nll"].get<double>(),
                (int8_prefill ? 1e-4 : 1e-5) * ref["nll"].get<double>());
    const nlohmann::json half = ppl(path(dir), " --engine --kv-type f16");
    EXPECT_NEAR(half["nll"].get<double>(), ref["nll"].get<double>(), 1e-3 * ref["nll"].get<double>());
  }
}

// A quantized dir as a source: quantize refuses it unless --allow-requantize (then dequantizes it first and says so);
// prune (and training, through CausalLM::load) refuse it naming config.json; export onnx writes its dequantized
// weights.
TEST_F(QuantCli, QuantizedDirAsASource) {
  ASSERT_EQ(sh(kBin + " quantize --model " + path("f32") + " --type q4_0 --out " + path("q4")).code, 0);
  CliRun r = sh(kBin + " quantize --model " + path("q4") + " --type q8_0 --out " + path("q8"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--allow-requantize"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(path("q8")));
  r = sh(kBin + " quantize --model " + path("q4") + " --type q8_0 --out " + path("q8") +
         " --allow-requantize --json 2>/dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["requantized_from"], "q4_0");
  const nlohmann::json cfg = nlohmann::json::parse(std::ifstream(path("q8") + "/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["format"], "q8_0");
  EXPECT_EQ(cfg["quantization_config"]["details"]["requantized_from"], "q4_0");
  // q8_0 of the q4_0 values is close to them: the second rounding adds little to the first.
  EXPECT_NEAR(ppl(path("q8"))["nll"].get<double>(), ppl(path("q4"))["nll"].get<double>(), 0.02);

  r = sh(kBin + " prune --model " + path("q4") + " --ratio 0.25 --out " + path("pruned"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("config.json: a quantized model dir (format q4_0)"), std::string::npos) << r.out;
  EXPECT_LE(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;

  r = sh(kBin + " export onnx --model " + path("q4") + " --out " + path("q4.onnx") + " --json 2>/dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["dequantized"], true);
  EXPECT_GT(fs::file_size(path("q4.onnx")), 0u);
}

TEST_F(QuantCli, PruneWritesTrainableModel) {
  const CliRun r = sh(kBin + " prune --model " + path("f32") + " --ratio 0.25 --out " + path("pruned") + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json cfg = nlohmann::json::parse(std::ifstream(path("pruned") + "/config.json"));
  EXPECT_EQ(cfg["intermediate_size"], 192);
  EXPECT_EQ(lmforge::model::CausalLM::load(path("pruned")).config().intermediate_size, 192);
  (void)ppl(path("pruned"));
}

// `lmforge imatrix` writes llama.cpp's files (GGUF, .dat by name); quantize --imatrix and --calib (which computes one)
// round q4_0 with it: the same codes from the file and from --calib, other codes than without, recorded in the config.
TEST_F(QuantCli, ImatrixThenQuantize) {
  const std::string calib = " --calib " + path("text.txt") + " --calib-tokens 100 --calib-ctx 64";
  const CliRun im =
      sh(kBin + " imatrix --model " + path("f32") + calib + " --out " + path("im.gguf") + " --json 2>/dev/null");
  ASSERT_EQ(im.code, 0) << im.out;
  const nlohmann::json j = nlohmann::json::parse(im.out);
  EXPECT_EQ(j["entries"], 14);  // 7 linears x 2 layers; lm_head only with --process-output
  EXPECT_EQ(j["format"], "gguf");
  ASSERT_EQ(sh(kBin + " imatrix --model " + path("f32") + calib + " --out " + path("im.dat") + " 2>/dev/null").code, 0);
  std::ifstream dat(path("im.dat"), std::ios::binary);
  char magic[4] = {};
  dat.read(magic, 4);
  EXPECT_NE(std::string(magic, 4), "GGUF");
  const auto quantize = [&](const std::string& out, const std::string& flags) {
    const CliRun r = sh(kBin + " quantize --model " + path("f32") + " --type q4_0 --out " + path(out) + flags +
                        " --json 2>/dev/null");
    EXPECT_EQ(r.code, 0) << r.out;
    return nlohmann::json::parse(r.out);
  };
  EXPECT_EQ(quantize("plain", "")["imatrix_tensors"], 0);
  EXPECT_EQ(quantize("file", " --imatrix " + path("im.gguf"))["imatrix_tensors"], 14);
  EXPECT_EQ(quantize("calib", calib)["imatrix_tensors"], 14);
  const auto bytes = [&](const std::string& dir) {
    std::ifstream in(path(dir) + "/model.safetensors", std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  EXPECT_EQ(bytes("file"), bytes("calib"));
  EXPECT_NE(bytes("file"), bytes("plain"));
  std::ifstream cfg(path("file") + "/config.json");
  EXPECT_EQ(nlohmann::json::parse(cfg)["quantization_config"]["details"]["imatrix"], path("im.gguf"));
  EXPECT_GT(ppl(path("file"))["ppl"].get<double>(), 1.0);  // loads and runs
}

TEST_F(QuantCli, BadInputExitsTwoWithOneLine) {
  const auto expect2 = [](const CliRun& r, const std::string& needle) {
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << r.out;
    EXPECT_LE(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  };
  const std::string q = kBin + " quantize --model " + path("f32") + " --out " + path("o");
  expect2(sh(q + " --type q3_k"), "--type");
  expect2(sh(q + " --type gptq-q4"), "--calib");
  expect2(sh(q + " --type q4_g128 --group-size 64"), "--group-size");
  expect2(sh(q + " --type q4_0 --lm-head q9"), "--lm-head");
  expect2(sh(kBin + " quantize --model " + path("nope") + " --type q8_0 --out " + path("o")), "nope");
  expect2(sh(kBin + " prune --model " + path("f32") + " --ratio 1.5 --out " + path("o")), "--ratio");
  expect2(sh(q + " --type q4_0 --imatrix " + path("none.dat")), "none.dat");
  std::ofstream(path("bad.dat"), std::ios::binary) << std::string("\x02\0\0\0\x05\0\0\0abc", 11);
  expect2(sh(q + " --type q4_K_M --imatrix " + path("bad.dat")), "bad.dat");
  expect2(sh(q + " --type gptq-q4 --calib " + path("text.txt") + " --imatrix " + path("bad.dat")), "--imatrix");
  expect2(sh(q + " --type q4_0 --calib " + path("text.txt") + " --imatrix " + path("bad.dat")), "not both");
  expect2(sh(kBin + " imatrix --model " + path("f32") + " --calib " + path("missing.txt") + " --out " + path("i.gguf")),
          "missing.txt");
  const std::string e = kBin + " eval perplexity --model " + path("f32");  // --ctx default 512 > 128: set it
  expect2(sh(e + " --ctx 64 --data " + path("missing.txt")), "missing.txt");
  expect2(sh(e + " --data " + path("text.txt") + " --ctx 4096"), "--ctx");
  expect2(sh(e + " --data " + path("text.txt") + " --ctx 16 --stride 32"), "--stride");
  expect2(sh(e + " --data " + path("text.txt") + " --ctx 16 --reference --kv-type f16"), "--kv-type");
  const CliRun both = sh(e + " --data " + path("text.txt") + " --ctx 16 --reference --engine");
  EXPECT_EQ(both.code, 2);  // CLI11's own message, then its "Run with --help" line
  EXPECT_NE(both.out.find("--engine excludes --reference"), std::string::npos) << both.out;
  // a quantized dir whose scales were damaged
  ASSERT_EQ(sh(kBin + " quantize --model " + path("f32") + " --type q4_g128 --out " + path("q4")).code, 0);
  fs::resize_file(path("q4") + "/model.safetensors", fs::file_size(path("q4") + "/model.safetensors") / 2);
  expect2(sh(kBin + " eval perplexity --model " + path("q4") + " --data " + path("text.txt") + " --ctx 64"),
          "model.safetensors");
}

}  // namespace
