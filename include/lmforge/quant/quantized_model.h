// Quantized model directories (docs/QUANTIZATION.md): config.json with a `quantization_config` entry, and
// model.safetensors holding each quantized linear weight NAME as its codes (plus NAME.scales / NAME.zeros where the
// format has them) and every other tensor in f32. The engine is built from load_quantized_model(); evaluation can
// use load_causal_lm_any(), which dequantizes into an f32 CausalLM.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "lmforge/core/weight_matrix.h"
#include "lmforge/model/model.h"

namespace lmforge::quant {

struct QuantConfig {
  std::string method = "rtn";                        // rtn | gptq | awq (how the codes were chosen)
  WeightFormat format = WeightFormat::Q8_0;          // every quantized linear projection
  WeightFormat lm_head_format = WeightFormat::Q8_0;  // lm_head.weight (untied models)
  std::vector<std::string> not_quantized;            // linears kept f32 (input size not a multiple of the block)
  // Per-tensor exceptions to format / lm_head_format: mixes such as llama.cpp's Q4_K_M (q6_K for some v_proj and
  // down_proj), a GGUF import keeping each tensor's own type, a k-quant's fallback for inputs 256 does not divide.
  std::map<std::string, WeightFormat> tensor_formats;
  nlohmann::json extra = nlohmann::json::object();  // method details (calibration tokens, alpha, damping...)

  nlohmann::json to_json() const;
  // `source` names the file in errors.
  static QuantConfig from_json(const nlohmann::json& j, const std::string& source);
};

struct QuantizedWeights {
  model::ModelConfig config;
  bool quantized = false;  // false: a plain f32/bf16/f16 model dir (linears come back as F32 WeightMatrix)
  QuantConfig quant;
  std::map<std::string, WeightMatrix> linear;  // every linear projection and lm_head (HF names)
  std::map<std::string, Tensor> dense;         // embeddings, norms, router gates, biases, buffers: f32
};

// True for the weights that quantization applies to: attention / MLA / MLP / expert projections and lm_head.
// Router gates (mlp.gate.weight), embeddings and norms stay f32.
bool is_linear_weight(const std::string& name);

// The weights a quantized dir stores in a WeightFormat: the linears, and a tied model's embedding, which is its LM
// head too (so it takes lm_head_format: the largest matrix of a small tied model, read by every decode step).
bool quantizable_weight(const std::string& name, const model::ModelConfig& c);

// The format `name` gets under `q` (f32 when it is listed as not quantized; its tensor_formats entry where it has
// one; lm_head_format for the LM head and a tied embedding).
WeightFormat format_for(const QuantConfig& q, const std::string& name);

// Reads a model dir, quantized or not. Every tensor is checked against the config (names, shapes, dtypes, the
// quantized parts' sizes); problems are an lmforge::Error naming the file and the tensor.
QuantizedWeights load_quantized_model(const std::string& dir);
// True when dir/config.json has a quantization_config (false when it is missing or unreadable: loaders report that).
bool is_quantized_dir(const std::string& dir);

// An f32 CausalLM with the dequantized weights (the reference for the quantized engine, and what eval runs).
model::CausalLM dequantize_to_causal_lm(const QuantizedWeights& q);
// Either kind of directory as an f32 CausalLM.
model::CausalLM load_causal_lm_any(const std::string& dir);

// Writes `dir` (created if needed): model.safetensors, then config.json with quantization_config, both atomically;
// copies tokenizer.json, tokenizer_config.json, generation_config.json and special_tokens_map.json from `src_dir`
// where they exist.
void save_quantized_model(const std::string& dir, const QuantizedWeights& q, const std::string& src_dir);

// Round-to-nearest: every linear weight of `m` in q.format (lm_head in q.lm_head_format).
QuantizedWeights quantize_rtn(const model::CausalLM& m, QuantConfig q,
                              const std::map<std::string, std::vector<float>>* importance = nullptr);
// One tensor of quantize_rtn into q (q.quant the configuration): a quantizable weight into q.linear in its format
// (f32, and named in q.quant.not_quantized, where its input size is not a multiple of the format's block), any other
// tensor into q.dense as it is. quantize_rtn is this for every tensor in state() order.
// `importance`: per-input-column importance by name (imatrix.h); where it holds `name` and the format uses one (q4_0,
// the k-quants) the rounding minimises the importance-weighted error, as llama-quantize --imatrix.
void add_rtn(QuantizedWeights& q, const std::string& name, const Tensor& t,
             const std::map<std::string, std::vector<float>>* importance = nullptr);
// The same, read tensor by tensor from a plain model dir (f32/bf16/f16, sharded too) with no f32 model in memory:
// the peak is the quantized result plus one tensor. Checks the tensors against the config as CausalLM::load does.
// `bytes_in` receives the weights' size as stored.
QuantizedWeights quantize_rtn_dir(const std::string& dir, QuantConfig q, size_t* bytes_in = nullptr,
                                  const std::map<std::string, std::vector<float>>* importance = nullptr);

// llama.cpp's k-quant file types as llama-quantize makes them: Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M.
struct KMix {
  WeightFormat base = WeightFormat::Q4_K;  // q4_K or q5_K
  bool medium = true;                      // _M (else _S)
};
// "q4_K_S" / "q4_K_M" / "q5_K_S" / "q5_K_M", any case; false for anything else.
bool parse_k_mix(const std::string& name, KMix* mix);
std::string k_mix_name(const KMix& mix);  // "q4_K_M" ...

// The tensors llama-quantize's per-tensor rules (llama_tensor_get_type) single out.
enum class KRole { Other, AttnV, AttnK, AttnOutput, FfnDown };
// The format llama-quantize gives a tensor of `role` in decoder layer `layer` of n_layers under `mix`, for a model
// with n_experts routed experts (0: dense), before the fallback for inputs 256 does not divide: _M: q6_K for attn_v
// and ffn_down (experts' and shared experts' too) in the layers use_more_bits picks; Q4_K_S: q5_K for the first four
// attn_v and the first eighth of the layers' ffn_down; with exactly 8 experts (Mixtral's rule, which DeepSeek-style
// models with 8 experts get as well) attn_v and attn_k at q8_0 and, for the Q4_K types, attn_output at q5_K; else
// mix.base. (The LM head's q6_K is the caller's.)
WeightFormat k_mix_format(const KMix& mix, KRole role, int64_t layer, int64_t n_layers, int64_t n_experts);

// Sets q's format, lm_head_format (q6_K) and tensor_formats to `mix` for config c (k_mix_format for every linear).
void apply_k_mix(QuantConfig& q, const model::ModelConfig& c, const KMix& mix);
// llama-quantize's use_more_bits: the layers of n whose v / down projections the M mixes keep at 6 bits.
bool use_more_bits(int64_t layer, int64_t n_layers);

// Splits a model's state into linears (as F32 WeightMatrix) and dense tensors.
QuantizedWeights split_state(const model::CausalLM& m);

}  // namespace lmforge::quant
