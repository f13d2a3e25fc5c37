// GPTQ against the PyTorch reference (tests/reference/gen_gptq.py), AWQ and pruning on a tiny model, and the
// sliding-window perplexity against a hand computation with forward + the loss.
#include "lmforge/quant/methods.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "lmforge/core/half.h"
#include "lmforge/core/ops.h"
#include "lmforge/io/safetensors.h"
#include "quant/calib_runner.h"
#include "quant/lm_perplexity.h"
#include "temp_dir_test.h"

namespace lmforge::quant {
namespace {

const std::string kFixture = LMFORGE_SOURCE_DIR "/tests/reference/fixtures/gptq.safetensors";

// tr((Q - W) H (Q - W)ᵀ)
double proxy_loss(const Tensor& Q, const Tensor& W, const std::vector<double>& H) {
  const int64_t rows = W.size(0), cols = W.size(1);
  double total = 0;
  std::vector<double> d(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) d[c] = double(Q.data<float>()[r * cols + c]) - W.data<float>()[r * cols + c];
    for (int64_t i = 0; i < cols; ++i) {
      double s = 0;
      for (int64_t j = 0; j < cols; ++j) s += H[i * cols + j] * d[j];
      total += d[i] * s;
    }
  }
  return total;
}

// Same weight and Hessian -> the same codes and scales as the reference (a handful of codes may flip where float64
// rounding differs at a .5 tie after thousands of updates: at most 0.5%), and the same layer-output error within
// 1%, well below round-to-nearest's.
TEST(Gptq, MatchesPyTorchReference) {
  const auto f = io::load_safetensors(kFixture);
  const Tensor W = f.at("W").contiguous();
  const Tensor Ht = f.at("H").contiguous();
  const int64_t rows = W.size(0), cols = W.size(1);
  std::vector<double> H(Ht.data<double>(), Ht.data<double>() + cols * cols);
  const double rtn = f.at("rtn.loss").data<double>()[0];
  for (const auto& [name, fmt, act] :
       {std::tuple{"sym", WeightFormat::Q4_G128, false}, std::tuple{"asym", WeightFormat::Q4_G128_ASYM, false},
        std::tuple{"sym_actorder", WeightFormat::Q4_G128, true}}) {
    SCOPED_TRACE(name);
    GptqOptions o;
    o.act_order = act;
    const WeightMatrix q = gptq_quantize(W.data<float>(), rows, cols, H, fmt, o);
    const std::string p = name;
    const Tensor codes = f.at(p + ".q").contiguous(), scales = f.at(p + ".scale").contiguous(),
                 zeros = f.at(p + ".zero").contiguous();
    int64_t same = 0;
    const uint8_t* c = q.codes().data<uint8_t>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < cols; ++k) {
        const int64_t g = k / 128, j = k % 128;
        const uint8_t byte = c[r * cols / 2 + g * 64 + (j % 64)];
        const int code = j < 64 ? byte & 0x0f : byte >> 4;
        same += code == codes.data<int32_t>()[r * cols + k];
      }
    EXPECT_GE(double(same) / double(rows * cols), 0.995);
    for (int64_t i = 0; i < scales.numel(); ++i) {
      EXPECT_EQ(f16_to_f32(static_cast<const uint16_t*>(q.scales().raw_data())[i]), scales.data<float>()[i]);
      if (fmt == WeightFormat::Q4_G128_ASYM) {
        EXPECT_EQ(int(q.zeros().data<uint8_t>()[i]), zeros.data<int32_t>()[i]);
      }
    }
    const double ours = proxy_loss(q.dequantize(), W, H), ref = f.at(p + ".loss").data<double>()[0];
    EXPECT_NEAR(ours, ref, 0.01 * ref);
    EXPECT_LT(ours, 0.7 * rtn);
  }
}

model::CausalLM tiny_model() {
  const char* j = R"({"model_type":"llama","vocab_size":300,"hidden_size":128,"intermediate_size":256,
    "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,"max_position_embeddings":128})";
  model::CausalLM m(model::parse_model_config(nlohmann::json::parse(j), "tiny"));
  m.init_random(3);
  return m;
}

