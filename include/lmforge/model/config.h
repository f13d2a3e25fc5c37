// Model configuration: Hugging Face config.json field names of LlamaForCausalLM (model_type "llama"),
// Qwen2ForCausalLM (model_type "qwen2": llama with q/k/v biases) and DeepseekV3ForCausalLM (model_type "deepseek_v3").
// Unknown keys are ignored (HF configs carry many); known keys with a wrong type or an inconsistent value are errors
// naming the file and the field.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace lmforge::model {

struct RopeScaling {
  std::string type;  // "yarn", "llama3" (Llama-3.1's) or "linear" (positions / factor); others are rejected
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;          // yarn, llama3
  double beta_fast = 32.0, beta_slow = 1.0;              // yarn
  double mscale = 1.0, mscale_all_dim = 0.0;             // yarn
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
};

struct ModelConfig {
  std::string model_type;  // "llama" | "qwen2" (llama with q/k/v biases) | "deepseek_v3"
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0;
  int64_t num_attention_heads = 0, num_key_value_heads = 0, head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6, rope_theta = 10000.0, initializer_range = 0.02;
  std::optional<RopeScaling> rope_scaling;
  bool attention_bias = false, tie_word_embeddings = false;  // attention_bias: q/k/v (and o_proj unless qwen2)
  bool o_proj_bias = false;  // llama: attention_bias; qwen2: false (Qwen2 has q/k/v biases only)
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  // Hybrid global/local attention: per-layer "full_attention" | "sliding_attention".
  int64_t sliding_window = 0;  // 0: none
  std::vector<std::string> layer_types;

  // DeepSeek MLA (used when model_type == "deepseek_v3").
  int64_t q_lora_rank = 0;  // 0: null (q projected directly)
  int64_t kv_lora_rank = 0, qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;

  // DeepSeekMoE.
  int64_t moe_intermediate_size = 0, n_shared_experts = 0, n_routed_experts = 0, num_experts_per_tok = 0;
  int64_t first_k_dense_replace = 0, moe_layer_freq = 1, n_group = 1, topk_group = 1;
  std::string scoring_func = "softmax";  // softmax | sigmoid
  std::string topk_method = "greedy";    // greedy | group_limited_greedy | noaux_tc
  bool norm_topk_prob = false, seq_aux = false;
  double routed_scaling_factor = 1.0, aux_loss_alpha = 0.0;
  // lmforge's training-time MoE extras (our own keys; transformers ignores them):
  double moe_capacity_factor = 0.0;    // > 0: each expert takes at most ceil(f * tokens * k / experts) tokens
  double moe_router_noise_std = 0.0;   // Gaussian noise on router logits while training
  double moe_bias_update_speed = 0.0;  // noaux_tc bias step per training step (DeepSeek-V3's gamma); 0: off

  nlohmann::json raw;  // the file as read, written back unchanged by save

  bool is_deepseek() const { return model_type == "deepseek_v3"; }
  bool is_qwen2() const { return model_type == "qwen2"; }
  bool is_moe_layer(int64_t layer) const;
  bool is_sliding_layer(int64_t layer) const;
  // Number of values in every tensor of the model's checkpoint (as model.safetensors holds them).
  int64_t num_parameters() const;
};

// `source` names the file in error messages.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source);
ModelConfig load_model_config(const std::string& path);
// Throws, naming `path`, when the config has a quantization_config (a quantized model dir, docs/QUANTIZATION.md):
// for the commands that need the f32 / bf16 / f16 weights a quantized dir was made from (training, pruning, RTN
// quantization from the files, ONNX export); `hint` is added to the message.
void refuse_quantized_dir(const ModelConfig& c, const std::string& path, const std::string& hint = "");

}  // namespace lmforge::model
