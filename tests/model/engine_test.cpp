// The inference engine against the reference logits: the PyTorch fixtures (tests/reference/gen_model.py) for the
// three parity configs (llama GQA with sliding-window layers, DeepSeek-V3 MLA + sigmoid noaux_tc MoE with YaRN,
// DeepSeek-V3 softmax greedy MoE without q LoRA), and CausalLM::forward (full-sequence masking, itself checked
// against PyTorch) on longer random sequences that wrap the sliding layers' ring buffers. Prefill at once, token by
// token, in chunks, and batched decode of sequences of different lengths must all agree within 1e-4 relative
// (DESIGN.md section 6); MLA decoded in the absorbed form must agree with the decompressed form.
#include "lmforge/model/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>

#include "lmforge/io/safetensors.h"
#include "lmforge/kernels/cpu_features.h"
#include "lmforge/model/model.h"

namespace lmforge::model {
namespace {

const std::string kDir = LMFORGE_SOURCE_DIR "/tests/reference/fixtures/";

double rel(const std::vector<float>& a, const std::vector<float>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  double n = 0, d = 0;
  for (size_t i = 0; i < std::min(a.size(), ref.size()); ++i) {
    n += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    d += double(ref[i]) * ref[i];
  }
  return std::sqrt(n / d);
}

std::vector<float> vec(const Tensor& t) {
  const Tensor c = t.to(DType::F32).contiguous();
  return {c.data<float>(), c.data<float>() + c.numel()};
}

struct Case {
  ModelConfig cfg;
  CausalLM model;
  Tensor ids, logits;  // [B, T], [B, T, V] from PyTorch
  explicit Case(const std::string& name) : cfg(load_model_config(kDir + "model_" + name + ".json")), model(cfg) {
    auto t = io::load_safetensors(kDir + "model_" + name + ".safetensors");
    std::map<std::string, Tensor> w;
    for (const auto& [k, v] : t)
      if (k.rfind("model.", 0) == 0 || k.rfind("lm_head.", 0) == 0) w.emplace(k, v);
    model.load_weights(w, "fixture");
    ids = t.at("ids");
    logits = t.at("logits");
  }
  // Reference logits of row b, positions [0, T).
  std::vector<float> ref(int64_t b) const {
    const int64_t T = ids.size(1), V = cfg.vocab_size;
    const std::vector<float> all = vec(logits);
    return {all.begin() + b * T * V, all.begin() + (b + 1) * T * V};
  }
  std::vector<int32_t> row(int64_t b) const {
    const std::vector<int32_t> all = ids.to_int_vector();
    const int64_t T = ids.size(1);
    return {all.begin() + b * T, all.begin() + (b + 1) * T};
  }
};

// Logits of every position of `toks`, fed to a fresh sequence in chunks of `chunk` tokens (chunk 1: prefill one
// token, then decode the rest one at a time).
std::vector<float> run_chunked(Engine& e, const std::vector<int32_t>& toks, int64_t chunk) {
  const SeqId s = e.add_sequence();
  std::vector<float> out;
  for (size_t i = 0; i < toks.size();) {
    Tensor l;
    if (chunk == 1 && i > 0) {
      l = e.decode({s}, {toks[i]});
      i += 1;
    } else {
      const size_t n = std::min(toks.size() - i, static_cast<size_t>(chunk));
      l = e.prefill(s, std::span<const int32_t>(toks.data() + i, n), true);
      i += n;
    }
    const std::vector<float> v = vec(l);
    out.insert(out.end(), v.begin(), v.end());
  }
  EXPECT_EQ(e.length(s), static_cast<int64_t>(toks.size()));
  e.free_sequence(s);
  return out;
}

class EngineParity : public ::testing::TestWithParam<const char*> {};

TEST_P(EngineParity, PrefillTokenByTokenAndChunksMatchPyTorch) {
  const Case k(GetParam());
  for (bool absorb : {false, true}) {
    SCOPED_TRACE(absorb ? "absorbed" : "decompressed");
    Engine e = Engine::from_model(k.model, {absorb});
    for (int64_t b = 0; b < k.ids.size(0); ++b) {
      const std::vector<float> ref = k.ref(b);
      EXPECT_LT(rel(run_chunked(e, k.row(b), 1 << 20), ref), 1e-4) << "prefill, row " << b;
      EXPECT_LT(rel(run_chunked(e, k.row(b), 1), ref), 1e-4) << "token by token, absorb " << absorb << ", row " << b;
      EXPECT_LT(rel(run_chunked(e, k.row(b), 3), ref), 1e-4) << "chunks of 3, row " << b;
    }
    EXPECT_EQ(e.num_sequences(), 0u);
  }
}

// q/k/v and gate/up stacked into one matrix each (the default) or kept apart: the same logits, and the same weight
// bytes per token.
TEST_P(EngineParity, FusedProjectionsChangeNothing) {
  const Case k(GetParam());
  EngineOptions apart;
  apart.fuse = false;
  Engine fused = Engine::from_model(k.model), separate = Engine::from_model(k.model, apart);
  EXPECT_DOUBLE_EQ(fused.weight_bytes_per_token(), separate.weight_bytes_per_token());
  EXPECT_DOUBLE_EQ(fused.matmul_flops_per_token(), separate.matmul_flops_per_token());
  for (int64_t chunk : {int64_t{1}, int64_t{1} << 20})
    EXPECT_LT(rel(run_chunked(fused, k.row(0), chunk), run_chunked(separate, k.row(0), chunk)), 1e-6);
}

// q8_0 / q4_0 matrices (embedding included, which the lookups then read interleaved) repacked into the four-row
// decode layout (the default) or left in the GGUF layout: the same logits, token by token (the decode tiles) and in
// one prefill (the dequantized panels), for llama and for MLA + MoE. Within 1e-5 relative: the interleaved decode
// tiles keep other float partial sums (the portable path's products, and the panels, are bit for bit).
TEST_P(EngineParity, InterleavedDecodeLayoutChangesNothing) {
  const Case k(GetParam());
  for (WeightFormat f : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    SCOPED_TRACE(std::string(weight_format_name(f)));
    EngineWeights w;
    for (auto& [name, t] : k.model.state()) {
      if (t.dim() == 2 && t.size(1) % 32 == 0) {
        w.matrices.emplace(name, WeightMatrix::quantize(t, f));
      } else {
        w.tensors.emplace(name, t);
      }
    }
    EngineOptions plain;
    plain.interleave = false;
    Engine packed(k.cfg, w, {}, "packed"), file(k.cfg, w, plain, "file");
    EXPECT_DOUBLE_EQ(packed.weight_bytes_per_token(), file.weight_bytes_per_token());
    for (int64_t chunk : {int64_t{1}, int64_t{1} << 20}) {
      const std::vector<float> a = run_chunked(packed, k.row(0), chunk), b = run_chunked(file, k.row(0), chunk);
      EXPECT_LT(rel(a, b), 1e-5) << "chunk " << chunk;  // MoE experts see few rows even in a prefill: tiles there too
      if (!kernels::cpu_has_avx2()) {
        EXPECT_EQ(a, b) << "chunk " << chunk;
      }
    }
  }
}

TEST_P(EngineParity, LastLogitsOnlyByDefault) {
  const Case k(GetParam());
  Engine e = Engine::from_model(k.model);
  const SeqId s = e.add_sequence();
  const std::vector<int32_t> toks = k.row(0);
  const Tensor l = e.prefill(s, toks);
  ASSERT_EQ(l.size(0), 1);
  const std::vector<float> ref = k.ref(0);
  const int64_t V = k.cfg.vocab_size;
  EXPECT_LT(rel(vec(l), {ref.end() - V, ref.end()}), 1e-4);
}

// Sequences of different lengths decoded together: each sequence's prompt is prefilled (lengths differ), then all
// live sequences decode one token per step in one batch until each reaches its end; a sequence leaves the batch
// when done, and a freed slot is reused. Random ids past the fixtures' length wrap the sliding layers' rings.
TEST_P(EngineParity, BatchedDecodeOfDifferentLengthsMatchesFullForward) {
  const Case k(GetParam());
  std::mt19937 rng(7);
  const int64_t nseq = 4, T = 40;
  std::vector<std::vector<int32_t>> toks(nseq);
  std::vector<int32_t> flat;
  for (auto& t : toks) {
    for (int64_t i = 0; i < T; ++i) t.push_back(static_cast<int32_t>(rng() % k.cfg.vocab_size));
    flat.insert(flat.end(), t.begin(), t.end());
  }
  const std::vector<float> ref_all = vec(k.model.forward(Tensor::from_ints(flat, {nseq, T})).logits.value());
  const int64_t V = k.cfg.vocab_size;
  for (bool absorb : {false, true}) {
    Engine e = Engine::from_model(k.model, {absorb});
    const SeqId junk = e.add_sequence();  // a freed id elsewhere must not disturb the others
    e.prefill(junk, std::vector<int32_t>{1, 2, 3});
    std::vector<SeqId> ids;
    std::vector<int64_t> end = {T, T - 5, T - 11, 23};  // each sequence stops at its own length
    std::vector<std::vector<float>> got(nseq);
    for (int64_t s = 0; s < nseq; ++s) {
      ids.push_back(e.add_sequence());
      const int64_t p = 1 + 3 * s;  // prompt lengths 1, 4, 7, 10
      const Tensor l = e.prefill(ids[s], std::span<const int32_t>(toks[s].data(), p), true);
      got[s] = vec(l);
    }
    e.free_sequence(junk);
    for (;;) {
      std::vector<SeqId> batch;
      std::vector<int32_t> next;
      std::vector<int64_t> which;
      for (int64_t s = 0; s < nseq; ++s) {
        const int64_t len = e.length(ids[s]);
        if (len < end[s]) {
          batch.push_back(ids[s]);
          next.push_back(toks[s][len]);
          which.push_back(s);
        }
      }
      if (batch.empty()) break;
      const std::vector<float> l = vec(e.decode(batch, next));
      for (size_t i = 0; i < which.size(); ++i)
        got[which[i]].insert(got[which[i]].end(), l.begin() + i * V, l.begin() + (i + 1) * V);
    }
    for (int64_t s = 0; s < nseq; ++s) {
      const std::vector<float> ref(ref_all.begin() + s * T * V, ref_all.begin() + (s * T + end[s]) * V);
      EXPECT_LT(rel(got[s], ref), 1e-4) << "sequence " << s << ", absorb " << absorb;
    }
  }
}

// fork_sequence: a prefix prefilled once, then continued differently in the original and two copies (one forked
// from a fork), each matching the full forward of its own tokens; the sliding layers (window 4) wrap their rings
// after the fork. With f32 and f16 caches (the copy keeps the original's cache type).
TEST_P(EngineParity, ForkedSequencesContinueIndependently) {
  const Case k(GetParam());
  std::mt19937 rng(5);
  const int64_t T = 48, P = 20, V = k.cfg.vocab_size;
  std::vector<std::vector<int32_t>> toks(3);
  for (auto& t : toks)
    for (int64_t i = 0; i < T; ++i) t.push_back(static_cast<int32_t>(rng() % V));
  // b shares a's first P tokens; c shares b's first P + 6.
  std::copy(toks[0].begin(), toks[0].begin() + P, toks[1].begin());
  std::copy(toks[1].begin(), toks[1].begin() + P + 6, toks[2].begin());
  std::vector<int32_t> flat;
  for (const auto& t : toks) flat.insert(flat.end(), t.begin(), t.end());
  const std::vector<float> ref = vec(k.model.forward(Tensor::from_ints(flat, {3, T})).logits.value());
  for (const DType kv : {DType::F32, DType::F16}) {
    EngineOptions o;
    o.kv_dtype = kv;
    Engine e = Engine::from_model(k.model, o);
    const SeqId a = e.add_sequence();
    e.prefill(a, std::span<const int32_t>(toks[0].data(), P));
    const SeqId b = e.fork_sequence(a);
    EXPECT_EQ(e.length(b), P);
    EXPECT_EQ(e.cache_bytes(b), e.cache_bytes(a));
    // b goes on by 6 tokens of its own, then c is forked from it.
    e.prefill(b, std::span<const int32_t>(toks[1].data() + P, 6));
    const SeqId c = e.fork_sequence(b);
    std::vector<std::vector<float>> got(3);
    const std::vector<SeqId> ids = {a, b, c};
    for (int64_t step = 0;; ++step) {
      std::vector<SeqId> batch;
      std::vector<int32_t> next;
      std::vector<int64_t> which;
      for (int64_t s = 0; s < 3; ++s) {
        const int64_t len = e.length(ids[s]);
        if (len < T) batch.push_back(ids[s]), next.push_back(toks[s][len]), which.push_back(s);
      }
      if (batch.empty()) break;
      const std::vector<float> l = vec(e.decode(batch, next));
      for (size_t i = 0; i < which.size(); ++i) {
        const int64_t s = which[i], pos = e.length(ids[s]) - 1;
        const std::vector<float> want(ref.begin() + (s * T + pos) * V, ref.begin() + (s * T + pos + 1) * V);
        EXPECT_LT(rel({l.begin() + i * V, l.begin() + (i + 1) * V}, want), kv == DType::F16 ? 2e-2 : 1e-4)
            << "sequence " << s << " position " << pos << " kv " << dtype_name(kv);
      }
      ASSERT_LE(step, T);
    }
    for (SeqId s : ids) e.free_sequence(s);
    EXPECT_EQ(e.num_sequences(), 0u);
    EXPECT_THROW(e.fork_sequence(a), Error);
  }
}

INSTANTIATE_TEST_SUITE_P(Reference, EngineParity,
                         ::testing::Values("llama_gqa_sliding", "dsv3_mla_moe_sigmoid", "dsv3_moe_softmax_greedy"));

TEST(Engine, SlidingLayersKeepOnlyTheirWindow) {
  const Case k("llama_gqa_sliding");
  Engine e = Engine::from_model(k.model);
  const SeqId s = e.add_sequence();
  std::vector<int32_t> toks(30, 5);
  e.prefill(s, toks);
  // Layers 0 and 1 slide over 4 tokens, layer 2 is global: 4 + 4 + 30 rows of 2 x 2 heads x 8 floats.
  EXPECT_EQ(e.cache_bytes(s), (4 + 4 + 30) * 2 * 2 * 8 * sizeof(float));
}

TEST(Engine, MlaCachesTheLatent) {
  const Case k("dsv3_moe_softmax_greedy");
  Engine e = Engine::from_model(k.model);
  const SeqId s = e.add_sequence();
  e.prefill(s, std::vector<int32_t>(10, 3));
  // 2 layers x 10 tokens x (kv_lora_rank 16 + rope 4).
  EXPECT_EQ(e.cache_bytes(s), 2 * 10 * (16 + 4) * sizeof(float));
}

TEST(Engine, BadInputIsAnError) {
  const Case k("llama_gqa_sliding");
  Engine e = Engine::from_model(k.model);
  const SeqId s = e.add_sequence();
  EXPECT_THROW(e.prefill(s, std::vector<int32_t>{1, 96}), Error);  // outside the vocabulary
  EXPECT_THROW(e.prefill(s, std::vector<int32_t>(65, 1)), Error);  // past max_position 64
  EXPECT_EQ(e.length(s), 0);                                       // nothing appended
  EXPECT_THROW(e.decode({s, s}, {1, 2}), Error);                   // same sequence twice
  EXPECT_THROW(e.decode({s + 100}, {1}), Error);                   // no such sequence
  EXPECT_THROW(e.decode({s}, {1, 2}), Error);                      // count mismatch
  e.prefill(s, std::vector<int32_t>(64, 1));
  EXPECT_THROW(e.decode({s}, {1}), Error);  // context full
}

TEST(Engine, WeightsConstructorTakesQuantizedMatrices) {
  // The quantized loader's entry point: matrices in any format plus small f32 tensors. q8_0 weights must give
  // the logits of the dequantized f32 model (the engine adds no error of its own).
  const Case k("llama_gqa_sliding");
  EngineWeights qw, dw;
  for (auto& [name, t] : k.model.state()) {
    if (t.dim() == 2 && name != "model.embed_tokens.weight") {
      // cols 32 / 64: multiples of q8_0's block
      WeightMatrix q = WeightMatrix::quantize(t, WeightFormat::Q8_0);
      qw.matrices.emplace(name, q);
      dw.tensors.emplace(name, q.dequantize());
    } else {
      qw.tensors.emplace(name, t);
      dw.tensors.emplace(name, t);
    }
  }
  Engine eq(k.cfg, qw, {}, "q8"), ed(k.cfg, dw, {}, "deq");
  const std::vector<int32_t> toks = k.row(0);
  const std::vector<float> a = run_chunked(eq, toks, 1), b = run_chunked(ed, toks, 1);
  // The q8_0 decode kernels round activations to 8-bit blocks as ggml does: within that rounding of the product
  // with the dequantized weights (token by token, so every product is the n = 1 path).
  EXPECT_LT(rel(a, b), 2e-2);
  EXPECT_GT(rel(a, k.ref(0)), 1e-6);  // really quantized
  EngineWeights missing = dw;
  missing.tensors.erase("model.layers.1.self_attn.k_proj.weight");
  try {
    Engine bad(k.cfg, missing, {}, "dir/model.safetensors");
    FAIL() << "no error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("dir/model.safetensors: tensor 'model.layers.1.self_attn.k_proj.weight'"),
              std::string::npos)
        << err.what();
  }
  // A tensor the config does not ask for means config and file disagree (here: a layer the config lacks would be
  // skipped; a stray name is not), as CausalLM::load_weights holds.
  EngineWeights extra = dw;
  extra.tensors.emplace("model.layers.0.self_attn.q_norm.weight", Tensor::zeros({8}));
  try {
    Engine bad(k.cfg, extra, {}, "dir/model.safetensors");
    FAIL() << "no error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("unexpected tensor 'model.layers.0.self_attn.q_norm.weight'"),
              std::string::npos)
        << err.what();
  }
  EngineWeights mtp = dw;  // DeepSeek-V3's multi-token-prediction layer sits past num_hidden_layers: ignored
  mtp.tensors.emplace("model.layers." + std::to_string(k.cfg.num_hidden_layers) + ".eh_proj.weight",
                      Tensor::zeros({4, 4}));
  EXPECT_NO_THROW(Engine(k.cfg, mtp, {}, "mtp"));
}