std::vector<int32_t> token_ids(int64_t n, int64_t V, uint32_t seed) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  uint32_t s = seed;
  for (auto& x : v) x = static_cast<int32_t>((s = s * 1103515245u + 12345u) >> 8) % static_cast<int32_t>(V);
  return v;
}

std::vector<Tensor> calib_set() {
  std::vector<Tensor> c;
  for (uint32_t s = 0; s < 16; ++s) c.push_back(Tensor::from_ints(token_ids(64, 300, 11 + s), {1, 64}));
  return c;
}

double logits_error(const model::CausalLM& a, const model::CausalLM& b, const Tensor& x) {
  const Tensor la = a.forward(x).logits.value(), lb = b.forward(x).logits.value();
  double num = 0, den = 0;
  for (int64_t i = 0; i < la.numel(); ++i) {
    const double d = double(la.data<float>()[i]) - lb.data<float>()[i];
    num += d * d;
    den += double(lb.data<float>()[i]) * lb.data<float>()[i];
  }
  return std::sqrt(num / den);
}

// GPTQ and AWQ on a whole model: their 4-bit models stay closer to the f32 logits than round-to-nearest does on
// held-out tokens. A few hidden channels get 8x larger norm weights, the salient input channels real models have
// (with none, AWQ has nothing to protect and picks alpha near 0, i.e. round-to-nearest).
TEST(QuantMethods, GptqAndAwqModelsBeatRoundToNearest) {
  model::CausalLM m = tiny_model();
  for (int l = 0; l < 2; ++l)
    for (const char* norm : {"input_layernorm", "post_attention_layernorm"}) {
      Tensor w = parameter_tensor(m, "model.layers." + std::to_string(l) + "." + norm + ".weight");
      for (int ch : {3, 50, 90}) w.data<float>()[ch] = 8.0f;
    }
  const std::vector<Tensor> calib = calib_set();
  const Tensor held = Tensor::from_ints(token_ids(64, 300, 99), {1, 64});
  QuantConfig qc;
  qc.format = WeightFormat::Q4_G128;
  qc.lm_head_format = WeightFormat::Q8_0;
  const double rtn = logits_error(dequantize_to_causal_lm(quantize_rtn(m, qc)), m, held);
  model::CausalLM gm = clone_model(m), am = clone_model(m);  // both methods overwrite their model
  const QuantizedWeights g = quantize_gptq(gm, qc, calib, {});
  EXPECT_EQ(g.quant.method, "gptq");
  const double gptq = logits_error(dequantize_to_causal_lm(g), m, held);
  AwqOptions ao;
  ao.grid = 10;
  const QuantizedWeights a = quantize_awq(am, qc, calib, ao);
  const double awq = logits_error(dequantize_to_causal_lm(a), m, held);
  ao.clip_search = true;
  model::CausalLM cm = clone_model(m);
  const QuantizedWeights ac = quantize_awq(cm, qc, calib, ao);
  const double awq_clip = logits_error(dequantize_to_causal_lm(ac), m, held);
  EXPECT_LT(gptq, rtn);
  EXPECT_LT(awq, rtn);
  EXPECT_LT(awq_clip, rtn);
  EXPECT_NE(awq_clip, awq);  // the clipping changed some weights
  EXPECT_EQ(a.quant.extra["alpha"].size(), 2u);
}

