// Element-wise kernels, reductions and activations. Bodies are plain loops; LMF_MULTIVERSION_T compiles each for
// AVX2/FMA and for the portable baseline.
#include <algorithm>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels/cpu/multiversion.h"
#include "kernels/cpu/vec_math.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge::kernels::cpu {

namespace {
// Elements per parallel chunk: large enough that scheduling costs nothing next to the memory traffic.
constexpr int64_t kGrain = 1 << 15;

template <typename T>
LMF_ALWAYS_INLINE void add_impl(const T* a, const T* b, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
template <typename T>
LMF_ALWAYS_INLINE void sub_impl(const T* a, const T* b, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] - b[i];
}
template <typename T>
LMF_ALWAYS_INLINE void mul_impl(const T* a, const T* b, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}
template <typename T>
LMF_ALWAYS_INLINE void scale_impl(const T* a, T s, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * s;
}
template <typename T>
LMF_ALWAYS_INLINE void axpy_impl(T alpha, const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
template <typename T>
LMF_ALWAYS_INLINE void silu_impl(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid<T>(x[i]);
}
template <typename T>
LMF_ALWAYS_INLINE void silu_backward_impl(const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T s = sigmoid<T>(x[i]);
    dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}
template <typename T>
LMF_ALWAYS_INLINE void swiglu_impl(const T* g, const T* u, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] * sigmoid<T>(g[i]) * u[i];
}
template <typename T>
LMF_ALWAYS_INLINE void swiglu_backward_impl(const T* g, const T* u, const T* dy, T* dg, T* du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T s = sigmoid<T>(g[i]);
    const T gs = g[i] * s;
    du[i] = dy[i] * gs;
    dg[i] = dy[i] * u[i] * s * (T(1) + g[i] * (T(1) - s));
  }
}
// Sums in double over a block; the block size is fixed so results do not depend on the thread count.
template <typename T>
LMF_ALWAYS_INLINE double block_sum_impl(const T* a, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(a[i + j]);
  for (; i < n; ++i) acc[0] += static_cast<double>(a[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
template <typename T>
LMF_ALWAYS_INLINE double block_sum_squares_impl(const T* a, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(a[i + j]) * static_cast<double>(a[i + j]);
  for (; i < n; ++i) acc[0] += static_cast<double>(a[i]) * static_cast<double>(a[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

LMF_MULTIVERSION_T(void, add_mv, add_impl, (const T* a, const T* b, T* y, int64_t n), (a, b, y, n))
LMF_MULTIVERSION_T(void, sub_mv, sub_impl, (const T* a, const T* b, T* y, int64_t n), (a, b, y, n))
LMF_MULTIVERSION_T(void, mul_mv, mul_impl, (const T* a, const T* b, T* y, int64_t n), (a, b, y, n))
LMF_MULTIVERSION_T(void, scale_mv, scale_impl, (const T* a, T s, T* y, int64_t n), (a, s, y, n))
LMF_MULTIVERSION_T(void, axpy_mv, axpy_impl, (T alpha, const T* x, T* y, int64_t n), (alpha, x, y, n))
LMF_MULTIVERSION_T(void, silu_mv, silu_impl, (const T* x, T* y, int64_t n), (x, y, n))
LMF_MULTIVERSION_T(void, silu_backward_mv, silu_backward_impl, (const T* x, const T* dy, T* dx, int64_t n),
                   (x, dy, dx, n))
LMF_MULTIVERSION_T(void, swiglu_mv, swiglu_impl, (const T* g, const T* u, T* y, int64_t n), (g, u, y, n))
LMF_MULTIVERSION_T(void, swiglu_backward_mv, swiglu_backward_impl,
                   (const T* g, const T* u, const T* dy, T* dg, T* du, int64_t n), (g, u, dy, dg, du, n))
LMF_MULTIVERSION_T(double, block_sum_mv, block_sum_impl, (const T* a, int64_t n), (a, n))
LMF_MULTIVERSION_T(double, block_sum_squares_mv, block_sum_squares_impl, (const T* a, int64_t n), (a, n))

constexpr int64_t kSumBlock = 1 << 14;

template <typename T, typename F>
double blocked_sum(const T* a, int64_t n, F&& block_fn) {
  const int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  parallel_for(blocks, 4, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t s = b * kSumBlock;
      partial[b] = block_fn(a + s, std::min(kSumBlock, n - s));
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

template <typename T>
void add(const T* a, const T* b, T* y, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t s, int64_t e) { add_mv<T>(a + s, b + s, y + s, e - s); });
}
template <typename T>
void sub(const T* a, const T* b, T* y, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t s, int64_t e) { sub_mv<T>(a + s, b + s, y + s, e - s); });
}
template <typename T>
void mul(const T* a, const T* b, T* y, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t s, int64_t e) { mul_mv<T>(a + s, b + s, y + s, e - s); });
}
template <typename T>
void scale(const T* a, T s_, T* y, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t s, int64_t e) { scale_mv<T>(a + s, s_, y + s, e - s); });
}
template <typename T>
void axpy(T alpha, const T* x, T* y, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t s, int64_t e) { axpy_mv<T>(alpha, x + s, y + s, e - s); });
}
template <typename T>
void add_rowvec(const T* a, const T* b, T* y, int64_t rows, int64_t n) {
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) add_mv<T>(a + r * n, b, y + r * n, n);
  });
}
template <typename T>
void mul_rowvec(const T* a, const T* b, T* y, int64_t rows, int64_t n) {
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) mul_mv<T>(a + r * n, b, y + r * n, n);
  });
}
template <typename T>
void sum_rows(const T* a, T* out, int64_t rows, int64_t n) {
  // Parallel over column blocks; each column sums its rows in order, so the result is deterministic.
  parallel_for(n, 256, [&](int64_t c0, int64_t c1) {
    std::vector<double> acc(static_cast<size_t>(c1 - c0), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = a + r * n;
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += static_cast<double>(row[c]);
    }
    for (int64_t c = c0; c < c1; ++c) out[c] = static_cast<T>(acc[c - c0]);
  });
}
template <typename T>
double sum(const T* a, int64_t n) {
  return blocked_sum(a, n, [](const T* p, int64_t m) { return block_sum_mv<T>(p, m); });
}
template <typename T>
double sum_squares(const T* a, int64_t n) {
  return blocked_sum(a, n, [](const T* p, int64_t m) { return block_sum_squares_mv<T>(p, m); });
}
template <typename T>
void silu(const T* x, T* y, int64_t n) {
  parallel_for(n, kGrain / 4, [&](int64_t s, int64_t e) { silu_mv<T>(x + s, y + s, e - s); });
}
template <typename T>
void silu_backward(const T* x, const T* dy, T* dx, int64_t n) {
  parallel_for(n, kGrain / 4, [&](int64_t s, int64_t e) { silu_backward_mv<T>(x + s, dy + s, dx + s, e - s); });
}
template <typename T>
void swiglu(const T* g, const T* u, T* y, int64_t n) {
  parallel_for(n, kGrain / 4, [&](int64_t s, int64_t e) { swiglu_mv<T>(g + s, u + s, y + s, e - s); });
}
template <typename T>
void swiglu_backward(const T* g, const T* u, const T* dy, T* dg, T* du, int64_t n) {
  parallel_for(n, kGrain / 4,
               [&](int64_t s, int64_t e) { swiglu_backward_mv<T>(g + s, u + s, dy + s, dg + s, du + s, e - s); });
}

