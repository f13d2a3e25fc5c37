// Quantized model dirs: round trip through the files, logits against the f32 model, and bad files rejected with
// one line naming the file and the tensor or field.
#include "lmforge/quant/quantized_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "lmforge/core/error.h"
#include "lmforge/io/safetensors.h"
#include "temp_dir_test.h"

namespace lmforge::quant {
namespace {

namespace fs = std::filesystem;

model::ModelConfig tiny_config() {
  const char* j = R"({"model_type":"llama","vocab_size":300,"hidden_size":128,"intermediate_size":256,
    "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":128})";
  return model::parse_model_config(nlohmann::json::parse(j), "tiny");
}

model::CausalLM tiny_model(uint64_t seed = 1) {
  model::CausalLM m(tiny_config());
  m.init_random(seed);
  return m;
}

Tensor ids(int64_t T, int64_t V, uint32_t seed = 5) {
  std::vector<int32_t> v(static_cast<size_t>(T));
  uint32_t s = seed;
  for (auto& x : v) x = static_cast<int32_t>((s = s * 1103515245u + 12345u) >> 8) % static_cast<int32_t>(V);
  return Tensor::from_ints(v, {1, T});
}

double rel(const Tensor& a, const Tensor& b) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = double(a.data<float>()[i]) - b.data<float>()[i];
    num += d * d;
    den += double(b.data<float>()[i]) * b.data<float>()[i];
  }
  return std::sqrt(num / den);
}

using QuantDir = testing::TempDirTest;

TEST_F(QuantDir, RoundTripEveryFormat) {
  const model::CausalLM m = tiny_model();
  const Tensor x = ids(24, 300);
  const Tensor ref = m.forward(x).logits.value();
  // logits relative error bounds: lm_head is q8_0 throughout (~0.5%); 4-bit weights round by ~10% each
  const struct {
    WeightFormat f;
    double bound;
  } cases[] = {{WeightFormat::F16, 1e-2},         {WeightFormat::BF16, 2e-2}, {WeightFormat::Q8_0, 2e-2},
               {WeightFormat::INT8, 3e-2},        {WeightFormat::Q4_0, 0.25}, {WeightFormat::Q4_G128, 0.25},
               {WeightFormat::Q4_G128_ASYM, 0.25}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(weight_format_name(c.f)));
    QuantConfig qc;
    qc.format = c.f;
    qc.lm_head_format = WeightFormat::Q8_0;
    const QuantizedWeights q = quantize_rtn(m, qc);
    const std::string dir = path(std::string(weight_format_name(c.f)));
    save_quantized_model(dir, q, "");
    const QuantizedWeights back = load_quantized_model(dir);
    ASSERT_TRUE(back.quantized);
    EXPECT_EQ(back.quant.format, c.f);
    ASSERT_EQ(back.linear.size(), q.linear.size());
    for (const auto& [name, w] : q.linear) {
      const WeightMatrix& b = back.linear.at(name);
      EXPECT_EQ(b.format(), name == "lm_head.weight" ? WeightFormat::Q8_0 : c.f) << name;
      EXPECT_EQ(b.nbytes(), w.nbytes()) << name;
      EXPECT_EQ(rel(b.dequantize(), w.dequantize()), 0.0) << name;
    }
    const Tensor got = load_causal_lm_any(dir).forward(x).logits.value();
    EXPECT_LE(rel(got, ref), c.bound);
    EXPECT_GT(rel(got, ref), 0.0);  // it really is the quantized model
  }
}