// The layer-at-a-time pieces compute what forward() does, bit for bit: embed, every decoder layer in turn, then the
// final norm give the LM head's input that forward() reports to its observer (llama with GQA, DeepSeek-V3 with MLA
// and MoE layers).
TEST(Calibration, LayerwiseRunnerMatchesForward) {
  const char* deepseek = R"({"model_type":"deepseek_v3","vocab_size":300,"hidden_size":128,"intermediate_size":256,
    "moe_intermediate_size":64,"num_hidden_layers":3,"first_k_dense_replace":1,"num_attention_heads":4,
    "num_key_value_heads":4,"q_lora_rank":64,"kv_lora_rank":32,"qk_nope_head_dim":16,"qk_rope_head_dim":16,
    "v_head_dim":32,"n_routed_experts":4,"num_experts_per_tok":2,"n_shared_experts":1,"max_position_embeddings":128})";
  const char* llama = R"({"model_type":"llama","vocab_size":300,"hidden_size":128,"intermediate_size":256,
    "num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":128})";
  for (const char* j : {llama, deepseek}) {
    model::CausalLM m(model::parse_model_config(nlohmann::json::parse(j), "cfg"));
    m.init_random(5);
    SCOPED_TRACE(m.config().model_type);
    const Tensor ids = Tensor::from_ints(token_ids(40, 300, 3), {1, 40});
    Tensor head_in;
    model::ForwardOptions o;
    o.observe = [&](const std::string& name, const Tensor& x) {
      if (name == "lm_head.weight") head_in = x.contiguous();
    };
    (void)m.forward(ids, o);
    ASSERT_TRUE(head_in.defined());
    Tensor h = m.embed(ids);
    for (int64_t l = 0; l < m.config().num_hidden_layers; ++l) h = m.forward_layer(l, h);
    const Tensor normed =
        ops::rmsnorm(Var(h), Var(parameter_tensor(m, "model.norm.weight")), m.config().rms_norm_eps).value();
    ASSERT_EQ(normed.numel(), head_in.numel());
    EXPECT_EQ(0, std::memcmp(normed.raw_data(), head_in.raw_data(), normed.nbytes()));
    EXPECT_THROW(m.forward_layer(3, h), Error);
    EXPECT_THROW(m.forward_layer(0, Tensor::zeros({1, 4, 64}, DType::F32)), Error);
  }
}

// The streamed Hessians are 2/n XᵀX of every row each linear saw (against a double-precision sum over the captured
// rows, over sequences whose lengths cut the 256-row chunks anywhere), and linears fed the same input share one sum
// that equals what each would have summed alone.
TEST(Calibration, StreamedHessiansMatchCapturedInputs) {
  const model::CausalLM m = tiny_model();
  std::vector<Tensor> calib;
  for (uint32_t s = 0; s < 7; ++s)
    calib.push_back(Tensor::from_ints(token_ids(45 + 17 * s, 300, 40 + s), {1, 45 + 17 * s}));
  InputCollector in("model.layers.1.");
  HessianCollector hc("model.layers.1.");
  LayerwiseRunner run(m, calib);
  run.advance();
  run.observe(in.observer());
  run.observe(hc.observer());
  const std::map<std::string, Captured> cap = in.take();
  const std::map<std::string, std::vector<double>> hs = hc.take();
  ASSERT_EQ(cap.size(), 7u);  // q, k, v, o, gate, up, down
  ASSERT_EQ(hs.size(), cap.size());
  for (const auto& [name, X] : cap) {
    SCOPED_TRACE(name);
    const std::vector<double>& H = hs.at(name);
    const int64_t n = X.n(), c = X.cols;
    ASSERT_EQ(static_cast<int64_t>(H.size()), c * c);
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < c; ++i)
      for (int64_t j = 0; j < c; ++j) {
        double ref = 0;
        for (int64_t r = 0; r < n; ++r) ref += double(X.x[r * c + i]) * X.x[r * c + j];
        ref *= 2.0 / double(n);
        worst = std::max(worst, std::fabs(H[i * c + j] - ref));
        scale = std::max(scale, std::fabs(ref));
      }
    EXPECT_LE(worst, 1e-5 * scale);
  }
  // q, k and v saw one tensor: their sums are one sum, and the same as v's alone (the linears after the first skip
  // the work, they do not get a different answer).
  EXPECT_EQ(hs.at("model.layers.1.self_attn.q_proj.weight"), hs.at("model.layers.1.self_attn.v_proj.weight"));
  EXPECT_EQ(hs.at("model.layers.1.mlp.gate_proj.weight"), hs.at("model.layers.1.mlp.up_proj.weight"));
  HessianCollector alone("model.layers.1.self_attn.v_proj");
  run.observe(alone.observer());
  EXPECT_EQ(alone.take().at("model.layers.1.self_attn.v_proj.weight"), hs.at("model.layers.1.self_attn.q_proj.weight"));
}

