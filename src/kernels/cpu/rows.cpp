// Row-wise kernels: RMSNorm, softmax and softmax-cross-entropy. Rows are independent, so each splits rows over the
// pool; reductions across rows (RMSNorm's weight gradient) keep partials per fixed block of rows.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/multiversion.h"
#include "kernels/cpu/vec_math.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge::kernels::cpu {

namespace {

template <typename T>
LMF_ALWAYS_INLINE void rmsnorm_rows_impl(const T* x, const T* w, T* y, T* rstd, int64_t r0, int64_t r1, int64_t d,
                                         double eps) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    const T rs = static_cast<T>(1.0 / std::sqrt(static_cast<double>(lanes_sumsq<T>(xr, d)) / d + eps));
    rstd[r] = rs;
    for (int64_t i = 0; i < d; ++i) yr[i] = xr[i] * rs * w[i];
  }
}

// dx = rs * (w*dy) - rs^3/d * x * sum(w*dy*x); dw_acc += dy * x * rs.
template <typename T>
LMF_ALWAYS_INLINE void rmsnorm_backward_rows_impl(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw_acc,
                                                  int64_t r0, int64_t r1, int64_t d) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * d;
    const T* dyr = dy + r * d;
    T* dxr = dx + r * d;
    const T rs = rstd[r];
    T acc[8] = {};
    int64_t i = 0;
    for (; i + 8 <= d; i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += w[i + j] * dyr[i + j] * xr[i + j];
    for (; i < d; ++i) acc[0] += w[i] * dyr[i] * xr[i];
    const T dot = reduce8(acc);
    const T c = rs * rs * rs * dot / static_cast<T>(d);
    for (int64_t k = 0; k < d; ++k) {
      dxr[k] = rs * w[k] * dyr[k] - c * xr[k];
      dw_acc[k] += dyr[k] * xr[k] * rs;
    }
  }
}

template <typename T>
LMF_ALWAYS_INLINE void softmax_rows_impl(const T* x, T* y, int64_t r0, int64_t r1, int64_t n) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    const T m = lanes_max<T>(xr, n);
    for (int64_t i = 0; i < n; ++i) yr[i] = vexp<T>(xr[i] - m);
    const T inv = T(1) / lanes_sum<T>(yr, n);
    for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
  }
}

template <typename T>
LMF_ALWAYS_INLINE void softmax_backward_rows_impl(const T* y, const T* dy, T* dx, int64_t r0, int64_t r1, int64_t n) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* yr = y + r * n;
    const T* dyr = dy + r * n;
    T* dxr = dx + r * n;
    const T dot = lanes_dot<T>(yr, dyr, n);
    for (int64_t k = 0; k < n; ++k) dxr[k] = yr[k] * (dyr[k] - dot);
  }
}

template <typename T>
LMF_ALWAYS_INLINE T row_logsumexp(const T* x, int64_t n) {
  const T m = lanes_max<T>(x, n);
  T acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += vexp<T>(x[i + j] - m);
  for (; i < n; ++i) acc[0] += vexp<T>(x[i] - m);
  const T s = reduce8(acc);
  return m + static_cast<T>(std::log(static_cast<double>(s)));
}

template <typename T>
LMF_ALWAYS_INLINE void xent_rows_impl(const T* logits, const int32_t* targets, T* loss, T* lse, int64_t r0, int64_t r1,
                                      int64_t V, int32_t ignore) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = logits + r * V;
    lse[r] = row_logsumexp<T>(xr, V);
    const int32_t t = targets[r];
    loss[r] = (t == ignore || t < 0 || t >= V) ? T(0) : lse[r] - xr[t];
  }
}

template <typename T>
LMF_ALWAYS_INLINE void xent_backward_rows_impl(const T* logits, const int32_t* targets, const T* lse, T scale, T* dl,
                                               int64_t r0, int64_t r1, int64_t V, int32_t ignore) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = logits + r * V;
    T* dr = dl + r * V;
    const int32_t t = targets[r];
    if (t == ignore || t < 0 || t >= V) {
      for (int64_t i = 0; i < V; ++i) dr[i] = 0;
      continue;
    }
    const T l = lse[r];
    for (int64_t i = 0; i < V; ++i) dr[i] = vexp<T>(xr[i] - l) * scale;
    dr[t] -= scale;
  }
}