// The f16 KV cache (EngineOptions::kv_dtype, the CLI's --kv-type f16): prefill at once, token by token (decode over
// the half cache: the F16C kernel where head dims allow, widened copies otherwise), in chunks and in a batch of
// different lengths all agree within the engine's 1e-4, since every path attends over the same rounded keys and
// values; the logits stay within 5e-3 of the f32 forward; the cache holds half the bytes. Shapes: the fixtures
// (head dims 8 and 20: the widening path), a GQA llama and an MHA llama with head dim 32 and sliding layers whose
// rings wrap, and MLA with a 32 + 16 latent row (the kernel: absorbed, one KV head for 4 query heads).
ModelConfig half_kv_config(const std::string& name) {
  if (name.rfind("fixture:", 0) == 0) return load_model_config(kDir + "model_" + name.substr(8) + ".json");
  const bool mla = name == "mla";
  ModelConfig c =
      load_model_config(kDir + (mla ? "model_dsv3_moe_softmax_greedy.json" : "model_llama_gqa_sliding.json"));
  c.hidden_size = 64;
  c.max_position_embeddings = 128;
  if (mla) {
    c.kv_lora_rank = 32;
    c.qk_rope_head_dim = 16;
    c.qk_nope_head_dim = 16;
    c.v_head_dim = 16;
  } else {
    c.head_dim = 32;
    c.num_key_value_heads = name == "mha" ? 4 : 2;
    c.sliding_window = 9;
  }
  return c;
}

