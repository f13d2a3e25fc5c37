// Differentiable ops on Vars. Each checks its inputs (shapes and dtypes, naming both on a mismatch), computes
// with the CPU kernels, and records its backward when a tape is active. Float inputs may be f32, f64 (gradient
// checks) or bf16/f16 (storage only: computed in f32, accumulated in f32, results in f32).
#pragma once
#include <cstdint>
#include <utility>

#include "lmforge/core/autograd.h"
#include "lmforge/kernels/cpu.h"

namespace lmforge::ops {

// ---- linear algebra ----
// a [..., M, K] (or [..., K, M] with trans_a), b [K, N] (or [N, K] with trans_b) shared across a's leading
// dims, or batched with the same leading dims as a. Result [..., M, N].
Var matmul(const Var& a, const Var& b, bool trans_a = false, bool trans_b = false);
// x [..., in] times W [out, in] transposed, as nn.Linear without bias (HF weight layout).
inline Var linear(const Var& x, const Var& w) {
  return matmul(x, w, false, true);
}

// ---- element-wise (b the same shape as a, a suffix of a's shape, or one element) ----
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var scale(const Var& a, double s);
Var sum(const Var& a);   // all elements -> shape [1]
Var mean(const Var& a);  // all elements -> shape [1]

// ---- shape (views where possible; gradients flow back) ----
Var reshape(const Var& a, const Shape& shape);
Var transpose(const Var& a, int64_t d0, int64_t d1);               // result is contiguous
Var slice(const Var& a, int64_t dim, int64_t start, int64_t end);  // result is contiguous
Var concat(const std::vector<Var>& parts, int64_t dim);

// ---- layers ----
// weight [V, D], ids i32 [...] -> [..., D]
Var embedding(const Var& weight, const Tensor& ids);
// x [..., D], w [D]
Var rmsnorm(const Var& x, const Var& w, double eps);
// x [B, T, H, D]; cos/sin [T, rot/2] (see rope_tables); rotates the first `rot` dims of each head.
Var rope(const Var& x, const Tensor& cos, const Tensor& sin, kernels::cpu::RopeLayout layout);
// cos/sin [T, rot/2] for absolute positions pos0 .. pos0+T-1 with frequencies theta^(-2i/rot), dtype f32/f64.
std::pair<Tensor, Tensor> rope_tables(int64_t T, int64_t rot, double theta, int64_t pos0 = 0, DType dtype = DType::F32);
Var silu(const Var& x);
Var swiglu(const Var& gate, const Var& up);  // silu(gate) * up
Var softmax(const Var& x);                   // over the last dim
// q [B, Tq, Hq, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv] -> [B, Tq, Hq, Dv] (see kernels::cpu::attention).
struct AttentionOptions {
  bool causal = true;
  int64_t window = 0;    // 0: full causal; W > 0: sliding window of W keys
  int64_t q_offset = 0;  // absolute position of query 0
  double scale = 0.0;    // 0: 1/sqrt(Dk)
};
Var attention(const Var& q, const Var& k, const Var& v, const AttentionOptions& opt = {});
// logits [N, V], targets i32 [N]: mean negative log-likelihood over targets != ignore_index -> shape [1].
Var cross_entropy(const Var& logits, const Tensor& targets, int32_t ignore_index = -100);

// ---- routing (MoE) ----
// Top-k of each row of x [N, E]: values (differentiable) and i32 indices.
std::pair<Var, Tensor> topk(const Var& x, int64_t k);
// x [N, D], idx i32 [M] -> [M, D]
Var gather_rows(const Var& x, const Tensor& idx);
// Returns a [rows, D] tensor with src [M, D] added at rows idx [M] (duplicates accumulate).
Var scatter_add_rows(const Var& src, const Tensor& idx, int64_t rows);
// x [M, D] with row m multiplied by w[m] (w of shape [M] or [M, 1]): the MoE combine weights.
Var scale_rows(const Var& x, const Var& w);

}  // namespace lmforge::ops