// The k-quants in a model dir: q4_K and q6_K round trip byte for byte and run; llama.cpp's Q4_K_M mix
// (apply_k_mix) gives q6_K to v_proj and down_proj in the layers use_more_bits picks (8 layers: 0, 3, 6, 7) and to
// the LM head, recorded per tensor in quantization_config.tensor_formats; a k-quant over an input 256 does not divide
// (hidden 128 here) falls back to q8_0, also recorded there.
TEST_F(QuantDir, KQuantsAndTheQ4KMMix) {
  const char* j = R"({"model_type":"llama","vocab_size":300,"hidden_size":256,"intermediate_size":512,
    "num_hidden_layers":8,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":128})";
  model::CausalLM m(model::parse_model_config(nlohmann::json::parse(j), "k"));
  m.init_random(3);
  const Tensor x = ids(24, 300);
  const Tensor ref = m.forward(x).logits.value();
  double err_q4 = 0, err_q6 = 0;
  for (const char* mode : {"q4_K", "q6_K", "q4_K_M", "q5_K_M", "q4_K_S", "q5_K_S"}) {
    SCOPED_TRACE(mode);
    QuantConfig qc;
    const std::string name = mode;
    KMix mix;
    const bool is_mix = parse_k_mix(name, &mix);
    const WeightFormat base = name == "q6_K"   ? WeightFormat::Q6_K
                              : name[1] == '5' ? WeightFormat::Q5_K
                                               : WeightFormat::Q4_K;
    qc.format = base;
    qc.lm_head_format = WeightFormat::Q6_K;
    if (is_mix) apply_k_mix(qc, m.config(), mix);
    const QuantizedWeights q = quantize_rtn(m, qc);
    const std::string dir = path(name);
    save_quantized_model(dir, q, "");
    const QuantizedWeights back = load_quantized_model(dir);
    EXPECT_EQ(back.quant.tensor_formats, q.quant.tensor_formats);
    for (const auto& [n, w] : q.linear) {
      const WeightMatrix& b = back.linear.at(n);
      ASSERT_EQ(b.format(), w.format()) << n;
      ASSERT_EQ(b.codes().nbytes(), w.codes().nbytes()) << n;
      EXPECT_EQ(std::memcmp(b.codes().raw_data(), w.codes().raw_data(), w.codes().nbytes()), 0) << n;
      // llama-quantize's rules for 8 layers: _M: q6_K for v / down in layers 0, 3, 6, 7; Q4_K_S: q5_K for the first
      // four v and the first eighth's (layer 0's) down; Q5_K_S: nothing.
      const bool v = n.find(".v_proj.") != std::string::npos, down = n.find(".down_proj.") != std::string::npos;
      const int64_t layer = n.rfind("model.layers.", 0) == 0 ? std::stoll(n.substr(13)) : -1;
      WeightFormat want = base;
      if (n == "lm_head.weight") {
        want = WeightFormat::Q6_K;
      } else if (is_mix && mix.medium && (v || down) && (layer == 0 || layer == 3 || layer == 6 || layer == 7)) {
        want = WeightFormat::Q6_K;
      } else if (name == "q4_K_S" && ((v && layer < 4) || (down && layer == 0))) {
        want = WeightFormat::Q5_K;
      }
      EXPECT_EQ(b.format(), want) << n;
    }
    const double err = rel(load_causal_lm_any(dir).forward(x).logits.value(), ref);
    EXPECT_GT(err, 0.0);
    EXPECT_LE(err, 0.25);
    if (name == "q4_K") err_q4 = err;
    if (name == "q6_K") err_q6 = err;
  }
  EXPECT_LT(err_q6, err_q4 / 2);  // 6 bits against 4
  // Inputs of 128: the k-quants fall back to q8_0 for the projections that read them, per tensor.
  const model::CausalLM small = tiny_model();
  QuantConfig qc;
  qc.format = WeightFormat::Q4_K;
  qc.lm_head_format = WeightFormat::Q6_K;
  const QuantizedWeights q = quantize_rtn(small, qc);
  EXPECT_EQ(q.linear.at("model.layers.0.self_attn.q_proj.weight").format(), WeightFormat::Q8_0);
  EXPECT_EQ(q.linear.at("model.layers.0.mlp.down_proj.weight").format(), WeightFormat::Q4_K);  // input 256
  EXPECT_EQ(q.quant.tensor_formats.at("lm_head.weight"), WeightFormat::Q8_0);
  save_quantized_model(path("fallback"), q, "");
  EXPECT_EQ(load_quantized_model(path("fallback")).linear.at("model.layers.1.self_attn.o_proj.weight").format(),
            WeightFormat::Q8_0);
}

