// The decoder: a config-driven llama / DeepSeek-V3 causal language model on the engine's ops.
//
// Parameters carry Hugging Face names (model.layers.N.self_attn.q_proj.weight, ...), so a model directory
// (config.json + model.safetensors) moves between lmforge and transformers unchanged.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lmforge/core/autograd.h"
#include "lmforge/model/config.h"

namespace lmforge::model {

struct ForwardOptions {
  bool training = false;           // router noise, expert capacity and the auxiliary loss apply
  bool checkpoint_blocks = false;  // activation checkpointing per decoder block (with a tape)
  uint64_t seed = 0;               // router noise
  int64_t pos0 = 0;                // position of the first token
  // Called before each linear projection (attention, MLA, MLP, experts, lm_head; not the router) with the weight's
  // HF name and the projection's input [..., in_features]: how quantizers collect calibration statistics.
  std::function<void(const std::string& weight_name, const Tensor& input)> observe;
};

struct ExpertLoad {
  int64_t layer = 0;
  std::vector<int64_t> tokens;  // per routed expert
  int64_t dropped = 0;          // assignments dropped by the capacity limit
};

struct ForwardResult {
  Var logits;    // [B, T, vocab]
  Var aux_loss;  // [1]: sum of the MoE layers' load-balancing losses (training, aux_loss_alpha > 0); else undefined
  std::vector<ExpertLoad> expert_load;
};

class CausalLM {
 public:
  // Parameters allocated and zeroed; use init_random or load_weights.
  explicit CausalLM(ModelConfig config);
  // Every parameter named, with no value (no memory) until one is set through parameters()[i].mutable_value();
  // buffers allocated and zeroed. For work that brings a model in a part at a time (quant::StreamedModel).
  static CausalLM without_weights(ModelConfig config);
  // Every tensor name (parameters, then buffers) with its shape, in state() order, without allocating the model:
  // what loaders of other layouts (quantized dirs) check a file against.
  static std::vector<std::pair<std::string, Shape>> tensor_shapes(const ModelConfig& config);
  // Tensors a checkpoint may carry beyond tensor_shapes(), which loaders skip: rotary inv_freq buffers and layers
  // past num_hidden_layers (DeepSeek-V3's multi-token-prediction layer). Any other extra tensor is an error.
  static bool skippable_extra_tensor(const std::string& name, const ModelConfig& config);

  // normal(0, initializer_range) for matrices and embeddings, ones for norms, zeros for biases.
  void init_random(uint64_t seed);

  // A model directory: config.json and model.safetensors (or a sharded model.safetensors.index.json).
  static CausalLM load(const std::string& dir);
  // Writes config.json and model.safetensors atomically (weights in `dtype`: f32, bf16 or f16).
  void save(const std::string& dir, DType dtype = DType::F32) const;

  // Replaces every tensor from `tensors` (HF names; converted to f32). Missing or misshapen tensors are errors
  // naming `source` and the tensor; unexpected ones too, except rotary inv_freq buffers and layers past
  // num_hidden_layers (DeepSeek-V3's multi-token-prediction layer).
  void load_weights(const std::map<std::string, Tensor>& tensors, const std::string& source);

  const ModelConfig& config() const { return cfg_; }
  // Trainable parameters, in HF order.
  const std::vector<Var>& parameters() const { return params_; }
  // Every tensor of the checkpoint: parameters and buffers (e_score_correction_bias), with HF names.
  std::vector<std::pair<std::string, Tensor>> state() const;
  int64_t num_parameters() const;

  // ids i32 [B, T].
  ForwardResult forward(const Tensor& ids, const ForwardOptions& opt = {}) const;
  // The forward pass a decoder layer at a time, for work that goes through a model layer by layer (GPTQ / AWQ
  // calibration keeps only the hidden states between layers): the embedding rows of ids i32 [B, T] as [B, T, D],
  // and decoder block `layer` on hidden states x [B, T, D] (positions from opt.pos0; inference only: no tape, no
  // training routing). forward() is embed, the blocks in turn, then the final norm and the LM head, with the same
  // arithmetic.
  Tensor embed(const Tensor& ids) const;
  Tensor forward_layer(int64_t layer, const Tensor& x, const ForwardOptions& opt = {}) const;

  // Auxiliary-loss-free balancing (DeepSeek-V3): each MoE layer's e_score_correction_bias moves by `speed`
  // towards the mean load (up for under-loaded experts, down for over-loaded ones).
  void update_expert_bias(const std::vector<ExpertLoad>& load, double speed);

  struct Impl;

 private:
  ModelConfig cfg_;
  std::shared_ptr<Impl> impl_;
  std::vector<Var> params_;

  enum class Build { Allocate, ShapesOnly, NoValues };
  CausalLM(ModelConfig config, Build how);
  void build(Build how);
};

// Mean next-token cross-entropy of logits [B, T, V] against ids [B, T]: position t predicts ids[t + 1]
// (the Hugging Face causal-LM convention); or against explicit targets [B, T] (-100 ignored).
Var causal_lm_loss(const Var& logits, const Tensor& ids);
Var next_token_loss(const Var& logits, const Tensor& targets);

}  // namespace lmforge::model
