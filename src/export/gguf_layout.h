// Tensor layout conversions between Hugging Face checkpoints and llama.cpp's GGUF conventions. Private to src/export.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmforge::exporter {

// llama.cpp's converter reorders the rows of q_proj/k_proj (and their biases) for architecture "llama": HF rotates
// the two halves of each head (x[i], x[i + d/2]), GGUF's RoPE rotates adjacent pairs (x[2i], x[2i+1]). Within each
// head, GGUF row 2i + j is HF row j * d/2 + i. `t` is [n_head * d, ...] (any trailing dims), of any dtype (kept:
// q8_0 / q4_0 rows move whole).
Tensor permute_qk_to_gguf(const Tensor& t, int64_t n_head);
Tensor unpermute_qk_from_gguf(const Tensor& t, int64_t n_head);
// The GGUF row that HF row `r` of such a tensor comes from, for heads of `d` rows.
inline int64_t gguf_qk_row(int64_t r, int64_t d) {
  const int64_t h = r / d, k = r % d, half = d / 2;
  return h * d + 2 * (k % half) + k / half;
}

// llama.cpp's deepseek2 split of kv_b_proj [H * (nope + v), r] into attn_k_b [H, r, nope] (transposed) and
// attn_v_b [H, v, r], and the inverse.
void split_kv_b(const Tensor& kv_b, int64_t n_head, int64_t nope, int64_t v, Tensor& k_b, Tensor& v_b);
Tensor join_kv_b(const Tensor& k_b, const Tensor& v_b);

// The shortest decimal that reads back as the same float: GGUF stores f32, config.json wants 1e-06, not
// 9.99999997e-07.
double shortest_float(double f32_value);

}  // namespace lmforge::exporter
