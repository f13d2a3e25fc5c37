#include "lmforge/model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace lmforge::model {

namespace {

double yarn_mscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

// Dimension index whose wavelength fits `rotations` turns in the original context (YaRN paper, eq. 17-18).
double correction_dim(double rotations, int64_t rot, double base, int64_t max_pos) {
  return static_cast<double>(rot) * std::log(static_cast<double>(max_pos) / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(base));
}

}  // namespace

std::vector<double> rope_inv_freq(const ModelConfig& c, int64_t rot) {
  const int64_t half = rot / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(c.rope_theta, 2.0 * static_cast<double>(i) / static_cast<double>(rot));
  if (!c.rope_scaling || c.rope_scaling->factor <= 1.0) return inv;
  const RopeScaling& s = *c.rope_scaling;
  if (s.type == "linear") {  // transformers' linear scaling: every frequency / factor (positions / factor)
    for (double& f : inv) f /= s.factor;
    return inv;
  }
  if (s.type == "llama3") {
    // Llama-3.1 (HF _compute_llama3_parameters): wavelengths shorter than original / high_freq_factor keep their
    // frequency, longer than original / low_freq_factor are divided by factor, and in between the two blend.
    const double orig = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = orig / s.low_freq_factor, high_wavelen = orig / s.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f /= s.factor;
        continue;
      }
      const double smooth = (orig / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = (1.0 - smooth) * f / s.factor + smooth * f;
    }
    return inv;
  }
  double low = std::floor(correction_dim(s.beta_fast, rot, c.rope_theta, s.original_max_position_embeddings));
  double high = std::ceil(correction_dim(s.beta_slow, rot, c.rope_theta, s.original_max_position_embeddings));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(rot - 1));
  if (low == high) high += 0.001;  // avoid a division by zero in the ramp
  for (int64_t i = 0; i < half; ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double extrapolate = 1.0 - ramp;  // high-frequency dims keep their frequency
    inv[i] = inv[i] / s.factor * (1.0 - extrapolate) + inv[i] * extrapolate;
  }
  return inv;
}

double rope_attention_factor(const ModelConfig& c) {
  if (!c.rope_scaling || c.rope_scaling->type != "yarn") return 1.0;
  const RopeScaling& s = *c.rope_scaling;
  return yarn_mscale(s.factor, s.mscale) / yarn_mscale(s.factor, s.mscale_all_dim);
}

double mla_softmax_scale(const ModelConfig& c) {
  double scale = 1.0 / std::sqrt(static_cast<double>(c.qk_nope_head_dim + c.qk_rope_head_dim));
  if (c.rope_scaling && c.rope_scaling->type == "yarn" && c.rope_scaling->mscale_all_dim != 0.0) {
    const double m = yarn_mscale(c.rope_scaling->factor, c.rope_scaling->mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

std::pair<Tensor, Tensor> rope_tables(const ModelConfig& c, int64_t rot, int64_t T, int64_t pos0, DType dtype) {
  const std::vector<double> inv = rope_inv_freq(c, rot);
  const double af = rope_attention_factor(c);
  const int64_t half = rot / 2;
  std::vector<double> cs(static_cast<size_t>(T * half)), sn(cs.size());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      // As HF: the angle is formed in f32 (position times f32 inverse frequency), then cos/sin.
      const float ang = static_cast<float>(pos0 + t) * static_cast<float>(inv[i]);
      cs[t * half + i] = std::cos(static_cast<double>(ang)) * af;
      sn[t * half + i] = std::sin(static_cast<double>(ang)) * af;
    }
  }
  return {Tensor::from_vector(cs, {T, half}).to(dtype), Tensor::from_vector(sn, {T, half}).to(dtype)};
}

}  // namespace lmforge::model
