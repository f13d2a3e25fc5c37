#include "lmforge/core/dtype.h"

#include <cmath>
#include <string>

#include "lmforge/core/error.h"
#include "lmforge/core/half.h"
#include "lmforge/core/quant.h"

namespace lmforge {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "f32";
    case DType::F64:
      return "f64";
    case DType::BF16:
      return "bf16";
    case DType::F16:
      return "f16";
    case DType::I32:
      return "i32";
    case DType::Q8_0:
      return "q8_0";
    case DType::Q4_0:
      return "q4_0";
    case DType::U8:
      return "u8";
    case DType::I8:
      return "i8";
    case DType::Q4_K:
      return "q4_K";
    case DType::Q5_K:
      return "q5_K";
    case DType::Q6_K:
      return "q6_K";
  }
  return "?";
}

DType parse_dtype(std::string_view name) {
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::Q8_0, DType::Q4_0, DType::U8,
                  DType::I8, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    if (dtype_name(t) == name) return t;
  }
  throw Error("unknown dtype '" + std::string(name) +
              "' (expected f32, f64, bf16, f16, i32, q8_0, q4_0, q4_K, q5_K, q6_K, u8 or i8)");
}

// ---- binary16 ----

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      u = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    u = sign | 0x7f800000u | mant << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (absu >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow (incl. rounding) -> inf
  if (absu < 0x38800000u) {                                               // result is subnormal or zero
    if (absu < 0x33000000u) return static_cast<uint16_t>(sign);           // below half the smallest subnormal
    uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
    // value = mant * 2^(e-150); a binary16 subnormal is q * 2^-24, so q = mant >> (126 - e), e in [102, 112].
    uint32_t total = 126u - (absu >> 23);
    uint32_t q = mant >> total;
    uint32_t rem = mant & ((1u << total) - 1);
    uint32_t half = 1u << (total - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);  // round to nearest even at bit 13
  uint32_t h = ((r >> 13) - ((127 - 15) << 10)) & 0x7fffu;
  return static_cast<uint16_t>(sign | h);
}

// ---- q8_0 / q4_0 (ggml's reference algorithms) ----

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  LMF_CHECK(n % kQ8BlockSize == 0, "q8_0 row length ", n, " is not a multiple of ", kQ8BlockSize);
  for (int64_t b = 0; b < n / kQ8BlockSize; ++b) {
    const float* xb = x + b * kQ8BlockSize;
    float amax = 0.0f;
    for (int j = 0; j < kQ8BlockSize; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int j = 0; j < kQ8BlockSize; ++j) y[b].qs[j] = static_cast<int8_t>(std::lround(xb[j] * id));
  }
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kQ8BlockSize; ++b) {
    const float d = f16_to_f32(x[b].d);
    for (int j = 0; j < kQ8BlockSize; ++j) y[b * kQ8BlockSize + j] = d * static_cast<float>(x[b].qs[j]);
  }
}

void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n) {
  LMF_CHECK(n % kQ4BlockSize == 0, "q4_0 row length ", n, " is not a multiple of ", kQ4BlockSize);
  for (int64_t b = 0; b < n / kQ4BlockSize; ++b) {
    const float* xb = x + b * kQ4BlockSize;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQ4BlockSize; ++j) {
      if (std::fabs(xb[j]) > amax) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int j = 0; j < kQ4BlockSize / 2; ++j) {
      const float x0 = xb[j] * id;
      const float x1 = xb[kQ4BlockSize / 2 + j] * id;
      const uint8_t q0 = static_cast<uint8_t>(std::min(15, static_cast<int>(x0 + 8.5f)));
      const uint8_t q1 = static_cast<uint8_t>(std::min(15, static_cast<int>(x1 + 8.5f)));
      y[b].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kQ4BlockSize; ++b) {
    const float d = f16_to_f32(x[b].d);
    for (int j = 0; j < kQ4BlockSize / 2; ++j) {
      y[b * kQ4BlockSize + j] = d * static_cast<float>((x[b].qs[j] & 0x0f) - 8);
      y[b * kQ4BlockSize + kQ4BlockSize / 2 + j] = d * static_cast<float>((x[b].qs[j] >> 4) - 8);
    }
  }
}

}  // namespace lmforge

// ---- row conversions ----
#include "lmforge/kernels/cpu_features.h"
#if LMF_HAVE_X86
#include <immintrin.h>
#endif

namespace lmforge {

#if LMF_HAVE_X86
LMF_TARGET_AVX2 static void f16_to_f32_row_f16c(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
LMF_TARGET_AVX2 static void f32_to_f16_row_f16c(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}
#endif

void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n) {
#if LMF_HAVE_X86
  if (kernels::cpu_has_avx2()) return f16_to_f32_row_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

void f32_to_f16_row(const float* src, uint16_t* dst, int64_t n) {
#if LMF_HAVE_X86
  if (kernels::cpu_has_avx2()) return f32_to_f16_row_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

static LMF_ALWAYS_INLINE void bf16_to_f32_row_impl(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}
static LMF_ALWAYS_INLINE void f32_to_bf16_row_impl(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}
LMF_MULTIVERSION(void, bf16_to_f32_row, (const uint16_t* src, float* dst, int64_t n), (src, dst, n))
LMF_MULTIVERSION(void, f32_to_bf16_row, (const float* src, uint16_t* dst, int64_t n), (src, dst, n))

}  // namespace lmforge