// llama-quantize's per-tensor rules (llama_tensor_get_type), case by case: 32 layers, dense and with 8 experts.
TEST(KMixRules, AsLlamaQuantizePicks) {
  const KMix q4m{WeightFormat::Q4_K, true}, q4s{WeightFormat::Q4_K, false}, q5m{WeightFormat::Q5_K, true},
      q5s{WeightFormat::Q5_K, false};
  // use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2.
  for (int64_t i : {0, 3, 6, 9, 28, 31}) EXPECT_TRUE(use_more_bits(i, 32)) << i;
  for (int64_t i : {4, 5, 7, 8, 26}) EXPECT_FALSE(use_more_bits(i, 32)) << i;
  EXPECT_EQ(k_mix_format(q4m, KRole::AttnV, 6, 32, 0), WeightFormat::Q6_K);
  EXPECT_EQ(k_mix_format(q4m, KRole::AttnV, 7, 32, 0), WeightFormat::Q4_K);
  EXPECT_EQ(k_mix_format(q5m, KRole::FfnDown, 31, 32, 0), WeightFormat::Q6_K);
  EXPECT_EQ(k_mix_format(q4s, KRole::AttnV, 3, 32, 0), WeightFormat::Q5_K);
  EXPECT_EQ(k_mix_format(q4s, KRole::AttnV, 4, 32, 0), WeightFormat::Q4_K);
  EXPECT_EQ(k_mix_format(q4s, KRole::FfnDown, 3, 32, 0), WeightFormat::Q5_K);  // 32 / 8 = 4
  EXPECT_EQ(k_mix_format(q4s, KRole::FfnDown, 4, 32, 0), WeightFormat::Q4_K);
  EXPECT_EQ(k_mix_format(q5s, KRole::FfnDown, 0, 32, 0), WeightFormat::Q5_K);
  EXPECT_EQ(k_mix_format(q4m, KRole::AttnOutput, 0, 32, 0), WeightFormat::Q4_K);
  EXPECT_EQ(k_mix_format(q4m, KRole::AttnOutput, 5, 32, 8), WeightFormat::Q5_K);  // 8 experts
  EXPECT_EQ(k_mix_format(q4s, KRole::AttnOutput, 5, 32, 8), WeightFormat::Q5_K);
  EXPECT_EQ(k_mix_format(q5m, KRole::AttnOutput, 5, 32, 8), WeightFormat::Q5_K);
  EXPECT_EQ(k_mix_format(q4m, KRole::AttnV, 0, 32, 8), WeightFormat::Q8_0);
  EXPECT_EQ(k_mix_format(q5s, KRole::AttnK, 9, 32, 8), WeightFormat::Q8_0);
  EXPECT_EQ(k_mix_format(q4m, KRole::AttnK, 9, 32, 16), WeightFormat::Q4_K);
  KMix parsed;
  EXPECT_TRUE(parse_k_mix("Q4_K_S", &parsed));
  EXPECT_EQ(k_mix_name(parsed), "q4_K_S");
  EXPECT_FALSE(parse_k_mix("q6_K_M", &parsed));
  EXPECT_FALSE(parse_k_mix("q4_K", &parsed));
}

TEST_F(QuantDir, PlainDirLoadsAsF32Linears) {
  const model::CausalLM m = tiny_model();
  m.save(path("f32"));
  const QuantizedWeights q = load_quantized_model(path("f32"));
  EXPECT_FALSE(q.quantized);
  EXPECT_EQ(q.linear.at("model.layers.0.self_attn.q_proj.weight").format(), WeightFormat::F32);
  EXPECT_TRUE(q.dense.count("model.embed_tokens.weight"));
  EXPECT_FALSE(q.linear.count("model.embed_tokens.weight"));
}

// RTN straight from the files (what `lmforge quantize` runs for the RTN types) is bit for bit quantize_rtn on the
// loaded model, for f32 and bf16 dirs, and refuses what CausalLM::load refuses.
TEST_F(QuantDir, RtnFromDirEqualsRtnOfTheLoadedModel) {
  const model::CausalLM m = tiny_model();
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string dir = path("src_" + std::string(dtype_name(dt)));
    m.save(dir, dt);
    const model::CausalLM loaded = model::CausalLM::load(dir);
    for (WeightFormat f : {WeightFormat::Q8_0, WeightFormat::Q4_G128, WeightFormat::BF16}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " -> " + std::string(weight_format_name(f)));
      QuantConfig qc;
      qc.format = f;
      size_t bytes = 0;
      const QuantizedWeights a = quantize_rtn_dir(dir, qc, &bytes), b = quantize_rtn(loaded, qc);
      size_t want = 0;
      for (const auto& [name, t] : io::load_safetensors(dir + "/model.safetensors")) want += t.nbytes();
      EXPECT_EQ(bytes, want);
      EXPECT_EQ(a.quant.not_quantized, b.quant.not_quantized);
      ASSERT_EQ(a.linear.size(), b.linear.size());
      for (const auto& [name, w] : b.linear) {
        const WeightMatrix& x = a.linear.at(name);
        ASSERT_EQ(x.format(), w.format()) << name;
        ASSERT_EQ(x.codes().nbytes(), w.codes().nbytes()) << name;
        EXPECT_EQ(std::memcmp(x.codes().raw_data(), w.codes().raw_data(), w.codes().nbytes()), 0) << name;
        if (w.scales().defined()) {
          EXPECT_EQ(std::memcmp(x.scales().raw_data(), w.scales().raw_data(), w.scales().nbytes()), 0) << name;
        }
      }
      ASSERT_EQ(a.dense.size(), b.dense.size());
      for (const auto& [name, t] : b.dense) EXPECT_EQ(rel(a.dense.at(name), t), 0.0) << name;
    }
  }
  // A tensor the config does not have, and one missing.
  io::NamedTensors t;
  for (auto& [name, v] : io::load_safetensors(path("src_f32/model.safetensors")))
    if (name != "model.norm.weight") t.emplace_back(name, v.clone());
  io::save_safetensors(path("src_f32/model.safetensors"), t);
  EXPECT_THROW(quantize_rtn_dir(path("src_f32"), QuantConfig{}), Error);
  t.emplace_back("model.norm.weight", Tensor::zeros({128}));
  t.emplace_back("model.extra.weight", Tensor::zeros({4}));
  io::save_safetensors(path("src_f32/model.safetensors"), t);
  try {
    (void)quantize_rtn_dir(path("src_f32"), QuantConfig{});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected tensor 'model.extra.weight'"), std::string::npos) << e.what();
  }
}

