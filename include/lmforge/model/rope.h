// Rotary position tables for a model config: plain RoPE with rope_theta, or YaRN (rope_scaling type "yarn"),
// which blends interpolated and extrapolated frequencies and scales cos/sin (and, for deepseek_v3, the softmax),
// Llama-3.1's per-frequency divisors ("llama3"), or linear scaling ("linear": every frequency / factor).
#pragma once
#include <utility>
#include <vector>

#include "lmforge/core/tensor.h"
#include "lmforge/model/config.h"

namespace lmforge::model {

// Inverse frequencies for a rotary dimension `rot` (rot/2 values).
std::vector<double> rope_inv_freq(const ModelConfig& c, int64_t rot);
// Factor cos/sin are multiplied by (YaRN's attention factor; 1 without scaling).
double rope_attention_factor(const ModelConfig& c);
// Softmax scale of a deepseek_v3 attention: (nope + rope)^-1/2, times mscale(factor, mscale_all_dim)^2 with YaRN.
double mla_softmax_scale(const ModelConfig& c);
// cos/sin [T, rot/2] for positions pos0 .. pos0+T-1 (f32), as ops::rope takes them.
std::pair<Tensor, Tensor> rope_tables(const ModelConfig& c, int64_t rot, int64_t T, int64_t pos0 = 0,
                                      DType dtype = DType::F32);

}  // namespace lmforge::model
