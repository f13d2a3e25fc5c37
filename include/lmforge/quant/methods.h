// Calibrated quantization methods (GPTQ, AWQ) and structured FFN pruning. docs/QUANTIZATION.md describes each.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "lmforge/quant/quantized_model.h"

namespace lmforge::quant {

using Log = std::function<void(const std::string&)>;

// ---- calibration data ----
struct CalibOptions {
  std::string path;       // text, .jsonl, or a token-shard dir (train split)
  std::string model_dir;  // its tokenizer.json tokenizes text
  int64_t tokens = 4096;  // total calibration tokens
  int64_t ctx = 256;      // sequence length
};
// Sequences i32 [1, ctx] (the last one may be shorter), `tokens` in all (fewer if the data is shorter).
std::vector<Tensor> load_calibration(const CalibOptions& opt);

// ---- GPTQ ----
struct GptqOptions {
  double damp = 0.01;      // added to H's diagonal, as a fraction of its mean
  int64_t block = 128;     // lazy-batch block (columns)
  bool act_order = false;  // columns in order of decreasing diag(H); group parameters from the original groups
};

// One weight [rows, cols] (f32, row-major) with Hessian H [cols, cols] (2/n XᵀX, double, row-major) into
// q4_g128 or q4_g128_asym. Columns whose diagonal is 0 (inputs never seen) are quantized as zeros.
WeightMatrix gptq_quantize(const float* w, int64_t rows, int64_t cols, std::vector<double> H, WeightFormat format,
                           const GptqOptions& opt);

// Whole model, layer by layer: each decoder layer's Hessians are collected from calibration inputs that have
// passed through the already-quantized earlier layers (each layer runs twice over the calibration set: once for
// its Hessians, once through its quantized weights). lm_head is quantized by round-to-nearest in
// q.lm_head_format. m's quantized linears are overwritten with their dequantized values as it goes (no second
// copy of the model): pass clone_model(m) to keep the original.
QuantizedWeights quantize_gptq(model::CausalLM& m, QuantConfig q, const std::vector<Tensor>& calib,
                               const GptqOptions& opt, const Log& log = {});
// quantize_gptq on a plain model dir (f32/bf16/f16, sharded too) read a decoder layer at a time: one layer's f32
// weights in memory beside the result, not the model (a 7B needs ~1 GB of f32 weights at a time instead of 28 GB).
// The same result as quantize_gptq on CausalLM::load(dir). `bytes_in`: the weights' size as stored.
QuantizedWeights quantize_gptq_dir(const std::string& dir, QuantConfig q, const std::vector<Tensor>& calib,
                                   const GptqOptions& opt, const Log& log = {}, size_t* bytes_in = nullptr);

// ---- AWQ ----
struct AwqOptions {
  int grid = 20;             // alpha in {0, 1/grid, ..., 1}
  bool clip_search = false;  // also search a per-row max-clipping ratio per group of 128
  int64_t max_rows = 4096;   // calibration rows used for each search (subsampled evenly)
};

// Activation-aware scaling: for each group of linears sharing an input (q/k/v after input_layernorm, gate/up
// after post_attention_layernorm, o after v, down after up), s = mean|x|^alpha per input channel, weights times
// s, the inverse folded into the previous op; alpha minimises the groups' output error after quantization. The
// calibration set goes through the model a layer at a time (one pass per group, one to the next layer). m's weights
// are overwritten with the scaled (and clipped) ones as it goes: pass clone_model(m) to keep the original.
QuantizedWeights quantize_awq(model::CausalLM& m, QuantConfig q, const std::vector<Tensor>& calib,
                              const AwqOptions& opt, const Log& log = {});
// quantize_awq on a plain model dir read a decoder layer at a time, as quantize_gptq_dir.
QuantizedWeights quantize_awq_dir(const std::string& dir, QuantConfig q, const std::vector<Tensor>& calib,
                                  const AwqOptions& opt, const Log& log = {}, size_t* bytes_in = nullptr);

// ---- pruning ----
struct PruneReport {
  int64_t intermediate_before = 0, intermediate_after = 0;
  int64_t moe_intermediate_before = 0, moe_intermediate_after = 0;
  int64_t params_before = 0, params_after = 0;
};
// Removes the fraction `ratio` of FFN channels with the smallest L1 norm (|gate row| + |up row| + |down column|)
// from every dense MLP and every expert, the same count per MLP so intermediate_size / moe_intermediate_size stay
// uniform. Returns the pruned f32 model.
model::CausalLM prune_ffn(const model::CausalLM& m, double ratio, PruneReport* report = nullptr);

// Independent copy of a model (its own parameter memory).
model::CausalLM clone_model(const model::CausalLM& m);

}  // namespace lmforge::quant