TEST(Engine, HalfKvCacheAgreesAcrossPathsAndStaysNearF32) {
  for (const std::string name : {"fixture:llama_gqa_sliding", "fixture:dsv3_mla_moe_sigmoid", "gqa", "mha", "mla"}) {
    SCOPED_TRACE(name);
    const ModelConfig cfg = half_kv_config(name);
    CausalLM model(cfg);
    model.init_random(11);
    std::mt19937 rng(3);
    const int64_t T = std::min<int64_t>(50, cfg.max_position_embeddings);
    std::vector<int32_t> toks;
    for (int64_t i = 0; i < T; ++i) toks.push_back(static_cast<int32_t>(rng() % cfg.vocab_size));
    const std::vector<float> ref = vec(model.forward(Tensor::from_ints(toks, {1, T})).logits.value());
    for (bool absorb : {false, true}) {
      SCOPED_TRACE(absorb ? "absorbed" : "decompressed");
      EngineOptions o16, o32;
      o16.mla_absorb = o32.mla_absorb = absorb;
      o16.kv_dtype = DType::F16;
      Engine e16 = Engine::from_model(model, o16), e32 = Engine::from_model(model, o32);
      const std::vector<float> at_once = run_chunked(e16, toks, 1 << 20), by_token = run_chunked(e16, toks, 1),
                               chunks = run_chunked(e16, toks, 7);
      EXPECT_LT(rel(by_token, at_once), 1e-4);
      EXPECT_LT(rel(chunks, at_once), 1e-4);
      EXPECT_LT(rel(at_once, ref), 5e-3);
      EXPECT_LT(rel(by_token, ref), 5e-3);
      EXPECT_GT(rel(by_token, ref), 3 * rel(run_chunked(e32, toks, 1), ref));  // really rounded
      // Two sequences decoded in one batch at different lengths: each as decoded alone.
      const SeqId a = e16.add_sequence(), b = e16.add_sequence();
      e16.prefill(a, std::span<const int32_t>(toks.data(), 20));
      e16.prefill(b, std::span<const int32_t>(toks.data(), 33));
      std::vector<float> la, lb;
      for (int64_t i = 0; i < 12; ++i) {
        const std::vector<float> l = vec(e16.decode({a, b}, {toks[20 + i], toks[33 + i]}));
        la.insert(la.end(), l.begin(), l.begin() + cfg.vocab_size);
        lb.insert(lb.end(), l.begin() + cfg.vocab_size, l.end());
      }
      const int64_t V = cfg.vocab_size;
      EXPECT_LT(rel(la, std::vector<float>(by_token.begin() + 20 * V, by_token.begin() + 32 * V)), 1e-4);
      EXPECT_LT(rel(lb, std::vector<float>(by_token.begin() + 33 * V, by_token.begin() + 45 * V)), 1e-4);
      const SeqId c16 = e16.add_sequence(), c32 = e32.add_sequence();
      e16.prefill(c16, toks);
      e32.prefill(c32, toks);
      EXPECT_EQ(2 * e16.cache_bytes(c16), e32.cache_bytes(c32));
    }
  }
  EngineOptions bad;
  bad.kv_dtype = DType::BF16;
  EXPECT_THROW(Engine::from_model(CausalLM(half_kv_config("gqa")), bad), Error);
  // The cache type is a sequence's own: changing the option later applies to sequences added afterwards.
  CausalLM m(half_kv_config("gqa"));
  m.init_random(5);
  Engine e = Engine::from_model(m);
  const std::vector<int32_t> toks = {3, 1, 4, 1, 5, 9, 2, 6};
  const SeqId s32 = e.add_sequence();
  e.options().kv_dtype = DType::F16;
  const SeqId s16 = e.add_sequence();
  e.prefill(s32, toks);
  e.prefill(s16, toks);
  EXPECT_EQ(e.cache_bytes(s32), 2 * e.cache_bytes(s16));
  const std::vector<float> both = vec(e.decode({s32, s16}, {7, 7}));
  const int64_t V = m.config().vocab_size;
  const std::vector<float> a(both.begin(), both.begin() + V), b(both.begin() + V, both.end());
  EXPECT_LT(rel(b, a), 5e-3);
  EXPECT_GT(rel(b, a), 0.0);
  e.options().kv_dtype = DType::BF16;
  EXPECT_THROW(e.add_sequence(), Error);
}

