// The engine's state, shared by construction (engine.cpp), attention and caches (engine_attention.cpp) and the
// FFN (engine_ffn.cpp).
#pragma once
#include <unordered_map>
#include <vector>

#include "lmforge/model/engine.h"

namespace lmforge::model {

struct EngineMlp {
  WeightMatrix gate, up, down;
  WeightMatrix gate_up;  // gate and up stacked [2F, D] (EngineOptions::fuse; gate and up are then empty)
  bool defined() const { return down.defined(); }
  int64_t inner() const { return down.cols(); }
};

struct EngineLayer {
  std::vector<float> input_norm, post_norm;
  // llama attention
  WeightMatrix q, k, v, o;
  WeightMatrix qkv;  // q, k, v stacked (EngineOptions::fuse; q, k, v are then empty)
  std::vector<float> q_bias, k_bias, v_bias, o_bias;
  // MLA (q_proj in `q` when q_lora_rank is null)
  WeightMatrix q_a, q_b, kv_a, kv_b;
  std::vector<float> q_a_norm, kv_a_norm;
  // Absorbed form, per head, from kv_b_proj dequantized: uk_t[h] = (W_uk[h])ᵀ [kv_lora_rank, nope] maps a query's
  // nope part into latent space; uv[h] = W_uv[h] [v_head_dim, kv_lora_rank] maps an attended latent to values.
  std::vector<WeightMatrix> uk_t, uv;
  int64_t window = 0;  // sliding window (0: full causal)
  // FFN
  bool moe = false;
  EngineMlp mlp;
  WeightMatrix router;
  Tensor expert_bias;
  std::vector<EngineMlp> experts;
  EngineMlp shared;
};

// One layer's cache of a sequence. Rows are tokens: GQA rows [2, Hkv, head_dim] are split into k and v buffers;
// MLA rows are [kv_lora_rank + qk_rope_head_dim] (normed latent, then roped key part) in `k`. Full layers grow
// the buffers; sliding layers hold `window` rows and token p lives in row p % window.
// With EngineOptions::kv_dtype F16 the rows are IEEE half in hk / hv instead (k / v stay empty).
struct LayerCache {
  std::vector<float> k, v;
  std::vector<uint16_t> hk, hv;
  int64_t rows = 0;  // capacity in tokens
};

struct Sequence {
  int64_t len = 0;
  bool half = false;  // the caches hold f16 (EngineOptions::kv_dtype when the sequence was added)
  std::vector<LayerCache> layers;
};

// A run of consecutive tokens of one sequence inside a batch of rows: rows [row0, row0 + n) are positions
// [pos0, pos0 + n) of sequence `seq`.
struct Segment {
  Sequence* seq;
  int64_t row0, n, pos0;
};

struct Engine::Impl {
  ModelConfig c;
  EngineOptions opt;
  WeightMatrix embed, lm_head;
  std::vector<float> final_norm;
  std::vector<EngineLayer> layers;
  Tensor rope_cos, rope_sin;  // [max_position_embeddings, rot/2]
  int64_t rot = 0;
  std::unordered_map<SeqId, Sequence> seqs;
  SeqId next_id = 0;

  Sequence& seq(SeqId id);
  // Runs the decoder over N rows (the segments' tokens, in row order) and returns the final-norm hidden states of
  // the rows listed in `out_rows` as logits [out_rows, vocab].
  Tensor run(const std::vector<int32_t>& ids, std::vector<Segment>& segs, const std::vector<int64_t>& out_rows);

  // h [N, D] -> attention output [N, D] (before the residual add); appends the rows' keys to the caches.
  void attention(int64_t layer, const float* h, int64_t N, std::vector<Segment>& segs, float* out);
  void ffn(int64_t layer, const float* h, int64_t N, float* out);
};

// n floats, contents undefined. Decode runs each layer's steps once a token, and fresh zero-filled vectors for each
// (~15 a layer) cost allocator calls and memsets on the serial path: up to kMax floats come from `reuse`, a
// thread_local vector the call site owns (so two buffers never alias), which only grows; larger ones (prefill) are
// the Scratch's own, freed with it, so a long prompt leaves no stale megabytes behind.
class Scratch {
 public:
  static constexpr int64_t kMax = int64_t{1} << 18;  // 1 MiB
  Scratch(std::vector<float>& reuse, int64_t n) {
    std::vector<float>& v = n <= kMax ? reuse : own_;
    if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
    p_ = v.data();
  }
  float* data() const { return p_; }

 private:
  std::vector<float> own_;
  float* p_ = nullptr;
};

// Gathers rope rows for positions into cos/sin [N, rot/2].
void rope_rows(const Engine::Impl& m, const std::vector<int64_t>& pos, std::vector<float>& cos,
               std::vector<float>& sin);

}  // namespace lmforge::model
