// The k-quant quantizers (q4_K, q5_K, q6_K): ggml's reference algorithms (ggml-quants.c quantize_row_q4_K_ref /
// quantize_row_q5_K_ref / quantize_row_q6_K_ref, no importance matrix), step for step in f32 so the blocks come out bit
// for bit as llama.cpp's (GgmlDequant.KQuantizersBitForBitAsGgml checks it against the prebuilt ggml). q4_K fits a
// scale and a min to each sub-block of 32 by a weighted least-squares search over candidate grids, then stores both as
// 6-bit multiples of the super-block's f16 d and dmin (q5_K likewise on a 5-bit grid); q6_K fits a signed scale to each
// sub-block of 16 and stores it as an int8 multiple of d.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "lmforge/core/error.h"
#include "lmforge/core/half.h"
#include "lmforge/core/quant.h"

namespace lmforge {

namespace {

constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even, as ggml's nearest_int (valid for |v| <= 2^22: the k-quants' values are).
inline int nearest_int(float v) {
  float f = v + 12582912.0f;
  int i;
  std::memcpy(&i, &f, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// Scale and min for n values on the grid 0..nmax, minimising the weighted squared error; ggml's make_qkx2_quants
// with use_mad false. Returns the scale; *the_min receives -min (>= 0).
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = weights[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    const float diff = scale * L[i] + min - x[i];
    best_error += weights[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        cur_error += weights[i] * (diff * diff);
      }
      if (cur_error < best_error) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// A signed scale for n values on the grid -nmax..nmax-1 (codes stored + nmax), weighted by x^2; ggml's
// make_qx_quants with rmse_type 1 and no importance weights.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// q4_K (nmax 15, 144-byte blocks) and q5_K (nmax 31, 176 bytes: the fifth bits in qh[32] after the scales): ggml's
// quantize_row_q4_K_ref / quantize_row_q5_K_ref, which differ only in the grid, the search parameters and the packing.
void quantize_row_q45_K(const float* x, uint8_t* y, int64_t n, bool q5) {
  const int nmax = q5 ? 31 : 15;
  const size_t bytes = q5 ? kQ5KBytes : kQ4KBytes;
  uint8_t L[kKBlockSize], Laux[32], Ls[8], Lm[8];
  float weights[32], mins[8], scales[8];
  for (int64_t b = 0; b < n / kKBlockSize; ++b, x += kKBlockSize, y += bytes) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = q5 ? make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15)
                     : make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.0f, 0.1f, 20);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    uint8_t* packed = y + 4;
    std::memset(packed, 0, 12);
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; ++j) {
      const uint8_t ls = Ls[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scales[j]) & 0xff));
      const uint8_t lm = Lm[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j]) & 0xff));
      if (j < 4) {
        packed[j] = ls;
        packed[j + 4] = lm;
      } else {
        packed[j + 4] = static_cast<uint8_t>((ls & 0x0f) | ((lm & 0x0f) << 4));
        packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
        packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
      }
    }
    const uint16_t dh = f32_to_f16(max_scale / 63.0f), mh = f32_to_f16(max_min / 63.0f);
    std::memcpy(y, &dh, 2);
    std::memcpy(y + 2, &mh, 2);
    const float d_all = f16_to_f32(dh), m_all = f16_to_f32(mh);
    for (int j = 0; j < 8; ++j) {  // the 6-bit scale and min as packed (ggml reads them back from the bytes)
      const float d = d_all * Ls[j];
      if (d == 0.0f) continue;
      const float dm = m_all * Lm[j];
      for (int i = 0; i < 32; ++i) {
        const int l = nearest_int((x[32 * j + i] + dm) / d);
        L[32 * j + i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
      }
    }
    if (!q5) {
      uint8_t* q = y + 16;
      for (int j = 0; j < kKBlockSize; j += 64, q += 32)
        for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
      continue;
    }
    uint8_t* qh = y + 16;
    uint8_t* ql = y + 48;
    std::memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int j = 0; j < kKBlockSize;
         j += 64, ql += 32, m1 = static_cast<uint8_t>(m1 << 2), m2 = static_cast<uint8_t>(m2 << 2)) {
      for (int l = 0; l < 32; ++l) {
        int l1 = L[j + l], l2 = L[j + l + 32];
        if (l1 > 15) l1 -= 16, qh[l] |= m1;
        if (l2 > 15) l2 -= 16, qh[l] |= m2;
        ql[l] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
    }
  }
}

}  // namespace

void quantize_row_q4_K(const float* x, uint8_t* y, int64_t n) {
  LMF_CHECK(n % kKBlockSize == 0, "q4_K row length ", n, " is not a multiple of ", kKBlockSize);
  quantize_row_q45_K(x, y, n, false);
}

void quantize_row_q5_K(const float* x, uint8_t* y, int64_t n) {
  LMF_CHECK(n % kKBlockSize == 0, "q5_K row length ", n, " is not a multiple of ", kKBlockSize);
  quantize_row_q45_K(x, y, n, true);
}

void quantize_row_q6_K(const float* x, uint8_t* y, int64_t n) {
  LMF_CHECK(n % kKBlockSize == 0, "q6_K row length ", n, " is not a multiple of ", kKBlockSize);
  int8_t L[kKBlockSize];
  float scales[16];
  for (int64_t b = 0; b < n / kKBlockSize; ++b, x += kKBlockSize, y += kQ6KBytes) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
      scales[ib] = scale;
      if (std::fabs(scale) > max_abs_scale) {
        max_abs_scale = std::fabs(scale);
        max_scale = scale;
      }
    }
    std::memset(y, 0, kQ6KBytes);
    if (max_abs_scale < kGroupMaxEps) continue;  // all zero: d = 0 and every code 0, as ggml writes it
    const float iscale = -128.0f / max_scale;
    const uint16_t dh = f32_to_f16(1 / iscale);
    std::memcpy(y + 208, &dh, 2);
    auto* sc = reinterpret_cast<int8_t*>(y + 192);
    for (int ib = 0; ib < 16; ++ib) sc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    const float d_all = f16_to_f32(dh);
    for (int j = 0; j < 16; ++j) {
      const float d = d_all * sc[j];
      if (d == 0.0f) continue;
      for (int i = 0; i < 16; ++i) {
        const int l = nearest_int(x[16 * j + i] / d);
        L[16 * j + i] = static_cast<int8_t>(std::max(-32, std::min(31, l)) + 32);
      }
    }
    uint8_t* ql = y;
    uint8_t* qh = y + 128;
    for (int j = 0; j < kKBlockSize; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const auto c = [&](int o) { return static_cast<uint8_t>(L[j + l + o]); };
        ql[l] = static_cast<uint8_t>((c(0) & 0x0f) | ((c(64) & 0x0f) << 4));
        ql[l + 32] = static_cast<uint8_t>((c(32) & 0x0f) | ((c(96) & 0x0f) << 4));
        qh[l] = static_cast<uint8_t>((c(0) >> 4) | ((c(32) >> 4) << 2) | ((c(64) >> 4) << 4) | ((c(96) >> 4) << 6));
      }
    }
  }
}

}  // namespace lmforge