LMF_MULTIVERSION_T(void, rmsnorm_rows, rmsnorm_rows_impl,
                   (const T* x, const T* w, T* y, T* rstd, int64_t r0, int64_t r1, int64_t d, double eps),
                   (x, w, y, rstd, r0, r1, d, eps))
LMF_MULTIVERSION_T(void, rmsnorm_backward_rows, rmsnorm_backward_rows_impl,
                   (const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t r0, int64_t r1,
                    int64_t d),
                   (dy, x, w, rstd, dx, dw, r0, r1, d))
LMF_MULTIVERSION_T(void, softmax_rows, softmax_rows_impl, (const T* x, T* y, int64_t r0, int64_t r1, int64_t n),
                   (x, y, r0, r1, n))
LMF_MULTIVERSION_T(void, softmax_backward_rows, softmax_backward_rows_impl,
                   (const T* y, const T* dy, T* dx, int64_t r0, int64_t r1, int64_t n), (y, dy, dx, r0, r1, n))
LMF_MULTIVERSION_T(void, xent_rows, xent_rows_impl,
                   (const T* logits, const int32_t* targets, T* loss, T* lse, int64_t r0, int64_t r1, int64_t V,
                    int32_t ignore),
                   (logits, targets, loss, lse, r0, r1, V, ignore))
LMF_MULTIVERSION_T(void, xent_backward_rows, xent_backward_rows_impl,
                   (const T* logits, const int32_t* targets, const T* lse, T scale, T* dl, int64_t r0, int64_t r1,
                    int64_t V, int32_t ignore),
                   (logits, targets, lse, scale, dl, r0, r1, V, ignore))

int64_t row_grain(int64_t n) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1));
}

}  // namespace

template <typename T>
void rmsnorm(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t d, double eps) {
  parallel_for(rows, row_grain(d), [&](int64_t r0, int64_t r1) { rmsnorm_rows<T>(x, w, y, rstd, r0, r1, d, eps); });
}

template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t rows, int64_t d) {
  // dw partials per fixed block of rows, summed in block order: deterministic for any thread count.
  constexpr int64_t kRowsPerBlock = 64;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<T> partial(static_cast<size_t>(blocks * d), T(0));
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * kRowsPerBlock, r1 = std::min(rows, r0 + kRowsPerBlock);
      rmsnorm_backward_rows<T>(dy, x, w, rstd, dx, partial.data() + b * d, r0, r1, d);
    }
  });
  for (int64_t b = 0; b < blocks; ++b) {
    const T* p = partial.data() + b * d;
    for (int64_t k = 0; k < d; ++k) dw[k] += p[k];
  }
}

template <typename T>
void softmax(const T* x, T* y, int64_t rows, int64_t n) {
  parallel_for(rows, row_grain(n), [&](int64_t r0, int64_t r1) { softmax_rows<T>(x, y, r0, r1, n); });
}

template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t n) {
  parallel_for(rows, row_grain(n), [&](int64_t r0, int64_t r1) { softmax_backward_rows<T>(y, dy, dx, r0, r1, n); });
}

template <typename T>
void cross_entropy(const T* logits, const int32_t* targets, T* loss_rows, T* lse, int64_t rows, int64_t V,
                   int32_t ignore_index) {
  parallel_for(rows, row_grain(V),
               [&](int64_t r0, int64_t r1) { xent_rows<T>(logits, targets, loss_rows, lse, r0, r1, V, ignore_index); });
}

template <typename T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* lse, T grad_scale, T* dlogits,
                            int64_t rows, int64_t V, int32_t ignore_index) {
  parallel_for(rows, row_grain(V), [&](int64_t r0, int64_t r1) {
    xent_backward_rows<T>(logits, targets, lse, grad_scale, dlogits, r0, r1, V, ignore_index);
  });
}

#define LMF_INST(T)                                                                                    \
  template void rmsnorm<T>(const T*, const T*, T*, T*, int64_t, int64_t, double);                      \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t, int64_t); \
  template void softmax<T>(const T*, T*, int64_t, int64_t);                                            \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);                         \
  template void cross_entropy<T>(const T*, const int32_t*, T*, T*, int64_t, int64_t, int32_t);         \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const T*, T, T*, int64_t, int64_t, int32_t);
LMF_INST(float)
LMF_INST(double)

}  // namespace lmforge::kernels::cpu