// A tied model's embedding is its LM head: stored in lm_head_format (codes, like a linear), loaded back as such, and
// the same numbers come out as from the f32 model with that one matrix rounded; a dir that kept it f32 still loads.
TEST_F(QuantDir, TiedEmbeddingTakesTheLmHeadFormat) {
  nlohmann::json j = nlohmann::json::parse(R"({"model_type":"llama","vocab_size":300,"hidden_size":128,
    "intermediate_size":256,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
    "max_position_embeddings":128,"tie_word_embeddings":true})");
  model::CausalLM m(model::parse_model_config(j, "tied"));
  m.init_random(3);
  m.save(path("tied"));
  QuantConfig qc;
  qc.format = WeightFormat::Q4_0;  // lm_head_format stays q8_0
  const QuantizedWeights q = quantize_rtn(m, qc);
  ASSERT_TRUE(q.linear.count("model.embed_tokens.weight"));
  EXPECT_FALSE(q.dense.count("model.embed_tokens.weight"));
  EXPECT_EQ(q.linear.at("model.embed_tokens.weight").format(), WeightFormat::Q8_0);
  const QuantizedWeights d = quantize_rtn_dir(path("tied"), qc);  // the streaming path agrees
  ASSERT_TRUE(d.linear.count("model.embed_tokens.weight"));
  const WeightMatrix& a = d.linear.at("model.embed_tokens.weight");
  const WeightMatrix& b = q.linear.at("model.embed_tokens.weight");
  ASSERT_EQ(a.codes().nbytes(), b.codes().nbytes());
  EXPECT_EQ(std::memcmp(a.codes().raw_data(), b.codes().raw_data(), b.codes().nbytes()), 0);

  save_quantized_model(path("tq"), q, "");
  const QuantizedWeights back = load_quantized_model(path("tq"));
  ASSERT_TRUE(back.linear.count("model.embed_tokens.weight"));
  EXPECT_EQ(back.linear.at("model.embed_tokens.weight").format(), WeightFormat::Q8_0);
  const Tensor x = ids(20, 300);
  const Tensor got = dequantize_to_causal_lm(back).forward(x).logits.value();
  EXPECT_EQ(rel(got, dequantize_to_causal_lm(q).forward(x).logits.value()), 0.0);
  const Tensor ref = m.forward(x).logits.value();
  EXPECT_GT(rel(got, ref), 0.0);
  EXPECT_LT(rel(got, ref), 0.25);

  // The older layout: the tied embedding f32 among the dense tensors.
  QuantizedWeights old = q;
  for (const auto& [name, t] : m.state())
    if (name == "model.embed_tokens.weight") old.dense.emplace(name, t);
  old.linear.erase("model.embed_tokens.weight");
  save_quantized_model(path("tq_old"), old, "");
  const QuantizedWeights o = load_quantized_model(path("tq_old"));
  EXPECT_TRUE(o.dense.count("model.embed_tokens.weight"));
  EXPECT_FALSE(o.linear.count("model.embed_tokens.weight"));
}

// Rewrites one tensor (or drops / adds one) in a saved quantized dir.
void edit_tensors(const std::string& dir, const std::function<void(io::NamedTensors&)>& fn) {
  const std::string p = dir + "/model.safetensors";
  io::NamedTensors t;
  for (auto& [name, v] : io::load_safetensors(p)) t.emplace_back(name, v.clone());
  fn(t);
  io::save_safetensors(p, t);
}

