// The inference engine: the decoder without the autograd tape, with a KV cache per sequence, for prefill, batched
// decode of sequences of different lengths (what continuous batching calls) and scoring (eval).
//
// Every weight product goes through weight_matmul (lmforge/core/weight_matrix.h), so the engine runs any
// WeightFormat: an f32 CausalLM is wrapped as F32 matrices, a quantized model directory hands its matrices over
// through the EngineWeights constructor. Caches:
//   - GQA/MHA layers keep K and V per token ([Hkv, head_dim] each, RoPE applied);
//   - MLA layers keep the compressed latent (kv_lora_rank values after kv_a_layernorm) and the rope part of the key
//     (qk_rope_head_dim values, RoPE applied) per token, not the decompressed K/V. Decode uses the absorbed form
//     (kv_b_proj's k_nope part folded into the query, its v part applied after attention) unless disabled;
//   - sliding-window layers keep only their last `sliding_window` tokens (a ring buffer).
// MoE layers route each token as the training forward does at inference (no noise, no capacity limit) and run only
// the chosen experts.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lmforge/core/tensor.h"
#include "lmforge/core/weight_matrix.h"
#include "lmforge/model/config.h"
#include "lmforge/model/model.h"

namespace lmforge::model {

struct EngineOptions {
  bool mla_absorb = true;  // decode MLA layers in the absorbed-weight form (prefill always decompresses)
  // Stack q/k/v and each MLP's gate/up (same format) into one matrix at load: one pass over the weights, one
  // activation quantization and one parallel region instead of three or two.
  bool fuse = true;
  // Repack q8_0 / q4_0 matrices into the four-row decode layout at load (WeightMatrix::interleave_rows4): the same
  // bytes and results, one stream per tile (q8_0 decode products 10-20% faster).
  bool interleave = true;
  // The KV cache's element type: F32, or F16 (IEEE half, llama.cpp's default `-ctk f16 -ctv f16`): half the cache's
  // memory and half the bytes a decode step's attention streams. Keys and values are rounded once, when stored;
  // prefill and decode both attend over the rounded values, so a prefix gives the same logits either way.
  DType kv_dtype = DType::F32;
};

// A model's weights by Hugging Face name. Every projection, expert, router and the LM head may be in `matrices`
// (any WeightFormat); the embedding may be there too (its rows are dequantized on lookup). Norm weights, biases and
// e_score_correction_bias are f32 tensors in `tensors`. A 2-D weight found only in `tensors` is wrapped as F32.
struct EngineWeights {
  std::map<std::string, WeightMatrix> matrices;
  std::map<std::string, Tensor> tensors;
};

using SeqId = int64_t;

class Engine {
 public:
  // Errors (missing or misshapen tensors) name `source` and the tensor.
  // `weights` is consumed as it is loaded (pass an rvalue to let each tensor go once it is in place: fusing q/k/v
  // and gate/up then never holds the whole model twice).
  Engine(ModelConfig config, EngineWeights weights, EngineOptions opt = {}, const std::string& source = "");
  // The f32 parameters of a CausalLM, wrapped (shared, not copied).
  static Engine from_model(const CausalLM& m, EngineOptions opt = {});
  // The one loader for model directories (generate, eval, bench): config.json + safetensors.
  static Engine load(const std::string& dir, EngineOptions opt = {});

  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;
  ~Engine();

  const ModelConfig& config() const;
  // mla_absorb may change between steps; kv_dtype applies to sequences added afterwards (each keeps the cache type
  // it was added with); fuse and interleave act at load only.
  EngineOptions& options();

  // Sequences: each has its own cache and length (its next token's position).
  SeqId add_sequence();
  void free_sequence(SeqId id);
  void reset_sequence(SeqId id);  // back to length 0, cache memory kept
  // A new sequence with a copy of `id`'s cache and length: a shared prefix computed once (the choices of a
  // multiple-choice item, several completions of one prompt) goes on in each copy independently.
  SeqId fork_sequence(SeqId id);
  int64_t length(SeqId id) const;
  size_t num_sequences() const;

  // Appends `tokens` to the sequence. Returns f32 logits [T, vocab] when all_logits, else [1, vocab] for the last.
  // Positions past max_position_embeddings and ids outside the vocabulary are errors (nothing is appended then).
  Tensor prefill(SeqId id, std::span<const int32_t> tokens, bool all_logits = false);
  // One token for each of several distinct sequences (any lengths); returns logits [n, vocab], row i for seqs[i].
  Tensor decode(const std::vector<SeqId>& seqs, const std::vector<int32_t>& tokens);

  // Bytes of weights one decode step reads for one token: every linear weight a token passes through (routed
  // experts counted num_experts_per_tok of n_routed_experts) plus one embedding row.
  double weight_bytes_per_token() const;
  // The same bytes by the format they are stored in (sums to weight_bytes_per_token()).
  std::map<WeightFormat, double> weight_bytes_by_format() const;
  // Multiply-add FLOPs (2 per weight) of the weight products one token passes through, without the LM head
  // (routed experts counted num_experts_per_tok of n_routed_experts); and the LM head's.
  double matmul_flops_per_token() const;
  double lm_head_flops() const;
  // Bytes held by the sequence's cache for its current length.
  size_t cache_bytes(SeqId id) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace lmforge::model
