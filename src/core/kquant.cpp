// The k-quant quantizers (q4_K, q5_K, q6_K) and the importance-weighted ones (those and q4_0): ggml's algorithms
// (ggml-quants.c quantize_row_q{4,5,6}_K_ref without an importance matrix, quantize_row_{q4_0,q4_K,q5_K,q6_K}_impl
// with one, as llama-quantize runs them with --imatrix), step for step in f32 so the blocks come out bit for bit as
// llama.cpp's (GgmlDequant.KQuantizersBitForBitAsGgml and .ImportanceWeightedBitForBitAsGgml check it against the
// prebuilt ggml). q4_K fits a scale and a min to each sub-block of 32 by a weighted least-squares search over
// candidate grids, then stores both as 6-bit multiples of the super-block's f16 d and dmin (q5_K likewise on a 5-bit
// grid); q6_K fits a signed scale to each sub-block of 16 and stores it as an int8 multiple of d.
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

// A signed scale for n values on the grid -nmax..nmax-1 (codes stored + nmax), minimising the squared error weighted by
// qw, or by x^2 where qw is null; ggml's make_qx_quants with rmse_type 1.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw = nullptr) {
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
  const auto weight = [&](int i) { return qw ? qw[i] : x[i] * x[i]; };
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = weight(i);
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
      const float w = weight(i);
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