void expect_error(const std::string& dir, const std::string& needle1, const std::string& needle2) {
  try {
    (void)load_quantized_model(dir);
    ADD_FAILURE() << "no error; expected one naming " << needle1;
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(needle1), std::string::npos) << m;
    EXPECT_NE(m.find(needle2), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

TEST_F(QuantDir, BadFilesNameFileAndTensor) {
  const model::CausalLM m = tiny_model();
  QuantConfig qc;
  qc.format = WeightFormat::Q4_G128_ASYM;
  const QuantizedWeights q = quantize_rtn(m, qc);
  const std::string good = path("good");
  save_quantized_model(good, q, "");
  const std::string w = "model.layers.1.mlp.down_proj.weight";
  const auto fresh = [&](const std::string& name) {
    const std::string d = path(name);
    fs::copy(good, d);
    return d;
  };
  {  // scales of the wrong shape
    const std::string d = fresh("scales");
    edit_tensors(d, [&](io::NamedTensors& t) {
      for (auto& [n, v] : t)
        if (n == w + ".scales") v = Tensor::zeros({3, 2}, DType::F16);
    });
    expect_error(d, "model.safetensors", w);
  }
  {  // zero points missing
    const std::string d = fresh("zeros");
    edit_tensors(
        d, [&](io::NamedTensors& t) { std::erase_if(t, [&](const auto& p) { return p.first == w + ".zeros"; }); });
    expect_error(d, "model.safetensors", w + ".zeros");
  }
  {  // zero point out of range
    const std::string d = fresh("zerorange");
    edit_tensors(d, [&](io::NamedTensors& t) {
      for (auto& [n, v] : t)
        if (n == w + ".zeros") v.data<uint8_t>()[0] = 200;
    });
    expect_error(d, w, "zero point");
  }
  {  // codes as f32 (an unquantized tensor where the config says q4)
    const std::string d = fresh("codes");
    edit_tensors(d, [&](io::NamedTensors& t) {
      for (auto& [n, v] : t)
        if (n == w) v = Tensor::zeros({128, 256});
    });
    expect_error(d, "model.safetensors", w);
  }
  {  // a tensor the config does not know
    const std::string d = fresh("extra");
    edit_tensors(d,
                 [&](io::NamedTensors& t) { t.emplace_back("model.layers.0.mlp.extra.weight", Tensor::zeros({2})); });
    expect_error(d, "model.safetensors", "model.layers.0.mlp.extra.weight");
  }
  {  // config and tensors disagree: a bigger FFN in the config
    const std::string d = fresh("config");
    std::ifstream in(d + "/config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    j["intermediate_size"] = 384;
    std::ofstream(d + "/config.json") << j.dump();
    expect_error(d, "model.safetensors", "mlp.");
  }
  {  // quantization_config.tensor_formats: not an object, a value not a string, an unknown format
    for (const auto& [bad, needle] :
         {std::pair{nlohmann::json::array({"q4_K"}), std::string("tensor_formats is not an object")},
          std::pair{nlohmann::json{{w, 4}}, "tensor_formats." + w + " is not a string"},
          std::pair{nlohmann::json{{w, "q3_K"}}, "tensor_formats." + w + ": unknown weight format 'q3_K'"}}) {
      const std::string d = fresh("tf" + std::to_string(needle.size()));
      std::ifstream in(d + "/config.json");
      nlohmann::json j = nlohmann::json::parse(in);
      j["quantization_config"]["tensor_formats"] = bad;
      std::ofstream(d + "/config.json") << j.dump();
      expect_error(d, "config.json", needle);
    }
  }
  {  // a tensor_formats entry whose codes do not fit it: q4_K blocks expected, q4_g128 nibbles stored
    const std::string d = fresh("kcodes");
    std::ifstream in(d + "/config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    j["quantization_config"]["tensor_formats"] = {{w, "q4_K"}};
    std::ofstream(d + "/config.json") << j.dump();
    expect_error(d, "model.safetensors", w + "': q4_K codes must be u8 [128, 144]");
  }
  {  // unknown format name in quantization_config
    const std::string d = fresh("format");
    std::ifstream in(d + "/config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    j["quantization_config"]["format"] = "q3_k";
    std::ofstream(d + "/config.json") << j.dump();
    expect_error(d, "config.json", "quantization_config.format");
  }
}

}  // namespace
}  // namespace lmforge::quant
