// The decoder's parameter layout, shared by construction/loading (model.cpp) and the forward pass (forward.cpp).
#pragma once
#include <vector>

#include "lmforge/model/model.h"

namespace lmforge::model {

struct Mlp {  // SwiGLU: down(silu(gate x) * up x)
  Var gate, up, down;
};

struct LayerParams {
  Var input_norm, post_norm;
  // llama attention (biases only with attention_bias)
  Var q, k, v, o, q_bias, k_bias, v_bias, o_bias;
  // MLA (q_proj reuses `q` when q_lora_rank is null)
  Var q_a, q_a_norm, q_b, kv_a, kv_a_norm, kv_b;
  // FFN: dense, or MoE
  bool moe = false;
  Mlp mlp;
  Var router;
  Tensor expert_bias;  // e_score_correction_bias (noaux_tc), a buffer
  std::vector<Mlp> experts;
  Mlp shared;  // defined when n_shared_experts > 0
};

struct CausalLM::Impl {
  Var embed, norm, lm_head;  // lm_head undefined when tied
  std::vector<LayerParams> layers;
  std::vector<std::pair<std::string, Var>> named;           // trainable, HF names, HF order
  std::vector<std::pair<std::string, Tensor*>> buffers;     // non-trainable tensors saved with the model
  std::vector<std::pair<std::string, Shape>> param_shapes;  // named's shapes (all a shapes-only build records)
};

}  // namespace lmforge::model
