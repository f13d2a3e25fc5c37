// Scalar math written so GCC vectorises it inside the multiversioned kernels: no calls, no branches.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "lmforge/kernels/cpu_features.h"

#if LMF_HAVE_X86
#include <immintrin.h>
#endif

namespace lmforge::kernels::cpu {

#if LMF_HAVE_X86
// Sum of the 8 lanes of an AVX register (the tile and attention kernels' final reduction).
LMF_TARGET_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The lane sums of eight registers as one: lane i holds the sum of a[i]'s lanes (six hadds, two permutes, an add,
// against eight hsum calls).
LMF_TARGET_AVX2 inline __m256 hsum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
#endif

// e^x for float: Cody–Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r, 2^n by
// exponent bits. Max relative error about 2e-7 on [-87, 88]; below -87 returns 0 (e^-87 is subnormal), -inf -> 0.
LMF_ALWAYS_INLINE float exp_f32(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // Round to nearest by adding and removing 1.5 * 2^23 (no call, so the loop vectorises).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  float y = p * scale;
  return x <= -87.0f ? 0.0f : y;
}

template <typename T>
LMF_ALWAYS_INLINE T vexp(T x) {
  if constexpr (sizeof(T) == 4) {
    return exp_f32(x);
  } else {
    return std::exp(x);
  }
}

template <typename T>
LMF_ALWAYS_INLINE T sigmoid(T x) {
  return T(1) / (T(1) + vexp<T>(-x));
}

// Max, sum and sum of squares with 8 independent lanes: GCC vectorises these without -ffast-math (a single
// accumulator would be a serial dependency chain), and the order of additions is fixed by the index, not by
// alignment or thread.
template <typename T>
LMF_ALWAYS_INLINE T lanes_max(const T* x, int64_t n) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  T acc[8] = {ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
  for (; i < n; ++i) acc[0] = x[i] > acc[0] ? x[i] : acc[0];
  for (int j = 1; j < 8; ++j) acc[0] = acc[j] > acc[0] ? acc[j] : acc[0];
  return acc[0];
}

// The fixed pairwise order in which every 8-lane accumulator is reduced.
template <typename T>
LMF_ALWAYS_INLINE T reduce8(const T* acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename T>
LMF_ALWAYS_INLINE T lanes_sum(const T* x, int64_t n) {
  T acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j];
  for (; i < n; ++i) acc[0] += x[i];
  return reduce8(acc);
}

template <typename T>
LMF_ALWAYS_INLINE T lanes_dot(const T* x, const T* y, int64_t n) {
  T acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * y[i + j];
  for (; i < n; ++i) acc[0] += x[i] * y[i];
  return reduce8(acc);
}

template <typename T>
LMF_ALWAYS_INLINE T lanes_sumsq(const T* x, int64_t n) {
  return lanes_dot(x, x, n);
}

}  // namespace lmforge::kernels::cpu