void expect_same_weights(const QuantizedWeights& a, const QuantizedWeights& b) {
  ASSERT_EQ(a.linear.size(), b.linear.size());
  ASSERT_EQ(a.dense.size(), b.dense.size());
  EXPECT_EQ(a.quant.not_quantized, b.quant.not_quantized);
  EXPECT_EQ(a.quant.extra.dump(), b.quant.extra.dump());
  const auto same = [](const Tensor& x, const Tensor& y) {
    return x.defined() == y.defined() &&
           (!x.defined() || (x.nbytes() == y.nbytes() && std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0));
  };
  for (const auto& [name, w] : a.linear) {
    SCOPED_TRACE(name);
    const WeightMatrix& v = b.linear.at(name);
    EXPECT_EQ(w.format(), v.format());
    EXPECT_TRUE(same(w.codes().contiguous(), v.codes().contiguous()));
    EXPECT_TRUE(same(w.scales(), v.scales()));
    EXPECT_TRUE(same(w.zeros(), v.zeros()));
  }
  for (const auto& [name, t] : a.dense) EXPECT_TRUE(same(t.contiguous(), b.dense.at(name).contiguous())) << name;
}

// GPTQ and AWQ read from a model dir a layer at a time give what they give on the loaded model: a bf16 checkpoint
// (converted per tensor), tied embeddings, biases and 192-wide inputs that 4-bit groups of 128 leave in f32.
using StreamedQuant = testing::TempDirTest;
TEST_F(StreamedQuant, DirMethodsMatchTheLoadedModel) {
  const char* j = R"({"model_type":"llama","vocab_size":300,"hidden_size":256,"intermediate_size":192,
    "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,"max_position_embeddings":128,
    "tie_word_embeddings":true,"attention_bias":true})";
  model::CausalLM m(model::parse_model_config(nlohmann::json::parse(j), "tiny"));
  m.init_random(8);
  m.save(path("m"), DType::BF16);
  const std::vector<Tensor> calib = calib_set();
  QuantConfig qc;
  qc.format = WeightFormat::Q4_G128;
  qc.lm_head_format = WeightFormat::Q8_0;
  size_t bytes = 0;
  {
    model::CausalLM loaded = model::CausalLM::load(path("m"));
    const QuantizedWeights a = quantize_gptq(loaded, qc, calib, {});
    const QuantizedWeights b = quantize_gptq_dir(path("m"), qc, calib, {}, {}, &bytes);
    EXPECT_FALSE(b.quant.not_quantized.empty());  // down_proj: 192 columns
    expect_same_weights(a, b);
    EXPECT_EQ(bytes, static_cast<size_t>(m.num_parameters()) * 2);  // as stored: bf16
  }
  for (const bool clip : {false, true}) {
    AwqOptions ao;
    ao.grid = 4;
    ao.clip_search = clip;
    model::CausalLM loaded = model::CausalLM::load(path("m"));
    expect_same_weights(quantize_awq(loaded, qc, calib, ao), quantize_awq_dir(path("m"), qc, calib, ao));
  }
  // The dir is checked against the config before any work: a tensor of the wrong shape, or of an integer dtype, is
  // named with what is wrong; so is a tensor the config does not know.
  const auto expect_named = [&](const std::string& bad_name, const Tensor& bad_value, const std::string& what) {
    SCOPED_TRACE(bad_name + ": " + what);
    io::NamedTensors bad;
    for (const auto& [name, t] : m.state())
      if (name != bad_name) bad.emplace_back(name, t);
    bad.emplace_back(bad_name, bad_value);
    std::filesystem::remove_all(path("bad"));
    std::filesystem::create_directories(path("bad"));
    io::save_safetensors(path("bad") + "/model.safetensors", bad);
    std::filesystem::copy_file(path("m") + "/config.json", path("bad") + "/config.json");
    try {
      (void)quantize_gptq_dir(path("bad"), qc, calib, {});
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + bad_name + "'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_named("model.layers.1.mlp.up_proj.weight", Tensor::zeros({3, 3}), "shape");
  expect_named("model.norm.weight", Tensor::from_ints(std::vector<int32_t>(256, 1), {256}), "dtype");
  expect_named("model.layers.0.mlp.extra.weight", Tensor::zeros({2}), "unexpected");
}

// Pruning removes exactly the dropped channels: the pruned model equals the original with those channels zeroed.
TEST(QuantMethods, PruneRemovesLowestL1Channels) {
  const model::CausalLM m = tiny_model();
  PruneReport r;
  const model::CausalLM p = prune_ffn(m, 0.25, &r);
  EXPECT_EQ(r.intermediate_before, 256);
  EXPECT_EQ(r.intermediate_after, 192);
  EXPECT_EQ(p.config().intermediate_size, 192);
  EXPECT_EQ(p.config().raw["intermediate_size"], 192);
  EXPECT_LT(r.params_after, r.params_before);
  // Zero, in a copy of the original, every channel whose gate row is not among the pruned model's gate rows.
  model::CausalLM z = clone_model(m);
  for (int l = 0; l < 2; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".mlp.";
    Tensor g = parameter_tensor(z, pre + "gate_proj.weight");
    const Tensor kept = parameter_tensor(p, pre + "gate_proj.weight");
    int64_t k = 0;
    for (int64_t i = 0; i < 256; ++i) {
      const bool is_kept = k < 192 && std::equal(g.data<float>() + i * 128, g.data<float>() + (i + 1) * 128,
                                                 kept.data<float>() + k * 128);
      if (is_kept) {
        ++k;
      } else {
        std::fill(g.data<float>() + i * 128, g.data<float>() + (i + 1) * 128, 0.0f);  // silu(0) * up = 0
      }
    }
    EXPECT_EQ(k, 192);
  }
  const Tensor x = Tensor::from_ints(token_ids(32, 300, 7), {1, 32});
  EXPECT_LE(logits_error(p, z, x), 1e-5);
}

// Perplexity by sliding windows against the hand computation: each window's forward, the loss over exactly the
// tokens the method scores (targets of other positions set to -100).
TEST(Perplexity, MatchesForwardAndLoss) {
  const model::CausalLM m = tiny_model();
  const std::vector<int32_t> ids = token_ids(100, 300, 21);
  for (const auto& [ctx, stride] : {std::pair<int64_t, int64_t>{100, 100}, {40, 40}, {40, 16}, {32, 7}}) {
    SCOPED_TRACE("ctx " + std::to_string(ctx) + " stride " + std::to_string(stride));
    double total = 0;
    int64_t count = 0, prev_end = 0;
    for (int64_t begin = 0; begin < 100; begin += stride) {
      const int64_t end = std::min<int64_t>(begin + ctx, 100), T = end - begin;
      std::vector<int32_t> w(ids.begin() + begin, ids.begin() + end), tgt(static_cast<size_t>(T), -100);
      int64_t n = 0;
      for (int64_t j = std::max(prev_end, begin + 1); j < end; ++j, ++n) tgt[j - 1 - begin] = ids[j];
      if (n > 0) {
        const Var logits = m.forward(Tensor::from_ints(w, {1, T})).logits;
        total += model::next_token_loss(logits, Tensor::from_ints(tgt, {1, T})).value().item() * double(n);
        count += n;
      }
      prev_end = end;
      if (end == 100) break;
    }
    eval::lm::PerplexityOptions o;
    o.ctx = ctx;
    o.stride = stride;
    const eval::lm::PerplexityResult r = eval::lm::perplexity(m, ids, o);
    // Every token with context in its window is scored once: all but the first when windows overlap; disjoint
    // windows (stride == ctx) also skip each window's first token, as Hugging Face's loop does.
    EXPECT_EQ(r.tokens, count);
    if (stride < ctx || ctx == 100) {
      EXPECT_EQ(count, 99);
    }
    EXPECT_NEAR(r.nll, total / double(count), 1e-5);
    EXPECT_NEAR(r.ppl, std::exp(r.nll), 1e-9);
  }
  // one window = the model's own mean loss
  const Tensor all = Tensor::from_ints(ids, {1, 100});
  const double loss = model::causal_lm_loss(m.forward(all).logits, all).value().item();
  eval::lm::PerplexityOptions o;
  o.ctx = 100;
  EXPECT_NEAR(eval::lm::perplexity(m, ids, o).nll, loss, 1e-5);
}

}  // namespace
}  // namespace lmforge::quant
