// CPU kernels: the math behind each op, on raw row-major buffers. T is float (the production path) or double
// (used by the gradient checks, which run the same code in double precision). Each kernel splits its work over
// the process's thread pool unless it says "serial"; none throws.
//
// A second backend (CUDA) implements the same list in src/kernels/cuda/ behind the same signatures.
#pragma once
#include <cstdint>

namespace lmforge::kernels::cpu {

// ---- GEMM ----
// Row-major C[M,N] = alpha * op(A) * op(B) + beta * C, op(X) = X or Xᵀ. lda/ldb/ldc are row strides.
// gemm splits over the thread pool with OpenBLAS kept single-threaded; gemm_serial runs on the calling thread
// (for use inside parallel regions).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);
template <typename T>
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                 const T* B, int64_t ldb, T beta, T* C, int64_t ldc);
// Sets OpenBLAS's own thread count (1 in normal operation; benchmarks raise it to time raw OpenBLAS).
void blas_set_threads(int n);

// ---- element-wise (n elements, contiguous) ----
template <typename T>
void add(const T* a, const T* b, T* y, int64_t n);
template <typename T>
void sub(const T* a, const T* b, T* y, int64_t n);
template <typename T>
void mul(const T* a, const T* b, T* y, int64_t n);
template <typename T>
void scale(const T* a, T s, T* y, int64_t n);
template <typename T>
void axpy(T alpha, const T* x, T* y, int64_t n);  // y += alpha * x
// y[r, :] = a[r, :] + b[:] (or *), for `rows` rows of length n.
template <typename T>
void add_rowvec(const T* a, const T* b, T* y, int64_t rows, int64_t n);
template <typename T>
void mul_rowvec(const T* a, const T* b, T* y, int64_t rows, int64_t n);
// out[:] = sum over rows of a[r, :]   (deterministic: fixed blocking, independent of thread count)
template <typename T>
void sum_rows(const T* a, T* out, int64_t rows, int64_t n);
// Sum of all elements / of squares, accumulated in double, deterministic.
template <typename T>
double sum(const T* a, int64_t n);
template <typename T>
double sum_squares(const T* a, int64_t n);

// Index of the largest element, the first of equal ones; NaNs are skipped (0 when n == 0 or all are NaN). Serial:
// for a row of logits (greedy sampling).
int64_t argmax(const float* x, int64_t n);

// ---- activations ----
template <typename T>
void silu(const T* x, T* y, int64_t n);
template <typename T>
void silu_backward(const T* x, const T* dy, T* dx, int64_t n);
// y = silu(g) * u
template <typename T>
void swiglu(const T* g, const T* u, T* y, int64_t n);
template <typename T>
void swiglu_backward(const T* g, const T* u, const T* dy, T* dg, T* du, int64_t n);

// ---- normalisation ----
// y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps); rstd is saved per row for backward.
template <typename T>
void rmsnorm(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t d, double eps);
// dx (overwritten) and dw (accumulated: dw += ...).
template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t rows, int64_t d);

// ---- RoPE ----
enum class RopeLayout { HalfSplit, Interleaved };
// x: [B, T, H, D] (row stride D per head), cos/sin: [T, rot/2] for the first `rot` dims of each head (rot <= D,
// even); dims past `rot` are copied. inverse=true rotates by -angle (the backward pass).
template <typename T>
void rope(const T* x, T* y, const T* cos, const T* sin, int64_t B, int64_t Tn, int64_t H, int64_t D, int64_t rot,
          RopeLayout layout, bool inverse);

// ---- softmax / cross-entropy ----
template <typename T>
void softmax(const T* x, T* y, int64_t rows, int64_t n);
template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t n);
// Per-row loss (0 for ignored rows) and log-sum-exp. Targets outside [0, V) other than ignore_index are the
// caller's to reject.
template <typename T>
void cross_entropy(const T* logits, const int32_t* targets, T* loss_rows, T* lse, int64_t rows, int64_t V,
                   int32_t ignore_index);
// dlogits = (softmax - onehot(target)) * grad_scale, zero rows for ignored targets.
template <typename T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* lse, T grad_scale, T* dlogits,
                            int64_t rows, int64_t V, int32_t ignore_index);

// ---- indexing ----
template <typename T>
void gather_rows(const T* x, const int32_t* idx, T* y, int64_t m, int64_t d);
// dst[idx[i], :] += src[i, :] (deterministic; duplicates allowed)
template <typename T>
void scatter_add_rows(T* dst, const int32_t* idx, const T* src, int64_t m, int64_t d);
// Per row of x [rows, n]: the k largest values (descending; ties to the lower index) and their indices.
template <typename T>
void topk(const T* x, T* values, int32_t* indices, int64_t rows, int64_t n, int64_t k);

// ---- attention ----
// q [B, Tq, Hq, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv], out [B, Tq, Hq, Dv], lse [B, Hq, Tq]; contiguous.
// Query t sits at absolute position q_offset + t; key j at position j. With causal, query i sees keys j <= i;
// with window > 0 also only keys j > i - window (sliding window of `window` keys including itself).
// Hq must be a multiple of Hkv (grouped-query attention). No Tq x Tk matrix is materialised.
struct AttentionDims {
  int64_t B = 1, Tq = 0, Tk = 0, Hq = 1, Hkv = 1, Dk = 0, Dv = 0;
  int64_t q_offset = 0;
  bool causal = true;
  int64_t window = 0;
  double scale = 1.0;
  // K/V layout. 0: token-major [B, Tk, Hkv, D] (training's). Otherwise head-major, the inference engine's cache:
  // key j of KV head g in batch row b at k + (b * Hkv + g) * k_head_stride + j * Dk (v likewise with v_head_stride
  // and Dv), so one head's keys are one contiguous stream. The forward only; attention_backward needs 0.
  int64_t k_head_stride = 0, v_head_stride = 0;
  // Head-major only: the distance between consecutive keys / values of a head when it is not Dk / Dv (0), e.g.
  // MLA's absorbed decode, whose keys are the cache rows [latent | rope] and whose values are their latent part.
  int64_t k_row_stride = 0, v_row_stride = 0;
};
template <typename T>
void attention(const AttentionDims& d, const T* q, const T* k, const T* v, T* out, T* lse);
// A decode step (Tq == 1) whose K/V are IEEE half (an f16 KV cache; same layouts and strides, in elements), with
// f32 queries, outputs and arithmetic. Returns false, doing nothing, where its AVX2/F16C kernel does not apply (no
// AVX2/F16C, Dk not a multiple of 8 or Dv of 16, Tq > 1, or query heads per task other than 1, 2, 4 or 8); the
// caller then widens the keys and values and calls attention().
bool attention_f16kv(const AttentionDims& d, const float* q, const uint16_t* k, const uint16_t* v, float* out,
                     float* lse);
// dq, dk, dv are overwritten.
template <typename T>
void attention_backward(const AttentionDims& d, const T* q, const T* k, const T* v, const T* out, const T* lse,
                        const T* dout, T* dq, T* dk, T* dv);

// ---- optimizers (in place on f32 or f64 parameters) ----
// PyTorch AdamW: p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), bc_i = 1 - b_i^step.
template <typename T>
void adamw(T* p, const T* g, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
           double weight_decay, int64_t step);
// PyTorch SGD: g += wd p; buf = momentum buf + (1 - dampening) g (buf = g on the first step); p -= lr * (nesterov ?
// g + momentum buf : buf).
template <typename T>
void sgd(T* p, const T* g, T* buf, int64_t n, double lr, double momentum, double dampening, double weight_decay,
         bool nesterov, bool first_step);

}  // namespace lmforge::kernels::cpu