namespace {

int64_t argmax_generic(const float* x, int64_t n) {
  int64_t i = 0;
  while (i < n && x[i] != x[i]) ++i;  // NaNs before the first number
  if (i == n) return 0;
  int64_t best = i;
  for (float m = x[i]; i < n; ++i)
    if (x[i] > m) m = x[i], best = i;
  return best;
}

#if LMF_HAVE_X86
// Two passes over data that is in cache (a row of logits): the maximum with four independent vector accumulators,
// then the first index holding it. std::max_element's one pass carries a load-compare-select chain from element to
// element (~8 cycles each: ~100 us for a 32K vocabulary, 2% of a q8_0 decode step of infer-250m).
LMF_TARGET_AVX2 int64_t argmax_avx2(const float* x, int64_t n) {
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf;
  int64_t i = 0;
  // max_ps(v, acc) returns acc where v is NaN: NaNs never become the maximum.
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_max_ps(_mm256_loadu_ps(x + i), a0);
    a1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_max_ps(_mm256_loadu_ps(x + i), a0);
  const __m256 a = _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, a);
  float m = lanes[0];
  for (int k = 1; k < 8; ++k) m = std::max(m, lanes[k]);
  for (; i < n; ++i)
    if (x[i] > m) m = x[i];
  const __m256 mv = _mm256_set1_ps(m);
  for (i = 0; i + 8 <= n; i += 8) {
    const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), mv, _CMP_EQ_OQ));
    if (hit) return i + __builtin_ctz(static_cast<unsigned>(hit));
  }
  for (; i < n; ++i)
    if (x[i] == m) return i;
  return 0;  // every element NaN
}
#endif

}  // namespace

int64_t argmax(const float* x, int64_t n) {
#if LMF_HAVE_X86
  if (cpu_has_avx2()) return argmax_avx2(x, n);
#endif
  return argmax_generic(x, n);
}

#define LMF_INST(T)                                                      \
  template void add<T>(const T*, const T*, T*, int64_t);                 \
  template void sub<T>(const T*, const T*, T*, int64_t);                 \
  template void mul<T>(const T*, const T*, T*, int64_t);                 \
  template void scale<T>(const T*, T, T*, int64_t);                      \
  template void axpy<T>(T, const T*, T*, int64_t);                       \
  template void add_rowvec<T>(const T*, const T*, T*, int64_t, int64_t); \
  template void mul_rowvec<T>(const T*, const T*, T*, int64_t, int64_t); \
  template void sum_rows<T>(const T*, T*, int64_t, int64_t);             \
  template double sum<T>(const T*, int64_t);                             \
  template double sum_squares<T>(const T*, int64_t);                     \
  template void silu<T>(const T*, T*, int64_t);                          \
  template void silu_backward<T>(const T*, const T*, T*, int64_t);       \
  template void swiglu<T>(const T*, const T*, T*, int64_t);              \
  template void swiglu_backward<T>(const T*, const T*, const T*, T*, T*, int64_t);
LMF_INST(float)
LMF_INST(double)

}  // namespace lmforge::kernels::cpu