// Scale and min for n values on the grid 0..nmax minimising the weighted squared error by a search over nstep + 1
// candidate scales; returns the scale, *the_min receives -min (>= 0). ggml's make_qkx2_quants (the reference
// quantizers) and make_qkx3_quants (the importance-weighted ones), both with use_mad false: they differ only in how a
// candidate's codes are clamped, which gives the same codes for every finite input (qkx3's form, clamping before
// rounding, is kept: the running min can sit at or near max). Both callers are checked against ggml bit for bit.
float make_qkx_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, uint8_t* Laux,
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
  if (max <= min) {
    std::memset(L, 0, static_cast<size_t>(n));
    *the_min = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    const float diff = scale * L[i] + min - x[i];
    best += weights[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const float v = iscale * (x[i] - min);
      const int l = v > 0 ? nearest_int(std::min(v, static_cast<float>(nmax))) : 0;
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
      float cur = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        cur += weights[i] * (diff * diff);
      }
      if (cur < best) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best = cur;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// ggml's make_qp_quants: n non-negative values (a super-block's sub-block scales or mins) on the grid 0..nmax with
// one scale, weighted by w: a search over candidate scales, then up to five passes moving single codes.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* w) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += w[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * l;
      mse += w[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    sumlx += w[i] * x[i] * l;
    suml2 += w[i] * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      float slx = sumlx - w[i] * x[i] * L[i];
      float sl2 = suml2 - w[i] * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w[i] * x[i] * new_l;
          sl2 += w[i] * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// The 6-bit scales and mins of a q4_K / q5_K super-block into its 12 scale bytes (ggml's packing).
void pack_scales_k4(const uint8_t* Ls, const uint8_t* Lm, uint8_t* packed) {
  std::memset(packed, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = Ls[j], lm = Lm[j];
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0x0f) | ((lm & 0x0f) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
}

// ggml's get_scale_min_k4: sub-block j's 6-bit scale and min from the 12 packed bytes.
void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// q4_K (nmax 15, 144-byte blocks) and q5_K (nmax 31, 176 bytes: the fifth bits in qh[32] after the scales). Without
// importance: ggml's quantize_row_q4_K_ref / quantize_row_q5_K_ref (each sub-block's scale and min fitted with
// weights |x| + rms(sub-block), then stored as 6-bit multiples of the largest). With importance (one value per column):
// ggml's quantize_row_q4_K_impl / _q5_K_impl, as llama-quantize runs them with an imatrix: weights
// importance * sqrt(sigma^2 + x^2) (sigma^2 twice the super-block's mean square), a finer scale search, and the 6-bit
// scales and mins fitted by weighted least squares (make_qp_quants) instead of rounded from the largest.
void quantize_row_q45_K(const float* x, uint8_t* y, int64_t n, bool q5, const float* importance) {
  const int nmax = q5 ? 31 : 15;
  const size_t bytes = q5 ? kQ5KBytes : kQ4KBytes;
  uint8_t L[kKBlockSize], Laux[32], Ls[8], Lm[8];
  float weights[32], mins[8], scales[8], sw[8];
  for (int64_t b = 0; b < n / kKBlockSize; ++b, x += kKBlockSize, y += bytes) {
    uint8_t* packed = y + 4;
    uint16_t dh = 0, mh = 0;
    if (importance) {
      const float* qw_block = importance + b * kKBlockSize;
      float sum_x2 = 0;
      for (int l = 0; l < kKBlockSize; ++l) sum_x2 += x[l] * x[l];
      const float sigma2 = 2 * sum_x2 / kKBlockSize;
      for (int j = 0; j < 8; ++j) {
        const float* qw = qw_block + 32 * j;
        for (int l = 0; l < 32; ++l) weights[l] = qw[l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; ++l) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36);
      }
      const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
      const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
      if (q5)
        for (int j = 0; j < 8; ++j) {
          Ls[j] = std::min<uint8_t>(63, Ls[j]);
          Lm[j] = std::min<uint8_t>(63, Lm[j]);
        }
      dh = f32_to_f16(d_block);
      mh = f32_to_f16(m_block);
    } else {
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = q5 ? make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15)
                       : make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.0f, 0.1f, 20);
        max_scale = std::max(max_scale, scales[j]);
        max_min = std::max(max_min, mins[j]);
      }
      const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
      const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
      for (int j = 0; j < 8; ++j) {
        Ls[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scales[j]) & 0xff));
        Lm[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j]) & 0xff));
      }
      dh = f32_to_f16(max_scale / 63.0f);
      mh = f32_to_f16(max_min / 63.0f);
    }
    pack_scales_k4(Ls, Lm, packed);
    std::memcpy(y, &dh, 2);
    std::memcpy(y + 2, &mh, 2);
    const float d_all = f16_to_f32(dh), m_all = f16_to_f32(mh);
    for (int j = 0; j < 8; ++j) {  // the codes against the 6-bit scale and min as packed (ggml reads them back)
      uint8_t sc, m;
      scale_min_k4(j, packed, &sc, &m);
      const float d = d_all * sc;
      if (d == 0.0f) continue;
      const float dm = m_all * m;
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

void quantize_row_q4_K(const float* x, uint8_t* y, int64_t n, const float* importance) {
  LMF_CHECK(n % kKBlockSize == 0, "q4_K row length ", n, " is not a multiple of ", kKBlockSize);
  quantize_row_q45_K(x, y, n, false, importance);
}

void quantize_row_q5_K(const float* x, uint8_t* y, int64_t n, const float* importance) {
  LMF_CHECK(n % kKBlockSize == 0, "q5_K row length ", n, " is not a multiple of ", kKBlockSize);
  quantize_row_q45_K(x, y, n, true, importance);
}

// Without importance ggml's quantize_row_q6_K_ref, with it quantize_row_q6_K_impl: the same, each sub-block of 16's
// scale fitted with the importance as its weights instead of x^2.
void quantize_row_q6_K(const float* x, uint8_t* y, int64_t n, const float* importance) {
  LMF_CHECK(n % kKBlockSize == 0, "q6_K row length ", n, " is not a multiple of ", kKBlockSize);
  int8_t L[kKBlockSize];
  float scales[16];
  for (int64_t b = 0; b < n / kKBlockSize; ++b, x += kKBlockSize, y += kQ6KBytes) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib,
                                         importance ? importance + b * kKBlockSize + 16 * ib : nullptr);
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

// ggml's quantize_row_q4_0_impl: each block's signed scale fitted by make_qx_quants (grid -8..7) with weights
// importance * sqrt(sigma^2 + x^2), sigma^2 the row's mean square.
void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n, const float* importance) {
  if (!importance) return quantize_row_q4_0(x, y, n);
  LMF_CHECK(n % kQ4BlockSize == 0, "q4_0 row length ", n, " is not a multiple of ", kQ4BlockSize);
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  const float sigma2 = sum_x2 / n;
  float weight[kQ4BlockSize];
  int8_t L[kQ4BlockSize];
  for (int64_t b = 0; b < n / kQ4BlockSize; ++b) {
    const float* xb = x + b * kQ4BlockSize;
    const float* qw = importance + b * kQ4BlockSize;
    for (int j = 0; j < kQ4BlockSize; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    const float d = make_qx_quants(kQ4BlockSize, 8, xb, L, weight);
    y[b].d = f32_to_f16(d);
    for (int j = 0; j < kQ4BlockSize / 2; ++j) y[b].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

}  // namespace lmforge