// Engine::load copies f32 weights out of the file and drops the file's pages as it goes: the copy must not
// depend on pages that were dropped, and the logits equal those of the model the file came from.
TEST(Engine, LoadFromDirMatchesTheModel) {
  const Case k("llama_gqa_sliding");
  const std::string dir = ::testing::TempDir() + "/engine_load_dir";
  k.model.save(dir);
  Engine a = Engine::load(dir), b = Engine::from_model(k.model);
  const std::vector<int32_t> toks = k.row(0);
  EXPECT_EQ(run_chunked(a, toks, 3), run_chunked(b, toks, 3));
}

// A bf16 / f16 checkpoint's matrices stay half precision in the engine (half the memory and decode bytes), and
// compute what the f32 copy of the same rounded weights computes (summation order apart).
TEST(Engine, HalfPrecisionDirKeepsItsMatricesHalf) {
  for (const auto& [dt, wf] : {std::pair{DType::BF16, WeightFormat::BF16}, std::pair{DType::F16, WeightFormat::F16}}) {
    SCOPED_TRACE(dtype_name(dt));
    for (const std::string name : {"llama_gqa_sliding", "dsv3_mla_moe_sigmoid"}) {
      SCOPED_TRACE(name);
      const Case k(name);
      const std::string dir = ::testing::TempDir() + "/engine_half_" + name;
      k.model.save(dir, dt);
      Engine a = Engine::load(dir);
      const auto by = a.weight_bytes_by_format();
      ASSERT_TRUE(by.count(wf));
      CausalLM rounded = CausalLM::load(dir);  // the same weights widened to f32
      Engine b = Engine::from_model(rounded);
      if (name == "llama_gqa_sliding") {  // (MLA decode also reads its f32 absorbed matrices)
        EXPECT_EQ(by.size(), 1u);
        EXPECT_NEAR(a.weight_bytes_per_token() * 2, b.weight_bytes_per_token(), 1.0);
      }
      const std::vector<int32_t> toks = k.row(0);
      EXPECT_LT(rel(run_chunked(a, toks, 3), run_chunked(b, toks, 3)), 1e-5);
    }
  }
}

}  // namespace
}  // namespace lmforge::model
