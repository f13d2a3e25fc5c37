// DeepSeekMoE routing and dispatch.
//
// route() turns router logits into each token's experts and weights, as DeepSeek-V2/V3 do: softmax or sigmoid
// scores; greedy top-k, group-limited greedy (V2) or noaux_tc (V3: selection on scores plus a per-expert bias,
// groups ranked by the sum of their top two, weights from the unbiased scores); optional normalisation and
// routed_scaling_factor. Training extras: Gaussian noise on the logits, a capacity per expert with token
// dropping (first come, first served in token order), and the load-balancing auxiliary loss (switch style, or
// per sequence with seq_aux; sigmoid scores are normalised per token first, as DeepSeek-V3 defines it).
// It is one differentiable op: gradients reach the logits from the weights and from the auxiliary loss.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lmforge/core/autograd.h"
#include "lmforge/model/config.h"

namespace lmforge::model {

struct RouteOptions {
  bool sigmoid = false;           // scoring_func
  std::string method = "greedy";  // greedy | group_limited_greedy | noaux_tc
  int64_t top_k = 1, n_group = 1, topk_group = 1;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  // Training only.
  double aux_loss_alpha = 0.0;
  bool seq_aux = false;
  int64_t batch = 1;             // sequences in the N tokens (seq_aux)
  double capacity_factor = 0.0;  // 0: no capacity limit
  double noise_std = 0.0;
  uint64_t noise_seed = 0;
};

struct Route {
  Var weights;                // [N, k], 0 where an assignment was dropped
  Tensor experts;             // i32 [N, k], -1 where dropped
  Var aux_loss;               // [1], undefined without aux loss
  std::vector<int64_t> load;  // tokens each expert received
  int64_t dropped = 0;
};

// The inference part of RouteOptions from a model config (scoring, top-k method and groups, normalisation, scale);
// the training-only fields keep their defaults.
RouteOptions route_options(const ModelConfig& c);

// logits [N, E] (f32 or f64); bias [E] (noaux_tc) or undefined.
Route route(const Var& logits, const Tensor& bias, const RouteOptions& opt);

// Tokens per expert from a route: rows (token index) and slots (n * k + j) in token order.
struct Dispatch {
  std::vector<Tensor> rows, slots;  // i32, one per expert (empty tensors for idle experts)
};
Dispatch dispatch(const Route& r, int64_t n_experts);

}  // namespace lmforge::model
