// Quantized and 16-bit weight products (include/lmforge/kernels/qgemm.h).
//
// Decode (few activation rows) is bandwidth-bound: each weight byte is read once, so the kernels stream tiles of
// kTile rows against the activations (kept in L1/L2) with one integer dot product per 32-value block. Prefill
// (many activation rows) is compute-bound: there a panel of rows is dequantized once and multiplied with sgemm,
// which beats AVX2 integer dot products per activation row and keeps the activations exact. With AVX-512 VNNI the
// integer dots of interleaved q8_0 / q4_0 win at every row count instead (groups_q8_rows_vnni, prefill_vnni).
//
// The integer formats see the activations as 8-bit blocks of 32 (XQuant; the g128 formats with one scale shared by
// the four blocks of a group): codes, the f32 scale, and the sums of
// each 4 consecutive codes in the i32 lane layout that _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), 1) produces,
// so a 4-bit weight's offset (q - 8) is subtracted exactly in integers: dot(q - 8, x) = dot(q, x) - 8 * sum(x).
#include "lmforge/kernels/qgemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/cpu_features.h"
#include "lmforge/kernels/thread_pool.h"

#if LMF_HAVE_X86
#include <immintrin.h>
#endif

namespace lmforge::kernels::cpu {

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kGroup = 128;
constexpr int kTile = 4;  // weight rows per pass: the activations are loaded once for four rows
// The smallest chunk of a decode product that a thread claims: each of its four streams then reads >= 16 KiB, where
// chunks of four tiles (4-17 KiB of q8_0 / q4_0) restarted the streams cold every few rows (four q8_0 products of an
// infer-250m layer, from DRAM: 4.5% faster together; docs/PERFORMANCE.md).
constexpr int64_t kMinChunkBytes = 64 << 10;
// Each thread's first chunk of a decode product: up to 2 MiB of weights in one run (ThreadPool's guided `head`)
// before the guided chunks, so a product's rows restart cold a few times rather than ~10 (in-process engine A/B,
// 512 + 32-token rounds: q8_0 x1.02-1.04, q4_0 x1.06, f32 0.97-1.01; docs/PERFORMANCE.md).
constexpr int64_t kHeadBytes = 2 << 20;
// Prefill on the VNNI tiles (prefill_vnni): weight rows in blocks of kVnniBlockGroups groups of four, activation
// rows in chunks of kVnniChunk, each row's blocks in spans of kVnniSpan (1024 values).
constexpr int64_t kVnniBlockGroups = 64;
constexpr int64_t kVnniChunk = 32;
constexpr int64_t kVnniSpan = 32;
// From this many activation rows on, the VNNI tiles run through prefill_vnni; below, through rows_avx2's streams
// (bench quant, Zen 4, ms streams vs prefill_vnni: n = 8 and 16 streams ahead by 10-40%, n = 32-128 level within
// the noise).
constexpr int64_t kVnniPrefillRows = 64;
// Products of more activation rows than this on the VNNI tiles run as several products of at most this many.
constexpr int64_t kVnniMaxRows = 256;
// The k-quants never switch to sgemm panels: their multi-row tiles (four activation rows a pass, each super-block
// unpacked once) outrun dequantize + sgemm at every row count measured (PERFORMANCE.md, "k-quants"), as ggml's own
// q8_K products do. A product of more activation rows runs as products of at most this many, so each pass's 8-bit
// activations (kKMaxRows x cols bytes) stay in the L2 cache while the weights stream past once per chunk.
constexpr int64_t kKMaxRows = 64;
// Up to this many activation rows, qgemm's 8-bit activations live in a thread-local buffer kept between calls.
constexpr int64_t kReusedXQuantRows = 64;
// qgemm_sgemm_rows(f): from this many activation rows on, dequantize panels and use sgemm; below, the decode tiles
// (each weight tile read once, dotted with every activation row). q8_0 / q4_0: 64, was 16 for every format; `bench
// quant` (2 threads, an AVX2 Zen 3 host, ms tiles vs panels) at n = 16: q8_0 1024 x 1024 0.27 vs 0.49, 1024 x 2816 0.69
// vs 1.53, 4096 x 14336 14.1 vs 24.9; n = 32: 5632 x 1024 2.5 vs 6.3, 4096 x 14336 27.5 vs 44.0; n = 48: 4096 x
// 14336 42.4 vs 59.9; at n = 64 the two were level or reversed (the activations of a 14336-wide row no longer fit the
// L2 beside the tile), and sgemm wins from 128. Batched decode of up to 63 sequences and prompts shorter than 64 tokens
// thus see 8-bit activations, as decode. int8 and the g128 formats (1024 x 2816): n = 16 0.96-1.08 vs 1.47-1.57 ms, n =
// 32 level or ahead (1.2-2.1 vs 1.9-2.8), n = 48 behind (2.5-4.1 vs 2.7-2.9): 32. f32 / f16 / bf16 (tile_float_rows,
// up to three activation rows a pass; in-process A/B from DRAM, 12 ABBA pairs, sgemm ms / tiles ms at 5632 x 1024 and
// 1024 x 2816): f32 n = 16 1.54 / 1.39, 32 1.22 / 1.03, 48 1.12 / 1.03, 64 1.00 / 0.93 (32000 x 1024: n = 32 1.14, 63
// 0.94): 48; bf16 n = 32 1.23 / 1.26, 48 1.06 / 1.20, 64 1.03 / 1.11, 96 0.95 / 1.00, 128 0.86 / 1.04: 64. The tiles
// keep f32 activations, so only the summation order changes at the switch.
}  // namespace

int64_t qgemm_sgemm_rows(QFormat f) {
  switch (f) {
    case QFormat::Q8_0:
    case QFormat::Q4_0:
    case QFormat::Q4_K:
    case QFormat::Q5_K:
    case QFormat::Q6_K:
    case QFormat::F16:
    case QFormat::BF16:
      return 64;
    case QFormat::F32:
      return 48;
    case QFormat::INT8:
    case QFormat::Q4_G128:
    case QFormat::Q4_G128_ASYM:
      return 32;
    default:
      return 64;
  }
}

namespace {
// Prefill: rows per dequantized panel, at least kMinPanel, about kPanelBytes of f32 (q8_0 at 512 x 1024 x 1024 /
// 2816: 7-10 ms -> 7.2 ms, 23-26 ms -> 19-22 ms against 64-row panels; docs/PERFORMANCE.md).
constexpr int64_t kMinPanel = 64;
constexpr int64_t kPanelBytes = int64_t{2} << 20;
constexpr size_t kQ8Bytes = 34;    // GGUF block_q8_0: f16 d, 32 x i8
constexpr size_t kQ4Bytes = 18;    // GGUF block_q4_0: f16 d, 16 bytes of nibbles
constexpr int64_t kSuper = 256;    // k-quant super-block
constexpr size_t kQ4KBytes = 144;  // block_q4_K: f16 d, f16 dmin, u8 scales[12], u8 qs[128]
constexpr size_t kQ5KBytes = 176;  // block_q5_K: f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]
constexpr size_t kQ6KBytes = 210;  // block_q6_K: u8 ql[128], u8 qh[64], i8 scales[16], f16 d

// IEEE half to float without F16C (the portable path; the AVX2 path uses _cvtsh_ss).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((man & 0x400u) == 0) {
        man <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Activations of one row quantized to 8-bit blocks of 32.
struct XQuant {
  int64_t nb = 0;
  std::vector<float> d;     // scale per block
  std::vector<int8_t> q;    // codes, nb * 32
  std::vector<int32_t> p4;  // sums of 4 consecutive codes, nb * 8, in madd lane order
  // For the interleaved q4_0 tile only (pair_halves): per block the codes as [0-15, 0-15, 16-31, 16-31] (64 bytes)
  // and 8 x the sums each lane of its two-row dot covers, [o0..o3, o0..o3] with ok = p4[k] + p4[k + 4].
  std::vector<int8_t> q2;
  std::vector<int32_t> off2;
  // For the interleaved q8_0 tile only (runs_x): per block four 32-byte vectors, vector k holding codes 8k..8k+3 in
  // each of its four low 4-byte lanes and 8k+4..8k+7 in each high one, to meet the four rows' runs of four codes.
  std::vector<int8_t> x4;
  // For the AVX-512 VNNI q8_0 tile only (runs_x with vnni): per block -128 x the sum of the activation codes each
  // 32-bit lane of an x4 dot meets (lanes 0-3: codes 8k..8k+3 over k, lanes 4-7: 8k+4..8k+7), 8 values.
  std::vector<int32_t> c8;
  // For the k-quant tiles only (sums16): the sums of each 16 consecutive codes, nb * 2 values.
  std::vector<int16_t> s16;
  void resize(int64_t cols) {  // the buffers are reused call after call (thread-local) and only grow
    nb = cols / kBlock;
    at_least(d, nb);
    at_least(q, nb * kBlock);
    at_least(p4, nb * 8);
  }
  // Grows v to n elements, never shrinks it: decode alternates widths (1024 and 2816 for infer-250m), and a
  // vector resized down and up again zero-fills what it regrows, every product.
  template <typename V>
  static void at_least(V& v, int64_t n) {
    if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  }
  // One scale per `span` values (32, or 128 for the g128 formats: their tile sums a group's four blocks in integers
  // and scales once, as llama.cpp's K-quants do with 256-value activation blocks); every block keeps its d.
  void quantize(const float* x, int64_t cols, int64_t span = kBlock) {
    resize(cols);
    for (int64_t s0 = 0; s0 < cols; s0 += span) {
      float amax = 0.0f;
      for (int64_t j = s0; j < s0 + span; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float db = amax / 127.0f, id = db > 0.0f ? 1.0f / db : 0.0f;
      for (int64_t b = s0 / kBlock; b < (s0 + span) / kBlock; ++b) {
        const float* xb = x + b * kBlock;
        int8_t* qb = q.data() + b * kBlock;
        for (int64_t j = 0; j < kBlock; ++j) qb[j] = static_cast<int8_t>(std::nearbyint(xb[j] * id));
        // maddubs pairs (2i, 2i+1) into 16-bit lane i; madd pairs 16-bit lanes (2k, 2k+1) into 32-bit lane k. In a
        // 256-bit register lanes 0-3 hold values 0-15 and lanes 4-7 values 16-31, so 32-bit lane k sums 4k..4k+3.
        for (int k = 0; k < 8; ++k) p4[b * 8 + k] = qb[4 * k] + qb[4 * k + 1] + qb[4 * k + 2] + qb[4 * k + 3];
        d[b] = db;
      }
    }
  }
};

bool is_int_format(QFormat f) {
  return f != QFormat::F16 && f != QFormat::BF16 && f != QFormat::F32;
}
bool is_k_format(QFormat f) {
  return f == QFormat::Q4_K || f == QFormat::Q5_K || f == QFormat::Q6_K;
}

// The k-quant tiles' activation sums per 16 values, from the sums per 4 (p4: lane k of block b sums codes 4k..4k+3).
void sums16(XQuant& xq) {
  XQuant::at_least(xq.s16, xq.nb * 2);
  for (int64_t b = 0; b < xq.nb; ++b) {
    const int32_t* p = xq.p4.data() + b * 8;
    xq.s16[2 * b] = static_cast<int16_t>(p[0] + p[1] + p[2] + p[3]);
    xq.s16[2 * b + 1] = static_cast<int16_t>(p[4] + p[5] + p[6] + p[7]);
  }
}

// The eight 6-bit scales and mins of a q4_K / q5_K super-block from its 12 packed bytes, as four little-endian words
// (bytes 0-7 the scales, 8-15 the mins): j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in the nibbles of byte
// j + 4 with the top two bits in the high bits of bytes j - 4 (scale) and j (min), as ggml's get_scale_min_k4, here
// four bytes a word operation (bytes through memory and back stalled the AVX2 tiles on a failed store forward).
// Returned by value (four scalars, kept in registers once inlined: an array filled here and read back as a vector
// cost the q4_K decode tile a third of its speed).
struct KScaleWords {
  uint32_t s03, s47, m03, m47;
};
LMF_ALWAYS_INLINE KScaleWords q4_K_scale_words(const uint8_t* packed) {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, packed, 4);
  std::memcpy(&u1, packed + 4, 4);
  std::memcpy(&u2, packed + 8, 4);
  constexpr uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
  return {u0 & low6, (u2 & low4) | (((u0 >> 6) & low2) << 4), u1 & low6,
          ((u2 >> 4) & low4) | (((u1 >> 6) & low2) << 4)};
}
// The same as 16 bytes: out[0..7] the scales, out[8..15] the mins.
inline void q4_K_scales(const uint8_t* packed, uint8_t* out) {
  const KScaleWords w = q4_K_scale_words(packed);
  const uint32_t words[4] = {w.s03, w.s47, w.m03, w.m47};
  std::memcpy(out, words, 16);
}

// Code v (0..255) of a q4_K (0..15) or q5_K (0..31) super-block: value v of chunk c = v / 64 is the low nibble of
// byte v % 32 of the chunk's 32 bytes for v % 64 < 32, the high nibble otherwise; q5_K adds bit 2c (low) or 2c + 1
// (high) of qh[v % 32] as bit 4.
inline int qk45_code(const uint8_t* blk, bool q5, int v) {
  const int c = v / 64, hi = (v % 64) / 32, l = v % 32;
  const int nib = (blk[(q5 ? 48 : 16) + 32 * c + l] >> (4 * hi)) & 0x0f;
  return q5 ? nib | (((blk[16 + l] >> (2 * c + hi)) & 1) << 4) : nib;
}

// Code v (0..255) of a q6_K super-block, 0..63: its low nibble in ql, its top two bits in qh (ggml's layout: each
// half of 128 values has 64 ql bytes, values l and l + 64 sharing byte l, l + 32 and l + 96 byte l + 32, and 32 qh
// bytes holding bits 4-5 of values l, l + 32, l + 64, l + 96 at bits 0-1, 2-3, 4-5, 6-7 of byte l).
inline int q6_K_code(const uint8_t* blk, int v) {
  const int half = v / 128, r = v % 128, k = r / 32, l = r % 32;
  const uint8_t ql = blk[64 * half + l + (k & 1) * 32];
  const int lo = k >= 2 ? ql >> 4 : ql & 0x0f;
  return lo | (((blk[128 + 32 * half + l] >> (2 * k)) & 3) << 4);
}

size_t row_bytes(const QWeight& w) {
  switch (w.format) {
    case QFormat::F32:
      return static_cast<size_t>(w.cols) * 4;
    case QFormat::F16:
    case QFormat::BF16:
      return static_cast<size_t>(w.cols) * 2;
    case QFormat::Q8_0:
      return static_cast<size_t>(w.cols / kBlock) * kQ8Bytes;
    case QFormat::Q4_0:
      return static_cast<size_t>(w.cols / kBlock) * kQ4Bytes;
    case QFormat::Q4_G128:
    case QFormat::Q4_G128_ASYM:
      return static_cast<size_t>(w.cols / 2);
    case QFormat::INT8:
      return static_cast<size_t>(w.cols);
    case QFormat::Q4_K:
      return static_cast<size_t>(w.cols / kSuper) * kQ4KBytes;
    case QFormat::Q5_K:
      return static_cast<size_t>(w.cols / kSuper) * kQ5KBytes;
    case QFormat::Q6_K:
      return static_cast<size_t>(w.cols / kSuper) * kQ6KBytes;
  }
  return 0;
}

// Bytes of one GGUF block (q8_0 / q4_0).
size_t block_bytes(QFormat f) {
  return f == QFormat::Q8_0 ? kQ8Bytes : kQ4Bytes;
}

// Where row r's blocks are (q8_0 / q4_0): block b's f16 scale at at(b) + scale, its code bytes at code(at(b), j).
// In the GGUF layout a row's blocks follow each other; in the interleaved layout row r is lane r % 4 of its group:
// q4_0 rows keep their 16 code bytes together, q8_0 rows have theirs in runs of four, 16 bytes apart
// (interleave_rows4).
struct BlockWalk {
  const uint8_t* base;
  size_t step, scale, first;
  bool runs4;  // q8_0 interleaved: byte j at first + 16 (j / 4) + j % 4
  const uint8_t* at(int64_t b) const { return base + static_cast<size_t>(b) * step; }
  uint8_t code(const uint8_t* blk, int64_t j) const {
    return runs4 ? blk[first + 16 * static_cast<size_t>(j / 4) + static_cast<size_t>(j % 4)]
                 : blk[first + static_cast<size_t>(j)];
  }
};
BlockWalk block_walk(const QWeight& w, int64_t r) {
  const size_t stride = row_bytes(w), bsz = block_bytes(w.format);
  const auto* base = static_cast<const uint8_t*>(w.codes);
  if (!w.rows4 || r >= w.rows / 4 * 4) return {base + static_cast<size_t>(r) * stride, bsz, 0, 2, false};
  const auto i = static_cast<size_t>(r % 4);
  const bool q8 = w.format == QFormat::Q8_0;
  return {base + static_cast<size_t>(r - r % 4) * stride, 4 * bsz, 2 * i, q8 ? 8 + 4 * i : 8 + i * (bsz - 2), q8};
}

// ---- portable path: the same arithmetic as the AVX2 path, one value at a time ----

float dot_generic(const QWeight& w, int64_t r, const float* x, const XQuant& xq) {
  const auto* row = static_cast<const uint8_t*>(w.codes) + static_cast<size_t>(r) * row_bytes(w);
  const int64_t nb = w.cols / kBlock;
  switch (w.format) {
    case QFormat::F32: {
      const auto* wr = reinterpret_cast<const float*>(row);
      float acc = 0.0f;
      for (int64_t j = 0; j < w.cols; ++j) acc += wr[j] * x[j];
      return acc;
    }
    case QFormat::F16:
    case QFormat::BF16: {
      float acc = 0.0f;
      for (int64_t j = 0; j < w.cols; ++j) {
        const uint16_t h = load_u16(row + 2 * j);
        acc += (w.format == QFormat::F16 ? half_to_float(h) : bf16_to_float(h)) * x[j];
      }
      return acc;
    }
    case QFormat::Q8_0:
    case QFormat::INT8: {
      const bool q8 = w.format == QFormat::Q8_0;
      const BlockWalk bw = q8 ? block_walk(w, r) : BlockWalk{row, kBlock, 0, 0, false};
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = bw.at(b);
        int32_t dot = 0;
        for (int64_t j = 0; j < kBlock; ++j) dot += static_cast<int8_t>(bw.code(blk, j)) * xq.q[b * kBlock + j];
        acc += static_cast<float>(dot) * (q8 ? half_to_float(load_u16(blk + bw.scale)) : 1.0f) * xq.d[b];
      }
      return q8 ? acc : acc * static_cast<const float*>(w.scales)[r];
    }
    case QFormat::Q4_0: {
      const BlockWalk bw = block_walk(w, r);
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = bw.at(b);
        const uint8_t* c = blk + bw.first;
        const int8_t* xb = xq.q.data() + b * kBlock;
        int32_t dot = 0;
        for (int64_t j = 0; j < 16; ++j) dot += ((c[j] & 0x0f) - 8) * xb[j] + ((c[j] >> 4) - 8) * xb[j + 16];
        acc += static_cast<float>(dot) * half_to_float(load_u16(blk + bw.scale)) * xq.d[b];
      }
      return acc;
    }
    case QFormat::Q4_G128:
    case QFormat::Q4_G128_ASYM: {
      const int64_t groups = w.cols / kGroup;
      const auto* scales = static_cast<const uint16_t*>(w.scales) + r * groups;
      const auto* zeros = static_cast<const uint8_t*>(w.zeros);
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const uint8_t* c = row + g * (kGroup / 2);
        const int32_t z = zeros ? zeros[r * groups + g] : 8;
        const int8_t* xg = xq.q.data() + g * kGroup;  // one activation scale per group (span 128)
        int32_t dot = 0;
        for (int64_t v = 0; v < kGroup; ++v) {
          const int32_t code = v < 64 ? (c[v] & 0x0f) : (c[v - 64] >> 4);
          dot += (code - z) * xg[v];
        }
        acc += static_cast<float>(dot) * xq.d[g * 4] * half_to_float(scales[g]);
      }
      return acc;
    }
    case QFormat::Q4_K:
    case QFormat::Q5_K: {  // value = d * scale_j * q - dmin * min_j over sub-blocks j of 32
      const bool q5 = w.format == QFormat::Q5_K;
      float acc = 0.0f;
      for (int64_t s = 0; s < w.cols / kSuper; ++s) {
        const uint8_t* blk = row + s * (q5 ? kQ5KBytes : kQ4KBytes);
        uint8_t sm[16];
        q4_K_scales(blk + 4, sm);
        const int8_t* xs = xq.q.data() + s * kSuper;
        int32_t dot = 0, mins = 0;
        for (int j = 0; j < 8; ++j) {
          int32_t dj = 0, sx = 0;
          for (int i = 0; i < 32; ++i) {
            dj += qk45_code(blk, q5, 32 * j + i) * xs[32 * j + i];
            sx += xs[32 * j + i];
          }
          dot += sm[j] * dj;
          mins += sm[8 + j] * sx;
        }
        const float dx = xq.d[s * 8];
        acc += static_cast<float>(dot) * half_to_float(load_u16(blk)) * dx -
               static_cast<float>(mins) * half_to_float(load_u16(blk + 2)) * dx;
      }
      return acc;
    }
    case QFormat::Q6_K: {  // value = d * scale_i * (q - 32) over sub-blocks i of 16
      float acc = 0.0f;
      for (int64_t s = 0; s < w.cols / kSuper; ++s) {
        const uint8_t* blk = row + s * kQ6KBytes;
        const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
        const int8_t* xs = xq.q.data() + s * kSuper;
        int32_t dot = 0;
        for (int v = 0; v < kSuper; ++v) dot += sc[v / 16] * (q6_K_code(blk, v) - 32) * xs[v];
        acc += static_cast<float>(dot) * half_to_float(load_u16(blk + 208)) * xq.d[s * 8];
      }
      return acc;
    }
  }
  return 0.0f;
}

void rows_generic(const QWeight& w, const float* x, const XQuant* xq, int64_t r0, int64_t r1, float* y,
                  bool accumulate) {
  for (int64_t r = r0; r < r1; ++r) {
    const float v = dot_generic(w, r, x, *xq);
    y[r] = accumulate ? y[r] + v : v;
  }
}

// ---- AVX2 path ----
#if LMF_HAVE_X86

LMF_TARGET_AVX2 inline float f16(const uint8_t* p) {
  return _cvtsh_ss(load_u16(p));
}

// Signed x signed bytes: maddubs needs one unsigned operand, so |w| times x with w's sign (ggml's trick).
LMF_TARGET_AVX2 inline __m256i dot_i8(__m256i w, __m256i x) {
  const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}
// Unsigned 4-bit codes (0..15) x signed bytes: at most 2 * 15 * 127 per 16-bit lane, no saturation.
LMF_TARGET_AVX2 inline __m256i dot_u4(__m256i w, __m256i x) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

// Software prefetch of the weight streams. The kernels below read R places at once (rows, or groups of four
// interleaved rows), each a sequential stream; every step prefetches the lines of the bytes `ahead` beyond what it
// reads in each stream (ahead == 0: none). See rows_avx2 for why several streams and how far ahead.
template <size_t Bytes>
LMF_TARGET_AVX2 inline void prefetch_ahead(const uint8_t* p) {
  // Lines every 64 bytes from p: consecutive steps of a stream leave no gap over 64 bytes, so every line of the
  // stream is asked for once or more (a step of 136 bytes asks for 3; also asking for its last byte's line, as
  // often the next step's first, made q8_0 decode 5-10% slower).
  for (size_t o = 0; o < Bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

template <int R>
LMF_TARGET_AVX2 void tile_q8(const uint8_t* const* rows, const XQuant& xq, const float* row_scale, float* out,
                             size_t ahead) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const bool q8 = row_scale == nullptr;  // q8_0 blocks; otherwise int8 rows with their scales in row_scale[0, R)
  const size_t bbytes = q8 ? kQ8Bytes : kBlock;
  for (int64_t b = 0; b < xq.nb; ++b) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.q.data() + b * kBlock));
    const float dx = xq.d[b];
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = rows[r] + b * bbytes;
      if (ahead) prefetch_ahead<kQ8Bytes>(blk + ahead);
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 ? blk + 2 : blk));
      const __m256 f = _mm256_cvtepi32_ps(dot_i8(wv, x));
      acc[r] = _mm256_fmadd_ps(f, _mm256_set1_ps(q8 ? f16(blk) * dx : dx), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]) * (q8 ? 1.0f : row_scale[r]);
}

// Four rows at once with one float step per block for all four (the q8_0/int8 and q4_0 tiles of 4). The rows'
// integer dot products are folded by three horizontal adds into one vector whose lanes r and r + 4 hold row r's
// two half-block sums; one convert and one multiply-add by [s0..s3, s0..s3] then scale all four rows, where the
// one-row tiles convert, broadcast and multiply-add per row. ~20% fewer cycles per block from L2.
LMF_TARGET_AVX2 inline __m256i fold4(__m256i d0, __m256i d1, __m256i d2, __m256i d3) {
  return _mm256_hadd_epi32(_mm256_hadd_epi32(d0, d1), _mm256_hadd_epi32(d2, d3));
}
LMF_TARGET_AVX2 inline __m128 scales4(const uint8_t* const* rows, size_t off) {
  const uint64_t h = uint64_t{load_u16(rows[0] + off)} | uint64_t{load_u16(rows[1] + off)} << 16 |
                     uint64_t{load_u16(rows[2] + off)} << 32 | uint64_t{load_u16(rows[3] + off)} << 48;
  return _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(h)));
}
LMF_TARGET_AVX2 inline void unfold4(__m256 acc, float* out) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  _mm_storeu_ps(out, s);
}

LMF_TARGET_AVX2 void tile4_q8(const uint8_t* const* rows, const XQuant& xq, const float* row_scale, float* out,
                              size_t ahead) {
  __m256 acc = _mm256_setzero_ps();
  const bool q8 = row_scale == nullptr;
  const size_t bbytes = q8 ? kQ8Bytes : kBlock, skip = q8 ? 2 : 0;
  for (int64_t b = 0; b < xq.nb; ++b) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.q.data() + b * kBlock));
    const size_t at = static_cast<size_t>(b) * bbytes;
    __m256i d[4];
    for (int r = 0; r < 4; ++r) {
      if (ahead) prefetch_ahead<kQ8Bytes>(rows[r] + at + ahead);
      d[r] = dot_i8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + at + skip)), x);
    }
    const __m128 s = q8 ? _mm_mul_ps(scales4(rows, at), _mm_set1_ps(xq.d[b])) : _mm_set1_ps(xq.d[b]);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(fold4(d[0], d[1], d[2], d[3])), _mm256_set_m128(s, s), acc);
  }
  unfold4(acc, out);
  if (!q8)
    for (int r = 0; r < 4; ++r) out[r] *= row_scale[r];
}

LMF_TARGET_AVX2 void tile4_q4_0(const uint8_t* const* rows, const XQuant& xq, float* out, size_t ahead) {
  __m256 acc = _mm256_setzero_ps();
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int64_t b = 0; b < xq.nb; ++b) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.q.data() + b * kBlock));
    const __m256i off =
        _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.p4.data() + b * 8)), 3);
    const size_t at = static_cast<size_t>(b) * kQ4Bytes;
    __m256i d[4];
    for (int r = 0; r < 4; ++r) {
      if (ahead) prefetch_ahead<kQ4Bytes>(rows[r] + at + ahead);
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[r] + at + 2));
      d[r] = dot_u4(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(c, 4), c), low), x);
    }
    // The code offset (q - 8) is the same for every row: subtract it once, folded like the dots.
    const __m256i h = _mm256_sub_epi32(fold4(d[0], d[1], d[2], d[3]), fold4(off, off, off, off));
    const __m128 s = _mm_mul_ps(scales4(rows, at), _mm_set1_ps(xq.d[b]));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), _mm256_set_m128(s, s), acc);
  }
  unfold4(acc, out);
}

// The q8_0 tile on the interleaved layout (interleave_rows4): S groups of four rows (out[4 s + k]: group s, row k),
// each group one stream with its four scales in one load. A group's block holds its rows' codes in runs of four
// (run m of row i at 16 m + 4 i), so each 32-byte load covers all four rows and, against XQuant::x4, leaves lane i
// with a partial dot of row i % 4: the lanes add up across the block's four loads with no horizontal adds, where the
// row-after-row codes needed three per block to fold four rows' sums together (one thread, the matrix in cache:
// 256 x 1024 49-52 -> 62 GB/s, 512 x 2816 33-49 -> 59; decode from DRAM unchanged within the VM's noise, being
// bound by the loads, but batches and faster memory get the difference).
template <int S>
LMF_TARGET_AVX2 void groups_q8(const uint8_t* const* groups, const XQuant& xq, float* out, size_t ahead) {
  constexpr size_t kStep = 4 * kQ8Bytes;
  __m256 acc[S];
  for (int s = 0; s < S; ++s) acc[s] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < xq.nb; ++b) {
    const auto* xb = reinterpret_cast<const __m256i*>(xq.x4.data() + b * 128);
    const __m256i x0 = _mm256_loadu_si256(xb), x1 = _mm256_loadu_si256(xb + 1);
    const __m256i x2 = _mm256_loadu_si256(xb + 2), x3 = _mm256_loadu_si256(xb + 3);
    const __m128 dx = _mm_set1_ps(xq.d[b]);
    for (int g = 0; g < S; ++g) {
      const uint8_t* blk = groups[g] + b * kStep;
      if (ahead) prefetch_ahead<kStep>(blk + ahead);
      const auto* c = reinterpret_cast<const __m256i*>(blk + 8);
      const __m256i w0 = _mm256_loadu_si256(c), w1 = _mm256_loadu_si256(c + 1);
      const __m256i w2 = _mm256_loadu_si256(c + 2), w3 = _mm256_loadu_si256(c + 3);
      // Signed x signed bytes as in dot_i8; the four loads' 16-bit pair sums are widened by one madd each.
      const __m256i p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(w0, w0), _mm256_sign_epi8(x0, w0));
      const __m256i p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(w1, w1), _mm256_sign_epi8(x1, w1));
      const __m256i p2 = _mm256_maddubs_epi16(_mm256_sign_epi8(w2, w2), _mm256_sign_epi8(x2, w2));
      const __m256i p3 = _mm256_maddubs_epi16(_mm256_sign_epi8(w3, w3), _mm256_sign_epi8(x3, w3));
      const __m256i d = _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones)),
                                         _mm256_add_epi32(_mm256_madd_epi16(p2, ones), _mm256_madd_epi16(p3, ones)));
      const __m128 s = _mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk))), dx);
      acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set_m128(s, s), acc[g]);
    }
  }
  for (int g = 0; g < S; ++g) unfold4(acc[g], out + 4 * g);
}

// groups_q8 for T activation rows at once (batched decode, short prompts): each weight load, its |w| and its
// scales serve all T rows, and each row's integer sums and float steps are groups_q8's, so the results are bit for
// bit those of T groups_q8 calls. xs[t], outs[t]: row t's activations and its S groups' outputs.
template <int S, int T>
LMF_TARGET_AVX2 void groups_q8_rows(const uint8_t* const* groups, const XQuant* const* xs, float* const* outs,
                                    size_t ahead) {
  constexpr size_t kStep = 4 * kQ8Bytes;
  __m256 acc[S][T];
  for (int g = 0; g < S; ++g)
    for (int t = 0; t < T; ++t) acc[g][t] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < xs[0]->nb; ++b) {
    const __m256i* px[T];
    for (int t = 0; t < T; ++t) px[t] = reinterpret_cast<const __m256i*>(xs[t]->x4.data() + b * 128);
    for (int g = 0; g < S; ++g) {
      const uint8_t* blk = groups[g] + b * kStep;
      if (ahead) prefetch_ahead<kStep>(blk + ahead);
      const auto* c = reinterpret_cast<const __m256i*>(blk + 8);
      __m256i d[T];
      for (int t = 0; t < T; ++t) d[t] = _mm256_setzero_si256();
      for (int k = 0; k < 4; ++k) {
        const __m256i w = _mm256_loadu_si256(c + k), aw = _mm256_sign_epi8(w, w);
        for (int t = 0; t < T; ++t) {
          const __m256i m = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(_mm256_loadu_si256(px[t] + k), w));
          d[t] = _mm256_add_epi32(d[t], _mm256_madd_epi16(m, ones));
        }
      }
      const __m128 ws = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk)));
      for (int t = 0; t < T; ++t) {
        const __m128 st = _mm_mul_ps(ws, _mm_set1_ps(xs[t]->d[b]));
        acc[g][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[t]), _mm256_set_m128(st, st), acc[g][t]);
      }
    }
  }
  for (int g = 0; g < S; ++g)
    for (int t = 0; t < T; ++t) unfold4(acc[g][t], outs[t] + 4 * g);
}

// XQuant::x4 for groups_q8, once per token (and XQuant::c8 for groups_q8_rows_vnni).
LMF_TARGET_AVX2 void runs_x(XQuant& xq, bool vnni) {
  XQuant::at_least(xq.x4, xq.nb * 128);
  if (vnni) {
    XQuant::at_least(xq.c8, xq.nb * 8);
    for (int64_t b = 0; b < xq.nb; ++b) {
      const int32_t* p4 = xq.p4.data() + b * 8;
      const int32_t even = p4[0] + p4[2] + p4[4] + p4[6], odd = p4[1] + p4[3] + p4[5] + p4[7];
      for (int i = 0; i < 4; ++i) xq.c8[b * 8 + i] = -128 * even, xq.c8[b * 8 + 4 + i] = -128 * odd;
    }
  }
  for (int64_t b = 0; b < xq.nb; ++b) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.q.data() + b * kBlock));
    for (int k = 0; k < 4; ++k) {
      const __m256i idx = _mm256_setr_epi32(2 * k, 2 * k, 2 * k, 2 * k, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq.x4.data() + b * 128 + 32 * k),
                          _mm256_permutevar8x32_epi32(x, idx));
    }
  }
}

// XQuant::q2 and off2 for groups_q4_0, once per token.
LMF_TARGET_AVX2 void pair_halves(XQuant& xq) {
  XQuant::at_least(xq.q2, xq.nb * 64);
  XQuant::at_least(xq.off2, xq.nb * 8);
  for (int64_t b = 0; b < xq.nb; ++b) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.q.data() + b * kBlock));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq.q2.data() + b * 64), _mm256_permute2x128_si256(x, x, 0x00));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq.q2.data() + b * 64 + 32), _mm256_permute2x128_si256(x, x, 0x11));
    const __m256i p4 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.p4.data() + b * 8));
    const __m256i o = _mm256_add_epi32(p4, _mm256_permute2x128_si256(p4, p4, 0x01));  // [p0+p4 .. p3+p7] twice
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq.off2.data() + b * 8), _mm256_slli_epi32(o, 3));
  }
}

LMF_TARGET_AVX2 inline __m256i q4_two_rows(const uint8_t* c, __m256i xlo, __m256i xhi, __m256i off) {
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
  const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v, low), xlo),
                                     _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), xhi));
  return _mm256_sub_epi32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)), off);
}

LMF_TARGET_AVX2 inline float half_sum(__m128 v) {
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

// The interleaved q4_0 tile takes two rows per 32-byte load: rows 0 and 1 (then 2 and 3) have their 16 code bytes
// side by side, so one AND gives both rows' values 0-15 and one shift + AND their values 16-31, multiplied by the
// activations' halves broadcast to both lanes (XQuant::q2, made once per token by pair_halves). The two halves'
// maddubs add in 16 bits (at most 4 x 15 x 127), one madd per pair of rows, and each lane keeps its partial sum to
// the end of the row: no fold per block. The GGUF layout's tile spent most of its time in those folds and inserts
// (the shuffle ports); the partial sums differ, so the two layouts agree to float rounding, not bit for bit.
// S groups of four rows, out[4 s + k] as groups_q8.
template <int S>
LMF_TARGET_AVX2 void groups_q4_0(const uint8_t* const* groups, const XQuant& xq, float* out, size_t ahead) {
  constexpr size_t kStep = 4 * kQ4Bytes;
  __m256 acc01[S], acc23[S];
  for (int g = 0; g < S; ++g) acc01[g] = acc23[g] = _mm256_setzero_ps();
  const __m256i i01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), i23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
  for (int64_t b = 0; b < xq.nb; ++b) {
    const __m256i xlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.q2.data() + b * 64));
    const __m256i xhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.q2.data() + b * 64 + 32));
    const __m256i off = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.off2.data() + b * 8));
    const __m128 dx = _mm_set1_ps(xq.d[b]);
    for (int g = 0; g < S; ++g) {
      const uint8_t* blk = groups[g] + b * kStep;
      if (ahead) prefetch_ahead<kStep>(blk + ahead);
      const __m256 s =
          _mm256_castps128_ps256(_mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk))), dx));
      acc01[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q4_two_rows(blk + 8, xlo, xhi, off)),
                                 _mm256_permutevar8x32_ps(s, i01), acc01[g]);
      acc23[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q4_two_rows(blk + 40, xlo, xhi, off)),
                                 _mm256_permutevar8x32_ps(s, i23), acc23[g]);
    }
  }
  for (int g = 0; g < S; ++g) {
    out[4 * g] = half_sum(_mm256_castps256_ps128(acc01[g]));
    out[4 * g + 1] = half_sum(_mm256_extractf128_ps(acc01[g], 1));
    out[4 * g + 2] = half_sum(_mm256_castps256_ps128(acc23[g]));
    out[4 * g + 3] = half_sum(_mm256_extractf128_ps(acc23[g], 1));
  }
}

// One block of an interleaved q4_0 group for the multi-row tiles: the four rows' scales, and the codes of rows 0-1
// and 2-3 split into low (values 0-15) and high (16-31) nibbles.
struct Q4Block {
  __m128 ws;
  __m256i lo01, hi01, lo23, hi23;
};
LMF_TARGET_AVX2 inline Q4Block q4_block(const uint8_t* blk) {
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i v01 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 8));
  const __m256i v23 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 40));
  return {_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk))), _mm256_and_si256(v01, low),
          _mm256_and_si256(_mm256_srli_epi16(v01, 4), low), _mm256_and_si256(v23, low),
          _mm256_and_si256(_mm256_srli_epi16(v23, 4), low)};
}
// A block's float step for one activation row (scale dx): each pair of rows' lane sums d01 / d23 scaled into its
// accumulator, as groups_q4_0 does.
LMF_TARGET_AVX2 inline void q4_step(__m256i d01, __m256i d23, __m128 ws, float dx, __m256& acc01, __m256& acc23) {
  const __m256i i01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), i23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
  const __m256 st = _mm256_castps128_ps256(_mm_mul_ps(ws, _mm_set1_ps(dx)));
  acc01 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d01), _mm256_permutevar8x32_ps(st, i01), acc01);
  acc23 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d23), _mm256_permutevar8x32_ps(st, i23), acc23);
}
LMF_TARGET_AVX2 inline void q4_outs(__m256 acc01, __m256 acc23, float* out) {
  out[0] = half_sum(_mm256_castps256_ps128(acc01));
  out[1] = half_sum(_mm256_extractf128_ps(acc01, 1));
  out[2] = half_sum(_mm256_castps256_ps128(acc23));
  out[3] = half_sum(_mm256_extractf128_ps(acc23, 1));
}

// groups_q4_0 for T activation rows at once, as groups_q8_rows: each pair of rows' codes is loaded and split into
// nibbles once for all T rows; each row's sums and float steps are groups_q4_0's (bit for bit its results).
template <int S, int T>
LMF_TARGET_AVX2 void groups_q4_0_rows(const uint8_t* const* groups, const XQuant* const* xs, float* const* outs,
                                      size_t ahead) {
  constexpr size_t kStep = 4 * kQ4Bytes;
  __m256 acc01[S][T], acc23[S][T];
  for (int g = 0; g < S; ++g)
    for (int t = 0; t < T; ++t) acc01[g][t] = acc23[g][t] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < xs[0]->nb; ++b) {
    for (int g = 0; g < S; ++g) {
      const uint8_t* blk = groups[g] + b * kStep;
      if (ahead) prefetch_ahead<kStep>(blk + ahead);
      const Q4Block c = q4_block(blk);
      for (int t = 0; t < T; ++t) {
        const auto* q2 = reinterpret_cast<const __m256i*>(xs[t]->q2.data() + b * 64);
        const __m256i xlo = _mm256_loadu_si256(q2), xhi = _mm256_loadu_si256(q2 + 1);
        const __m256i off = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[t]->off2.data() + b * 8));
        const __m256i d01 = _mm256_sub_epi32(
            _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(c.lo01, xlo), _mm256_maddubs_epi16(c.hi01, xhi)),
                              ones),
            off);
        const __m256i d23 = _mm256_sub_epi32(
            _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(c.lo23, xlo), _mm256_maddubs_epi16(c.hi23, xhi)),
                              ones),
            off);
        q4_step(d01, d23, c.ws, xs[t]->d[b], acc01[g][t], acc23[g][t]);
      }
    }
  }
  for (int g = 0; g < S; ++g)
    for (int t = 0; t < T; ++t) q4_outs(acc01[g][t], acc23[g][t], outs[t] + 4 * g);
}

// ---- AVX-512 VNNI tiles (interleaved q8_0 / q4_0, g128, int8) ----
//
// vpdpbusd multiplies unsigned by signed bytes and adds each four products into a 32-bit lane, with no 16-bit
// intermediate: one instruction where AVX2 needs maddubs (and, for signed x signed bytes, two sign ops) and a madd.
// Each lane ends at the same integer as the AVX2 tile's, and the float steps are the same, so these tiles give the
// AVX2 tiles' results bit for bit (Qgemm.VnniTilesEqualAvx2Tiles); on ymm registers with AVX-512VL the compiler
// also has 32 of them for the accumulators.
//
// Prefill runs them on a range of blocks [b0, b1) at a time (prefill_vnni): `state` then holds each (group, row)
// pair's accumulators between ranges, at state + g * gstride + t * width (width 8 floats for q8_0, 16 for q4_0),
// read when b0 > 0 and written when b1 < nb; the sums are the same as in one pass. state == nullptr: one pass.
struct VnniRange {
  int64_t b0 = 0, b1 = -1;  // b1 < 0: to the end
  float* state = nullptr;
  int64_t gstride = 0;
};

// groups_q8_rows: the q8_0 codes become unsigned by w ^ 0x80 = w + 128 (one op per load, for all T rows), and
// each lane starts from -128 x the sum of the activation codes it meets (XQuant::c8), so it ends at sum(w x).
template <int S, int T>
LMF_TARGET_VNNI void groups_q8_rows_vnni(const uint8_t* const* groups, const XQuant* const* xs, float* const* outs,
                                         size_t ahead, VnniRange rg = {}) {
  constexpr size_t kStep = 4 * kQ8Bytes;
  const int64_t nb = xs[0]->nb, b1 = rg.b1 < 0 ? nb : rg.b1;
  const auto slot = [&](int g, int t) { return rg.state + g * rg.gstride + t * 8; };
  __m256 acc[S][T];
  for (int g = 0; g < S; ++g)
    for (int t = 0; t < T; ++t) acc[g][t] = rg.b0 > 0 ? _mm256_loadu_ps(slot(g, t)) : _mm256_setzero_ps();
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = rg.b0; b < b1; ++b) {
    const __m256i* px[T];
    for (int t = 0; t < T; ++t) px[t] = reinterpret_cast<const __m256i*>(xs[t]->x4.data() + b * 128);
    for (int g = 0; g < S; ++g) {
      const uint8_t* blk = groups[g] + b * kStep;
      if (ahead) prefetch_ahead<kStep>(blk + ahead);
      const auto* c = reinterpret_cast<const __m256i*>(blk + 8);
      __m256i d[T];
      for (int t = 0; t < T; ++t) d[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[t]->c8.data() + b * 8));
      for (int k = 0; k < 4; ++k) {
        const __m256i wu = _mm256_xor_si256(_mm256_loadu_si256(c + k), flip);
        for (int t = 0; t < T; ++t) d[t] = _mm256_dpbusd_epi32(d[t], wu, _mm256_loadu_si256(px[t] + k));
      }
      const __m128 ws = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk)));
      for (int t = 0; t < T; ++t) {
        const __m128 st = _mm_mul_ps(ws, _mm_set1_ps(xs[t]->d[b]));
        acc[g][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[t]), _mm256_set_m128(st, st), acc[g][t]);
      }
    }
  }
  for (int g = 0; g < S; ++g)
    for (int t = 0; t < T; ++t) {
      if (b1 < nb) {
        _mm256_storeu_ps(slot(g, t), acc[g][t]);
      } else {
        unfold4(acc[g][t], outs[t] + 4 * g);
      }
    }
}

// tile4_q8 for int8 rows (one f32 scale a row) against T activation rows: the codes become unsigned by w ^ 0x80 and
// each lane starts from -128 x the sum of the four activation codes it meets (XQuant::p4 is exactly those sums), so
// it ends at dot_i8's integer; the fold of four rows and the float steps are tile4_q8's. outs[t][r] for the four
// rows; state slot t at state + t * 8.
template <int T>
LMF_TARGET_VNNI void tile4_int8_rows_vnni(const uint8_t* const* rows, const float* row_scale, const XQuant* const* xs,
                                          float* const* outs, size_t ahead, VnniRange rg = {}) {
  const int64_t nb = xs[0]->nb, b1 = rg.b1 < 0 ? nb : rg.b1;
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = rg.b0 > 0 ? _mm256_loadu_ps(rg.state + t * 8) : _mm256_setzero_ps();
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = rg.b0; b < b1; ++b) {
    __m256i wu[4];
    for (int r = 0; r < 4; ++r) {
      const uint8_t* c = rows[r] + b * kBlock;
      if (ahead) prefetch_ahead<kBlock>(c + ahead);
      wu[r] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)), flip);
    }
    for (int t = 0; t < T; ++t) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[t]->q.data() + b * kBlock));
      const __m256i corr = _mm256_sub_epi32(
          _mm256_setzero_si256(),
          _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[t]->p4.data() + b * 8)), 7));
      __m256i d[4];
      for (int r = 0; r < 4; ++r) d[r] = _mm256_dpbusd_epi32(corr, wu[r], x);
      const __m128 sx = _mm_set1_ps(xs[t]->d[b]);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(fold4(d[0], d[1], d[2], d[3])), _mm256_set_m128(sx, sx), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    if (b1 < nb) {
      _mm256_storeu_ps(rg.state + t * 8, acc[t]);
      continue;
    }
    unfold4(acc[t], outs[t]);
    for (int r = 0; r < 4; ++r) outs[t][r] *= row_scale[r];
  }
}

// groups_q4_0_rows: the nibbles are unsigned already; two vpdpbusd per pair of rows replace two maddubs, an add
// and a madd.
template <int S, int T>
LMF_TARGET_VNNI void groups_q4_0_rows_vnni(const uint8_t* const* groups, const XQuant* const* xs, float* const* outs,
                                           size_t ahead, VnniRange rg = {}) {
  constexpr size_t kStep = 4 * kQ4Bytes;
  const int64_t nb = xs[0]->nb, b1 = rg.b1 < 0 ? nb : rg.b1;
  const auto slot = [&](int g, int t) { return rg.state + g * rg.gstride + t * 16; };
  __m256 acc01[S][T], acc23[S][T];
  for (int g = 0; g < S; ++g)
    for (int t = 0; t < T; ++t) {
      acc01[g][t] = rg.b0 > 0 ? _mm256_loadu_ps(slot(g, t)) : _mm256_setzero_ps();
      acc23[g][t] = rg.b0 > 0 ? _mm256_loadu_ps(slot(g, t) + 8) : _mm256_setzero_ps();
    }
  for (int64_t b = rg.b0; b < b1; ++b) {
    for (int g = 0; g < S; ++g) {
      const uint8_t* blk = groups[g] + b * kStep;
      if (ahead) prefetch_ahead<kStep>(blk + ahead);
      const Q4Block c = q4_block(blk);
      for (int t = 0; t < T; ++t) {
        const auto* q2 = reinterpret_cast<const __m256i*>(xs[t]->q2.data() + b * 64);
        const __m256i xlo = _mm256_loadu_si256(q2), xhi = _mm256_loadu_si256(q2 + 1);
        const __m256i off = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[t]->off2.data() + b * 8));
        const __m256i zero = _mm256_setzero_si256();
        const __m256i d01 =
            _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, c.lo01, xlo), c.hi01, xhi), off);
        const __m256i d23 =
            _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, c.lo23, xlo), c.hi23, xhi), off);
        q4_step(d01, d23, c.ws, xs[t]->d[b], acc01[g][t], acc23[g][t]);
      }
    }
  }
  for (int g = 0; g < S; ++g)
    for (int t = 0; t < T; ++t) {
      if (b1 < nb) {
        _mm256_storeu_ps(slot(g, t), acc01[g][t]);
        _mm256_storeu_ps(slot(g, t) + 8, acc23[g][t]);
      } else {
        q4_outs(acc01[g][t], acc23[g][t], outs[t] + 4 * g);
      }
    }
}

template <int R>
LMF_TARGET_AVX2 void tile_q4_0(const uint8_t* const* rows, const XQuant& xq, float* out, size_t ahead) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int64_t b = 0; b < xq.nb; ++b) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.q.data() + b * kBlock));
    const __m256i off =
        _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.p4.data() + b * 8)), 3);
    const float dx = xq.d[b];
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = rows[r] + b * kQ4Bytes;
      if (ahead) prefetch_ahead<kQ4Bytes>(blk + ahead);
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
      const __m256i w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(c, 4), c), low);
      const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(dot_u4(w, x), off));
      acc[r] = _mm256_fmadd_ps(f, _mm256_set1_ps(f16(blk) * dx), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

// g128 rows against activations with one scale per 128 values (XQuant::quantize with span 128): a group's four
// blocks are summed in integers (the four maddubs add in 16 bits: at most 4 x 2 x 15 x 127) and scaled once, where
// per-32 activation scales took a convert and a multiply-add per block and row (20 -> 32-34 GB/s from L2).
// Row r's codes at rows[r], its scales at scales[r] and zeros at zeros[r] (zeros == nullptr: symmetric).
template <int R>
LMF_TARGET_AVX2 void tile_g128(const uint8_t* const* rows, const uint16_t* const* scales, const uint8_t* const* zeros,
                               int64_t groups, const XQuant& xq, float* out, size_t ahead) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  for (int64_t g = 0; g < groups; ++g) {
    const int8_t* xg = xq.q.data() + g * kGroup;
    __m256i x[4];
    for (int sb = 0; sb < 4; ++sb) x[sb] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + sb * kBlock));
    const float dx = xq.d[g * 4];
    // Each lane's share of the activations' sum (|.| <= 16 x 127, so it also reads as the low int16 of its lane);
    // a lane's dot minus zero x share is its part of sum((code - zero) x). Symmetric codes have zero 8.
    const auto* p4 = reinterpret_cast<const __m256i*>(xq.p4.data() + g * 32);
    const __m256i share = _mm256_add_epi32(_mm256_add_epi32(_mm256_loadu_si256(p4), _mm256_loadu_si256(p4 + 1)),
                                           _mm256_add_epi32(_mm256_loadu_si256(p4 + 2), _mm256_loadu_si256(p4 + 3)));
    const __m256i off8 = _mm256_slli_epi32(share, 3);
    for (int r = 0; r < R; ++r) {
      const uint8_t* c = rows[r] + g * (kGroup / 2);
      if (ahead) prefetch_ahead<kGroup / 2>(c + ahead);
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32));
      // bytes 0-31: values 0-31 (low nibbles) and 64-95 (high); bytes 32-63: values 32-63 and 96-127.
      const __m256i p = _mm256_add_epi16(
          _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v0, low), x[0]),
                           _mm256_maddubs_epi16(_mm256_and_si256(v1, low), x[1])),
          _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v0, 4), low), x[2]),
                           _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v1, 4), low), x[3])));
      // zero x share in one madd: the zero sits in the low int16 of each lane, 0 in the high one.
      const __m256i off = zeros ? _mm256_madd_epi16(share, _mm256_set1_epi32(zeros[r][g])) : off8;
      const __m256i d = _mm256_sub_epi32(_mm256_madd_epi16(p, ones), off);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(_cvtsh_ss(scales[r][g]) * dx), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

// k-quant rows against activations with one scale per 256 values (span 256, as ggml's q8_K): a super-block's
// sub-blocks are multiplied by their integer scales in 32-bit lanes and summed, then scaled by d x dx once; the
// offsets (q4_K's mins, q6_K's 32) are subtracted through the activations' sums per 16 values (xq.s16), so every
// integer step is exact and the float steps are the portable path's, in another order.
//
// Broadcasts of int16 lane j of a 128-bit register to all eight int16 lanes of each 128-bit half (pshufb controls).
// Masks 0-7: lane j in both halves (q4_K's sub-block j); 8-11: lane 2k in the low half, 2k + 1 in the high one
// (q6_K's sub-blocks 2k, 2k + 1 of a half). A constant table: building them per call cost ~8% of a 1024-wide row.
struct KLaneMasks {
  alignas(32) uint8_t m[12][32];
  constexpr KLaneMasks() : m{} {
    for (int j = 0; j < 12; ++j) {
      const int lo = j < 8 ? j : 2 * (j - 8), hi = j < 8 ? j : 2 * (j - 8) + 1;
      for (int i = 0; i < 16; i += 2) {
        m[j][i] = static_cast<uint8_t>(2 * lo), m[j][i + 1] = static_cast<uint8_t>(2 * lo + 1);
        m[j][16 + i] = static_cast<uint8_t>(2 * hi), m[j][16 + i + 1] = static_cast<uint8_t>(2 * hi + 1);
      }
    }
  }
};
constexpr KLaneMasks kKLaneMasks;
LMF_TARGET_AVX2 LMF_ALWAYS_INLINE __m256i k_lane_mask(int j) {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(kKLaneMasks.m[j]));
}

// q4_K_scale_words in a register (scales in bytes 0-7, mins in 8-15).
LMF_TARGET_AVX2 LMF_ALWAYS_INLINE __m128i q4_K_scales_avx2(const uint8_t* packed) {
  const KScaleWords w = q4_K_scale_words(packed);
  return _mm_set_epi32(static_cast<int>(w.m47), static_cast<int>(w.m03), static_cast<int>(w.s47),
                       static_cast<int>(w.s03));
}

// Codes 32k..32k+31 (k = 0..3) of half h of a q6_K super-block, 0..63 a byte: low nibbles from ql, the top two bits
// from qh (q6_K_code's layout, 32 values a vector).
LMF_TARGET_AVX2 LMF_ALWAYS_INLINE void q6_K_codes(const uint8_t* blk, int h, __m256i* q) {
  const __m256i low = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(3);
  const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
  const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
  for (int k = 0; k < 4; ++k) {
    const __m256i lo4 = k & 1 ? ql1 : ql0;
    const __m256i nib = k < 2 ? _mm256_and_si256(lo4, low) : _mm256_and_si256(_mm256_srli_epi16(lo4, 4), low);
    q[k] = _mm256_or_si256(nib, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), two), 4));
  }
}

// The codes of chunk c (values 64c..64c+63) of a q4_K / q5_K super-block as two vectors of bytes: lo = sub-block 2c,
// hi = sub-block 2c + 1 (0..15, or 0..31 with q5_K's fifth bits from qh, loaded once a super-block).
template <bool Q5>
LMF_TARGET_AVX2 LMF_ALWAYS_INLINE void qk45_chunk(const uint8_t* blk, __m256i qh, int c, __m256i& lo, __m256i& hi) {
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + (Q5 ? 48 : 16) + 32 * c));
  lo = _mm256_and_si256(v, low);
  hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  if constexpr (Q5) {
    const __m256i one = _mm256_set1_epi8(1);
    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
  }
}

template <int R, bool Q5 = false>
LMF_TARGET_AVX2 void tile_q45_K(const uint8_t* const* rows, const XQuant& xq, float* out, size_t ahead) {
  constexpr size_t kBytes = Q5 ? kQ5KBytes : kQ4KBytes;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  // Sub-block j's scale broadcast from the int16 scales (lane j), both halves alike.
  __m256i pick[8];
  for (int j = 0; j < 8; ++j) pick[j] = k_lane_mask(j);
  for (int64_t s = 0; s < xq.nb / 8; ++s) {
    const int8_t* xs = xq.q.data() + s * kSuper;
    const __m256i s16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.s16.data() + s * 16));
    const float dx = xq.d[s * 8];
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = rows[r] + s * kBytes;
      if (ahead) prefetch_ahead<kBytes>(blk + ahead);
      const __m128i sm8 = q4_K_scales_avx2(blk + 4);
      const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm8));
      // mins as [m0, m0, m1, m1, ...]: madd with the sums per 16 gives min_j x (sum of sub-block j) in lane j.
      const __m128i m8 = _mm_unpackhi_epi64(sm8, sm8);
      const __m256i mins = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8)), s16);
      __m256i sum = _mm256_setzero_si256();
      const __m256i qh = Q5 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16)) : _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        __m256i wlo, whi;
        qk45_chunk<Q5>(blk, qh, c, wlo, whi);
        const __m256i lo = _mm256_maddubs_epi16(wlo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs + 64 * c)));
        const __m256i hi =
            _mm256_maddubs_epi16(whi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs + 64 * c + 32)));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(lo, _mm256_shuffle_epi8(sc16, pick[2 * c])));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(hi, _mm256_shuffle_epi8(sc16, pick[2 * c + 1])));
      }
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(f16(blk) * dx), acc[r]);
      acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_set1_ps(f16(blk + 2) * dx), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

template <int R>
LMF_TARGET_AVX2 void tile_q6_K(const uint8_t* const* rows, const XQuant& xq, float* out, size_t ahead) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  // Values 32k..32k+31 of a half: lanes 0-7 of maddubs cover sub-block 2k (scale 2k of the half), 8-15 sub-block
  // 2k + 1.
  __m256i pick[4];
  for (int k = 0; k < 4; ++k) pick[k] = k_lane_mask(8 + k);
  for (int64_t s = 0; s < xq.nb / 8; ++s) {
    const int8_t* xs = xq.q.data() + s * kSuper;
    const __m256i s16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq.s16.data() + s * 16));
    const float dx = xq.d[s * 8];
    for (int r = 0; r < R; ++r) {
      const uint8_t* blk = rows[r] + s * kQ6KBytes;
      if (ahead) prefetch_ahead<kQ6KBytes>(blk + ahead);
      const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
      // 32 x sum over sub-blocks of scale_i x (sum of sub-block i's activations): the codes' offset.
      const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, s16), 5);
      __m256i sum = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        __m256i q[4];
        q6_K_codes(blk, h, q);
        const __m256i half_sc =
            h == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00) : _mm256_permute2x128_si256(sc16, sc16, 0x11);
        for (int k = 0; k < 4; ++k) {
          const __m256i p =
              _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs + 128 * h + 32 * k)));
          sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(half_sc, pick[k])));
        }
      }
      acc[r] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sum, off)), _mm256_set1_ps(f16(blk + 208) * dx), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

// One k-quant weight row against T activation rows (batched decode, short prompts): each super-block's scales and
// codes are unpacked once and dotted with the T rows, where tile_q45_K / tile_q6_K unpack them again for every
// activation row. The integer sums and the float steps are the one-row tiles' own per activation row (summed in
// another order), so the results agree with them to rounding.
template <int T, bool Q5 = false>
LMF_TARGET_AVX2 void tile_q45_K_rows(const uint8_t* row, const XQuant* const* xs, float* const* outs, int64_t r) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  __m256i pick[8];
  for (int j = 0; j < 8; ++j) pick[j] = k_lane_mask(j);
  const int64_t ns = xs[0]->nb / 8;
  for (int64_t s = 0; s < ns; ++s) {
    const uint8_t* blk = row + s * (Q5 ? kQ5KBytes : kQ4KBytes);
    const __m128i sm8 = q4_K_scales_avx2(blk + 4);
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm8));
    const __m128i m8 = _mm_unpackhi_epi64(sm8, sm8);
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
    __m256i sum[T];
    for (int t = 0; t < T; ++t) sum[t] = _mm256_setzero_si256();
    const __m256i qh = Q5 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16)) : _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      __m256i lo, hi;
      qk45_chunk<Q5>(blk, qh, c, lo, hi);
      const __m256i slo = _mm256_shuffle_epi8(sc16, pick[2 * c]), shi = _mm256_shuffle_epi8(sc16, pick[2 * c + 1]);
      for (int t = 0; t < T; ++t) {
        const int8_t* xt = xs[t]->q.data() + s * kSuper + 64 * c;
        const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt)));
        const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt + 32)));
        sum[t] = _mm256_add_epi32(sum[t], _mm256_add_epi32(_mm256_madd_epi16(plo, slo), _mm256_madd_epi16(phi, shi)));
      }
    }
    const __m128 dd =
        _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u16(blk) | uint32_t{load_u16(blk + 2)} << 16)));
    const float d = _mm_cvtss_f32(dd), dmin = _mm_cvtss_f32(_mm_movehdup_ps(dd));
    for (int t = 0; t < T; ++t) {
      const __m256i s16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[t]->s16.data() + s * 16));
      const float dx = xs[t]->d[s * 8];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), _mm256_set1_ps(d * dx), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mins16, s16)), _mm256_set1_ps(dmin * dx), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) outs[t][r] = hsum(acc[t]);
}

template <int T>
LMF_TARGET_AVX2 void tile_q6_K_rows(const uint8_t* row, const XQuant* const* xs, float* const* outs, int64_t r) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  __m256i pick[4];
  for (int k = 0; k < 4; ++k) pick[k] = k_lane_mask(8 + k);
  const int64_t ns = xs[0]->nb / 8;
  for (int64_t s = 0; s < ns; ++s) {
    const uint8_t* blk = row + s * kQ6KBytes;
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
    __m256i sum[T];
    for (int t = 0; t < T; ++t) {
      const __m256i s16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs[t]->s16.data() + s * 16));
      sum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(sc16, s16), 5));
    }
    for (int h = 0; h < 2; ++h) {
      __m256i q[4];
      q6_K_codes(blk, h, q);
      const __m256i half_sc =
          h == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00) : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      for (int k = 0; k < 4; ++k) {
        const __m256i sc = _mm256_shuffle_epi8(half_sc, pick[k]);
        for (int t = 0; t < T; ++t) {
          const int8_t* xt = xs[t]->q.data() + s * kSuper + 128 * h + 32 * k;
          const __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt)));
          sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(p, sc));
        }
      }
    }
    const float d = f16(blk + 208);
    for (int t = 0; t < T; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), _mm256_set1_ps(d * xs[t]->d[s * 8]), acc[t]);
  }
  for (int t = 0; t < T; ++t) outs[t][r] = hsum(acc[t]);
}

// tile_g128 for T activation rows on AVX-512 VNNI: each group's codes are loaded and split into nibbles once for
// the T rows, and four vpdpbusd per (row, activation row) replace four maddubs, three adds and a madd; the lanes end
// at tile_g128's integers and the float steps are its own, so outs[t][r] is tile_g128's out[r] for xs[t] bit for
// bit. The block range of `rg` is in blocks of 32 values (multiples of 4: whole groups); state slot (r, t) at
// state + r * gstride + t * 8.
template <int R, int T>
LMF_TARGET_VNNI void tile_g128_rows_vnni(const uint8_t* const* rows, const uint16_t* const* scales,
                                         const uint8_t* const* zeros, const XQuant* const* xs, float* const* outs,
                                         size_t ahead, VnniRange rg = {}) {
  const int64_t groups = xs[0]->nb / 4, g1 = rg.b1 < 0 ? groups : rg.b1 / 4;
  const auto slot = [&](int r, int t) { return rg.state + r * rg.gstride + t * 8; };
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = rg.b0 > 0 ? _mm256_loadu_ps(slot(r, t)) : _mm256_setzero_ps();
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int64_t g = rg.b0 / 4; g < g1; ++g) {
    __m256i share[T];
    float dx[T];
    for (int t = 0; t < T; ++t) {
      const auto* p4 = reinterpret_cast<const __m256i*>(xs[t]->p4.data() + g * 32);
      share[t] = _mm256_add_epi32(_mm256_add_epi32(_mm256_loadu_si256(p4), _mm256_loadu_si256(p4 + 1)),
                                  _mm256_add_epi32(_mm256_loadu_si256(p4 + 2), _mm256_loadu_si256(p4 + 3)));
      dx[t] = xs[t]->d[g * 4];
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* c = rows[r] + g * (kGroup / 2);
      if (ahead) prefetch_ahead<kGroup / 2>(c + ahead);
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32));
      const __m256i lo0 = _mm256_and_si256(v0, low), lo1 = _mm256_and_si256(v1, low);
      const __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), low);
      const __m256i hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), low);
      const float sr = _cvtsh_ss(scales[r][g]);
      for (int t = 0; t < T; ++t) {
        const auto* xg = reinterpret_cast<const __m256i*>(xs[t]->q.data() + g * kGroup);
        const __m256i off =
            zeros ? _mm256_madd_epi16(share[t], _mm256_set1_epi32(zeros[r][g])) : _mm256_slli_epi32(share[t], 3);
        __m256i d = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo0, _mm256_loadu_si256(xg));
        d = _mm256_dpbusd_epi32(d, lo1, _mm256_loadu_si256(xg + 1));
        d = _mm256_dpbusd_epi32(d, hi0, _mm256_loadu_si256(xg + 2));
        d = _mm256_dpbusd_epi32(d, hi1, _mm256_loadu_si256(xg + 3));
        acc[r][t] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(d, off)), _mm256_set1_ps(sr * dx[t]), acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      if (g1 < groups) {
        _mm256_storeu_ps(slot(r, t), acc[r][t]);
      } else {
        outs[t][r] = hsum(acc[r][t]);
      }
    }
}

LMF_TARGET_AVX2 inline __m256 load8(const uint8_t* p, bool bf16) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) : _mm256_cvtph_ps(h);
}

// f32 / f16 / bf16 rows (decode's GEMV, and batched decode): R weight rows in lockstep (R streams) against T
// activation rows, each 8-value load of a weight row (and its widening) serving all T. One accumulator per (row,
// activation row), summed over the row in steps of 8 values, then the tail: the same sums whatever R and T are, so a
// sequence decodes bit for bit the same in a batch as alone. OpenBLAS's sgemv left a third of the copy bandwidth
// unused at the engine's shapes; the earlier tiles here (two accumulators a row, one activation row a pass, or two
// rows and two streams a pass) were slower for batches and, for bf16, for one row too. In-process A/B (weights from
// DRAM, 2 threads, 20 ABBA pairs, against those tiles): f32 n = 1 1.01-1.04x, n = 4 1.19-1.40x, n = 8 1.42-1.61x;
// bf16 n = 1 1.25-1.32x, n = 4 1.32-1.36x, n = 8 1.54-1.61x (docs/PERFORMANCE.md). R * T + T + 1 registers: T <= 3
// with R = 4 and AVX2's 16 (T <= 6 where AVX-512VL gives 32: tile_float_rows_wide). outs[t][r]: row r against
// activation row t. Always inlined, so that inside tile_float_rows_wide it is compiled for that function's target.
template <int R, int T, QFormat F>
LMF_TARGET_AVX2 inline __attribute__((always_inline)) void tile_float_rows(const uint8_t* const* rows,
                                                                           const float* const* xs, int64_t cols,
                                                                           float (*outs)[R], size_t ahead) {
  constexpr bool f32 = F == QFormat::F32, bf16 = F == QFormat::BF16;
  constexpr size_t esize = f32 ? 4 : 2;
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    __m256 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(xs[t] + j);
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = rows[r] + static_cast<size_t>(j) * esize;
      if (ahead && j % (64 / esize) == 0) prefetch_ahead<64>(p + ahead);
      const __m256 w = f32 ? _mm256_loadu_ps(reinterpret_cast<const float*>(p)) : load8(p, bf16);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(w, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float s = hsum(acc[r][t]);
      for (int64_t c = j; c < cols; ++c) {
        float v;
        if constexpr (f32) {
          v = reinterpret_cast<const float*>(rows[r])[c];
        } else {
          const uint16_t h = load_u16(rows[r] + c * 2);
          v = bf16 ? bf16_to_float(h) : _cvtsh_ss(h);
        }
        s = std::fma(v, xs[t][c], s);  // explicitly fused: the same under either target
      }
      outs[t][r] = s;
    }
  }
}

// tile_float_rows for the weight's format (F32, F16 or BF16), inlined into the two entry points below, each compiled
// for its own target.
template <int R, int T>
LMF_TARGET_AVX2 inline __attribute__((always_inline)) void float_rows_by_format(QFormat f, const uint8_t* const* rows,
                                                                                const float* const* xs, int64_t cols,
                                                                                float (*outs)[R], size_t ahead) {
  if (f == QFormat::F32) {
    tile_float_rows<R, T, QFormat::F32>(rows, xs, cols, outs, ahead);
  } else if (f == QFormat::BF16) {
    tile_float_rows<R, T, QFormat::BF16>(rows, xs, cols, outs, ahead);
  } else {
    tile_float_rows<R, T, QFormat::F16>(rows, xs, cols, outs, ahead);
  }
}

template <int R, int T>
LMF_TARGET_AVX2 void tile_float_rows(QFormat f, const uint8_t* const* rows, const float* const* xs, int64_t cols,
                                     float (*outs)[R], size_t ahead) {
  float_rows_by_format<R, T>(f, rows, xs, cols, outs, ahead);
}

// tile_float_rows compiled with AVX-512VL, whose 32 vector registers (ymm16-31 with EVEX encodings) hold the 4 x 6
// accumulators of six activation rows, where AVX2's 16 stop at three: each weight load (and bf16 / f16 widening)
// then serves twice the rows. The same operations in the same order, so the same results, bit for bit.
template <int R, int T>
LMF_TARGET_VNNI void tile_float_rows_wide(QFormat f, const uint8_t* const* rows, const float* const* xs, int64_t cols,
                                          float (*outs)[R], size_t ahead) {
  static_assert(R * T + T + 1 <= 32, "more accumulators than AVX-512VL's registers");
  float_rows_by_format<R, T>(f, rows, xs, cols, outs, ahead);
}

// R rows (grouped: R groups of four interleaved rows, out[4 k + i] for group k's row i) starting at the rows in
// first[0, R), against one activation row.
template <int R>
LMF_TARGET_AVX2 void tile_avx2(const QWeight& w, const int64_t* first, bool grouped, const float* x, const XQuant& xq,
                               float* out, size_t ahead) {
  const size_t stride = row_bytes(w);
  const uint8_t* rows[R];
  for (int k = 0; k < R; ++k) rows[k] = static_cast<const uint8_t*>(w.codes) + static_cast<size_t>(first[k]) * stride;
  switch (w.format) {
    case QFormat::F32:
    case QFormat::F16:
    case QFormat::BF16: {
      float o[1][R];
      tile_float_rows<R, 1>(w.format, rows, &x, w.cols, o, ahead);
      for (int r = 0; r < R; ++r) out[r] = o[0][r];
      break;
    }
    case QFormat::Q8_0:
      if (grouped) {
        groups_q8<R>(rows, xq, out, ahead);
      } else if constexpr (R == 4) {
        tile4_q8(rows, xq, nullptr, out, ahead);
      } else {
        tile_q8<R>(rows, xq, nullptr, out, ahead);
      }
      break;
    case QFormat::INT8: {
      float scale[R];
      for (int k = 0; k < R; ++k) scale[k] = static_cast<const float*>(w.scales)[first[k]];
      if constexpr (R == 4) {
        tile4_q8(rows, xq, scale, out, ahead);
      } else {
        tile_q8<R>(rows, xq, scale, out, ahead);
      }
      break;
    }
    case QFormat::Q4_0:
      if (grouped) {
        groups_q4_0<R>(rows, xq, out, ahead);
      } else if constexpr (R == 4) {
        tile4_q4_0(rows, xq, out, ahead);
      } else {
        tile_q4_0<R>(rows, xq, out, ahead);
      }
      break;
    case QFormat::Q4_G128:
    case QFormat::Q4_G128_ASYM: {
      const int64_t groups = w.cols / kGroup;
      const uint16_t* scales[R];
      const uint8_t* zeros[R];
      for (int k = 0; k < R; ++k) {
        scales[k] = static_cast<const uint16_t*>(w.scales) + first[k] * groups;
        zeros[k] = static_cast<const uint8_t*>(w.zeros) + first[k] * groups;
      }
      tile_g128<R>(rows, scales, w.format == QFormat::Q4_G128_ASYM ? zeros : nullptr, groups, xq, out, ahead);
      break;
    }
    case QFormat::Q4_K:
      tile_q45_K<R>(rows, xq, out, ahead);
      break;
    case QFormat::Q5_K:
      tile_q45_K<R, true>(rows, xq, out, ahead);
      break;
    case QFormat::Q6_K:
      tile_q6_K<R>(rows, xq, out, ahead);
      break;
  }
}

// max |x[j]| over n values (a multiple of 8).
LMF_TARGET_AVX2 inline float amax_avx2(const float* x, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
  __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  return _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
}
// XQuant::quantize with the same arithmetic (amax / 127 over each span, x * (1 / d) rounded to nearest even), 32
// values at a time.
LMF_TARGET_AVX2 void quantize_avx2(XQuant& xq, const float* x, int64_t cols, int64_t span) {
  xq.resize(cols);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  float db = 0.0f, id = 0.0f;
  for (int64_t b = 0; b < xq.nb; ++b) {
    const float* xb = x + b * kBlock;
    if (b * kBlock % span == 0) {
      db = amax_avx2(xb, span) / 127.0f;
      id = db > 0.0f ? 1.0f / db : 0.0f;
    }
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * i), vid));
    // packs work within 128-bit halves: dwords come out as (0-3, 8-11, 16-19, 24-27 | 4-7, ...), hence the permute.
    const __m256i codes = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3])), perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq.q.data() + b * kBlock), codes);
    const __m256i p4 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, codes), ones16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq.p4.data() + b * 8), p4);
    xq.d[b] = db;
  }
}

// How far ahead of each stream the kernels prefetch, in bytes (2026-12-06, Zen 4, infer-250m decode, 4 streams:
// 1 KiB and 2 KiB within a few % for f32, 2 KiB best for q8_0; 4 KiB and more lost 5-10%).
size_t prefetch_distance(QFormat f) {
  return f == QFormat::F32 ? 1024 : 2048;
}

// Rows [r0, r1) for each of the n activation rows.
//
// Decode reads every weight byte once, so its speed is the rate at which a core pulls sequential bytes from DRAM.
// One sequential stream per core, even prefetched far ahead in software, stops well short of what the memory
// gives: measured here (2 threads, 1 GiB, AVX2 loads), one stream per thread read 38-44 GB/s, less than the copy
// probe's read + write figure, while four streams per thread at least 16 KiB apart, each prefetched 2 KiB ahead,
// read 50-56 GB/s (two: 44-51; eight: 47). The chunk is therefore cut into kStreams parts walked in lockstep, one
// row (or group of four interleaved rows) of each part per step: f32 decode of infer-250m +47%, q8_0 +14-28%
// (PERFORMANCE.md, decode rework part 6). Batches read a step's rows once from memory and n - 1 times from cache.
constexpr int kStreams = 4;

// How rows_avx2 cuts rows [r0, r1) into its streams: stream k starts at row r0 + k * len * unit and takes `len`
// steps of `unit` rows (4: the interleaved layout's groups, up to grouped_end; rows4 chunks start on a multiple of
// 4); what the streams leave over runs after them. Also where the idle worker's prefetch hints point (post_hints).
struct StreamSplit {
  int64_t unit, len, grouped_end;
};
inline StreamSplit split_streams(bool grouped, int64_t rows, int64_t r0, int64_t r1) {
  const int64_t grouped_end = grouped ? std::max(r0, std::min(r1, rows / 4 * 4)) : r0;
  const int64_t units = grouped ? (grouped_end - r0) / 4 : r1 - r0;
  return {grouped ? 4 : 1, units / kStreams, grouped_end};
}

LMF_TARGET_AVX2 void rows_avx2(const QWeight& w, const float* x, const XQuant* xq, int64_t n, int64_t r0, int64_t r1,
                               float* y, bool accumulate, bool vnni) {
  const bool grouped = w.rows4;
  // Named copies, not a structured binding: lambdas below use them (clang 14, `make fuzz`'s compiler, cannot
  // capture structured bindings).
  const StreamSplit streams = split_streams(grouped, w.rows, r0, r1);
  const int64_t unit = streams.unit, len = streams.len, grouped_end = streams.grouped_end;
  const size_t ahead = prefetch_distance(w.format);
  float tmp[4 * kStreams];
  const auto put = [&](int64_t t, int64_t row, float v) {
    float& o = y[t * w.rows + row];
    o = accumulate ? o + v : v;
  };
  // Interleaved q8_0 and q4_0 take the activation rows up to four at a time (groups_q8_rows, groups_q4_0_rows):
  // batched decode of 2-32 sequences 1.06-1.2x faster (in-process A/B, infer-250m; PERFORMANCE.md part 11). With
  // AVX-512 VNNI (vnni: the caller checked the CPU) their VNNI forms take the rows, with a last odd one as well. One
  // activation row stays on the AVX2 tile: decode is bound by the weights' bytes, and there the VNNI tiles were
  // 5-7% slower end to end (infer-250m, Zen 4).
  const bool g128 = w.format == QFormat::Q4_G128 || w.format == QFormat::Q4_G128_ASYM;
  // The g128 formats on VNNI likewise (tile_g128_rows_vnni), one weight row of each stream a step.
  const bool g128_rows = vnni && g128 && n >= 2;
  // int8 too (tile4_int8_rows_vnni): the four streams' rows folded as tile4_q8 folds them.
  const bool int8_rows = vnni && w.format == QFormat::INT8 && n >= 2;
  // The k-quants: up to four activation rows a pass (tile_q45_K_rows / tile_q6_K_rows), a weight row at a time.
  const bool k_rows = is_k_format(w.format) && n >= 2;
  // f32 / f16 / bf16: up to three activation rows a pass (tile_float_rows), six with AVX-512VL (tile_float_rows_wide).
  const bool float_rows = w.format == QFormat::F32 || w.format == QFormat::F16 || w.format == QFormat::BF16;
  const bool wide = vnni && float_rows;
  static_assert(kStreams == 4, "tile4_int8_rows_vnni takes one row of each of four streams");
  vnni = vnni && grouped && (w.format == QFormat::Q8_0 || w.format == QFormat::Q4_0) && n >= 2;
  const bool multi = grouped && (w.format == QFormat::Q8_0 || w.format == QFormat::Q4_0) && n >= 2;
  float tmpm[4][4 * kStreams];
  int64_t first[kStreams];
  for (int64_t i = 0; i < len; ++i) {
    // Where this step's rows (or groups of four) start in each stream.
    const uint8_t* rows[kStreams];
    for (int k = 0; k < kStreams; ++k) {
      first[k] = r0 + (k * len + i) * unit;
      rows[k] = static_cast<const uint8_t*>(w.codes) + static_cast<size_t>(first[k]) * row_bytes(w);
    }
    int64_t t = 0;
    if (float_rows) {
      const auto run = [&](auto rows_at_once) {
        constexpr int T = decltype(rows_at_once)::value;
        const float* xs[T];
        for (int u = 0; u < T; ++u) xs[u] = x + (t + u) * w.cols;
        float out[T][kStreams];
        if constexpr (T > 3) {  // only where wide
          tile_float_rows_wide<kStreams, T>(w.format, rows, xs, w.cols, out, t == 0 ? ahead : 0);
        } else {
          tile_float_rows<kStreams, T>(w.format, rows, xs, w.cols, out, t == 0 ? ahead : 0);
        }
        for (int u = 0; u < T; ++u)
          for (int k = 0; k < kStreams; ++k) put(t + u, first[k], out[u][k]);
        t += T;
      };
      if (wide) {
        while (n - t >= 6) run(std::integral_constant<int, 6>());
        if (n - t == 5) run(std::integral_constant<int, 5>());
        if (n - t == 4) run(std::integral_constant<int, 4>());
      }
      while (n - t >= 3) run(std::integral_constant<int, 3>());
      if (n - t == 2) run(std::integral_constant<int, 2>());
      if (n - t == 1) run(std::integral_constant<int, 1>());
    }
    if (multi) {
      const uint8_t* const* groups = rows;
      const auto run = [&](auto rows_at_once) {
        constexpr int T = decltype(rows_at_once)::value;
        const XQuant* xs[T];
        float* outs[T];
        for (int u = 0; u < T; ++u) xs[u] = &xq[t + u], outs[u] = tmpm[u];
        if (vnni && w.format == QFormat::Q8_0) {
          groups_q8_rows_vnni<kStreams, T>(groups, xs, outs, t == 0 ? ahead : 0);
        } else if (vnni && T <= 2) {  // all four streams: 2 x 4 x T accumulators
          groups_q4_0_rows_vnni<kStreams, T>(groups, xs, outs, t == 0 ? ahead : 0);
        } else if (vnni) {  // two groups a pass for 2 x 2 x 4 accumulators
          for (int k = 0; k < kStreams; k += 2) {
            float* outk[T];
            for (int u = 0; u < T; ++u) outk[u] = tmpm[u] + 4 * k;
            groups_q4_0_rows_vnni<2, T>(groups + k, xs, outk, t == 0 ? ahead : 0);
          }
        } else if (w.format == QFormat::Q8_0) {
          groups_q8_rows<kStreams, T>(groups, xs, outs, t == 0 ? ahead : 0);
        } else {  // a group a pass: more would need over 16 accumulators
          for (int k = 0; k < kStreams; ++k) {
            float* outk[T];
            for (int u = 0; u < T; ++u) outk[u] = tmpm[u] + 4 * k;
            groups_q4_0_rows<1, T>(groups + k, xs, outk, t == 0 ? ahead : 0);
          }
        }
        for (int u = 0; u < T; ++u)
          for (int k = 0; k < kStreams; ++k)
            for (int64_t v = 0; v < unit; ++v) put(t + u, first[k] + v, tmpm[u][k * unit + v]);
        t += T;
      };
      while (n - t >= 4) run(std::integral_constant<int, 4>());
      if (n - t >= 2) run(std::integral_constant<int, 2>());
      if (vnni && n - t == 1) run(std::integral_constant<int, 1>());
    }
    if (k_rows) {
      const auto run = [&](auto rows_at_once) {
        constexpr int T = decltype(rows_at_once)::value;
        const XQuant* xs[T];
        float* outs[T];
        for (int u = 0; u < T; ++u) xs[u] = &xq[t + u], outs[u] = tmpm[u];
        for (int k = 0; k < kStreams; ++k) {
          if (w.format == QFormat::Q4_K) {
            tile_q45_K_rows<T>(rows[k], xs, outs, k);
          } else if (w.format == QFormat::Q5_K) {
            tile_q45_K_rows<T, true>(rows[k], xs, outs, k);
          } else {
            tile_q6_K_rows<T>(rows[k], xs, outs, k);
          }
        }
        for (int u = 0; u < T; ++u)
          for (int k = 0; k < kStreams; ++k) put(t + u, first[k], tmpm[u][k]);
        t += T;
      };
      while (n - t >= 4) run(std::integral_constant<int, 4>());
      if (n - t == 3) run(std::integral_constant<int, 3>());
      if (n - t == 2) run(std::integral_constant<int, 2>());
    }
    if (g128_rows || int8_rows) {  // one row of each stream a step, up to four activation rows a pass
      const int64_t groups = w.cols / kGroup;
      const uint16_t* scales[kStreams];
      const uint8_t* zeros[kStreams];
      float scale[kStreams];
      for (int k = 0; k < kStreams; ++k) {
        if (int8_rows) {
          scale[k] = static_cast<const float*>(w.scales)[first[k]];
        } else {
          scales[k] = static_cast<const uint16_t*>(w.scales) + first[k] * groups;
          zeros[k] = static_cast<const uint8_t*>(w.zeros) + first[k] * groups;
        }
      }
      const bool asym = w.format == QFormat::Q4_G128_ASYM;
      const auto run = [&](auto rows_at_once) {
        constexpr int T = decltype(rows_at_once)::value;
        const XQuant* xs[T];
        float* outs[T];
        for (int u = 0; u < T; ++u) xs[u] = &xq[t + u], outs[u] = tmpm[u];
        if (int8_rows) {
          tile4_int8_rows_vnni<T>(rows, scale, xs, outs, t == 0 ? ahead : 0);
        } else {
          tile_g128_rows_vnni<kStreams, T>(rows, scales, asym ? zeros : nullptr, xs, outs, t == 0 ? ahead : 0);
        }
        for (int u = 0; u < T; ++u)
          for (int k = 0; k < kStreams; ++k) put(t + u, first[k], tmpm[u][k]);
        t += T;
      };
      while (n - t >= 4) run(std::integral_constant<int, 4>());
      if (n - t >= 2) run(std::integral_constant<int, 2>());
      if (n - t == 1) run(std::integral_constant<int, 1>());
    }
    for (; t < n; ++t) {
      tile_avx2<kStreams>(w, first, grouped, x + t * w.cols, xq[t], tmp, t == 0 ? ahead : 0);
      for (int k = 0; k < kStreams; ++k)
        for (int64_t u = 0; u < unit; ++u) put(t, first[k] + u, tmp[k * unit + u]);
    }
  }
  // What is left: fewer than kStreams units, then the rows after the last whole group (GGUF layout).
  int64_t r = r0 + len * kStreams * unit;
  for (; r < r1; r += grouped && r < grouped_end ? 4 : 1) {
    const bool g = grouped && r < grouped_end;
    for (int64_t t = 0; t < n; ++t) {
      tile_avx2<1>(w, &r, g, x + t * w.cols, xq[t], tmp, t == 0 ? ahead : 0);
      for (int64_t u = 0; u < (g ? 4 : 1); ++u) put(t, r + u, tmp[u]);
    }
  }
}

// Many activation rows on the VNNI tiles (prefill), which are then bound by arithmetic, not by the weights' bytes:
// the walk keeps what a tile reads close instead of streaming it. Weight rows [r0, r1) in blocks of 4 x
// kVnniBlockGroups rows, the activation rows in chunks of kVnniChunk, and every row's blocks in spans of kVnniSpan:
// a tile (four groups of a span, ~17 KB of q8_0, against four activation rows, 16 KB of x4) works from L1, a block's
// span and a chunk's span from L2. Each (unit, activation row) pair's accumulators wait in `state` between spans, so
// the sums, and the results, are those of one pass (the decode tiles' own). Units are groups of four interleaved rows
// (q8_0 / q4_0; the rows after the last whole group, in the GGUF layout, go through rows_avx2) or single rows (g128).
LMF_TARGET_AVX2 void prefill_vnni(const QWeight& w, const float* x, const XQuant* xq, int64_t n, int64_t r0, int64_t r1,
                                  float* y, bool accumulate) {
  const bool q8 = w.format == QFormat::Q8_0, q4 = w.format == QFormat::Q4_0, int8 = w.format == QFormat::INT8;
  // A unit: a group of four interleaved rows (q8_0 / q4_0), four rows (int8), or one row (g128).
  const int64_t unit = q8 || q4 || int8 ? 4 : 1;
  // int8: the rows past the last whole four of [r0, r1), as rows_avx2's streams leave them over.
  const int64_t units_end = int8 ? r0 + (r1 - r0) / 4 * 4 : unit == 4 ? std::max(r0, std::min(r1, w.rows / 4 * 4)) : r1;
  const int64_t nb = w.cols / kBlock, width = q4 ? 16 : 8, gstride = kVnniChunk * width;
  const int64_t groups = w.cols / kGroup;
  const size_t stride = row_bytes(w);
  const auto* codes = static_cast<const uint8_t*>(w.codes);
  const bool asym = w.format == QFormat::Q4_G128_ASYM;
  thread_local std::vector<float> state;
  XQuant::at_least(state, 4 * kVnniBlockGroups / unit * gstride);
  float tmp[4][16];
  for (int64_t a0 = r0; a0 < units_end; a0 += 4 * kVnniBlockGroups) {
    const int64_t nu = (std::min(units_end, a0 + 4 * kVnniBlockGroups) - a0) / unit;
    for (int64_t c0 = 0; c0 < n; c0 += kVnniChunk) {
      const int64_t c1 = std::min(n, c0 + kVnniChunk);
      for (int64_t s0 = 0; s0 < nb; s0 += kVnniSpan) {
        const int64_t s1 = std::min(nb, s0 + kVnniSpan);
        int64_t t = c0;
        const auto run_rows = [&](auto rows_at_once) {
          constexpr int T = decltype(rows_at_once)::value;
          const XQuant* xs[T];
          float* outs[T];
          for (int u = 0; u < T; ++u) xs[u] = &xq[t + u], outs[u] = tmp[u];
          int64_t g = 0;
          const auto run_units = [&](auto units_at_once) {
            constexpr int S = decltype(units_at_once)::value;
            const uint8_t* up[S];
            for (int k = 0; k < S; ++k) up[k] = codes + static_cast<size_t>(a0 + unit * (g + k)) * stride;
            const VnniRange rg{s0, s1, state.data() + g * gstride + (t - c0) * width, gstride};
            if (int8) {
              // One unit a call (S == 1): four rows folded together, as rows_avx2 folds one row of each stream.
              const uint8_t* r4[4];
              float scale[4];
              for (int k = 0; k < 4; ++k) {
                r4[k] = codes + static_cast<size_t>(a0 + 4 * g + k) * stride;
                scale[k] = static_cast<const float*>(w.scales)[a0 + 4 * g + k];
              }
              tile4_int8_rows_vnni<T>(r4, scale, xs, outs, 0, rg);
            } else if (q8) {
              groups_q8_rows_vnni<S, T>(up, xs, outs, 0, rg);
            } else if (q4) {
              groups_q4_0_rows_vnni<S, T>(up, xs, outs, 0, rg);
            } else {
              const uint16_t* sc[S];
              const uint8_t* zs[S];
              for (int k = 0; k < S; ++k) {
                sc[k] = static_cast<const uint16_t*>(w.scales) + (a0 + g + k) * groups;
                zs[k] = static_cast<const uint8_t*>(w.zeros) + (a0 + g + k) * groups;
              }
              tile_g128_rows_vnni<S, T>(up, sc, asym ? zs : nullptr, xs, outs, 0, rg);
            }
            if (s1 == nb)
              for (int u = 0; u < T; ++u)
                for (int v = 0; v < unit * S; ++v) {
                  float& o = y[(t + u) * w.rows + a0 + unit * g + v];
                  o = accumulate ? o + tmp[u][v] : tmp[u][v];
                }
            g += S;
          };
          if (q4) {
            while (nu - g >= 2) run_units(std::integral_constant<int, 2>());
          } else if (!int8) {
            while (nu - g >= 4) run_units(std::integral_constant<int, 4>());
          }
          while (g < nu) run_units(std::integral_constant<int, 1>());
          t += T;
        };
        while (c1 - t >= 4) run_rows(std::integral_constant<int, 4>());
        if (c1 - t >= 2) run_rows(std::integral_constant<int, 2>());
        if (c1 - t == 1) run_rows(std::integral_constant<int, 1>());
      }
    }
  }
  if (units_end < r1) rows_avx2(w, x, xq, n, units_end, r1, y, accumulate, false);
}
#endif  // LMF_HAVE_X86

#if LMF_HAVE_X86
// Decode products come in a fixed order (a model's layers, token after token), so while the caller does the serial
// work between two of them (norms, RoPE, attention's own job, sampling) the idle worker can pull in the start of its
// share of the next one: ThreadPool::prefetch_when_idle, with the pool running head chunk i on thread i. Which
// product comes next is learnt as a branch predictor would: each product remembers the one that followed it last
// time and posts that one's hint as it starts, which the worker takes up when it has run its chunks of this one. A
// wrong guess costs idle bandwidth only. In-process A/B (infer-250m, 512 + 32-token rounds, hint on/off
// alternating, 40 rounds): q8_0 x1.03-1.04, q4_0 x1.02, f32 x1.04 (docs/PERFORMANCE.md, part 8).
struct DecodeShape {
  const uint8_t* codes = nullptr;
  size_t row_bytes = 0;
  int64_t rows = 0, head_tiles = 0;  // head_tiles: ThreadPool::guided_head for the product's tiles; 0: none
  bool grouped = false;              // rows4 layout
};

// How much of its head run a worker prefetches: the start of each of its kStreams streams, this much in all (256
// and 512 KiB did the same; its 1 MiB L2 keeps the rest of the working set).
constexpr int64_t kIdlePrefetchBytes = 256 << 10;

void post_hints(const DecodeShape& d) {
  ThreadPool& pool = ThreadPool::global();
  if (d.head_tiles <= 0) return;
  for (int i = 1; i < pool.num_threads(); ++i) {
    // Head chunk i's rows, cut into streams as rows_avx2 cuts them.
    const int64_t r0 = std::min(d.rows, i * d.head_tiles * kTile);
    const StreamSplit st = split_streams(d.grouped, d.rows, r0, std::min(d.rows, (i + 1) * d.head_tiles * kTile));
    const int64_t len = st.len * st.unit;  // rows a stream
    const void* starts[kStreams];
    for (int k = 0; k < kStreams; ++k) starts[k] = d.codes + static_cast<size_t>(r0 + k * len) * d.row_bytes;
    pool.prefetch_when_idle(i, starts, kStreams,
                            std::min(len * static_cast<int64_t>(d.row_bytes), kIdlePrefetchBytes / kStreams));
  }
}

// Called as each decode product starts (on the calling thread; each caller thread learns its own sequence).
void predict_next(const DecodeShape& now) {
  struct Entry {
    const void* key = nullptr;
    DecodeShape next;
  };
  constexpr int kEntryBits = 8;
  thread_local Entry table[1 << kEntryBits];
  thread_local const void* prev = nullptr;
  const auto slot = [](const void* p) {
    return static_cast<size_t>((reinterpret_cast<uintptr_t>(p) >> 6) * 0x9E3779B97F4A7C15ull >> (64 - kEntryBits));
  };
  if (prev) table[slot(prev)] = {prev, now};
  prev = now.codes;
  const Entry& e = table[slot(now.codes)];
  if (e.key == now.codes) post_hints(e.next);
}
#endif

// The AVX-512 VNNI tiles (vnni_format below): Vnni asks for them, Auto takes them where the CPU has them.
bool use_vnni(QImpl impl) {
#if LMF_HAVE_X86
  return impl == QImpl::Vnni || (impl == QImpl::Auto && cpu_has_avx512_vnni());
#else
  (void)impl;
  return false;
#endif
}

// The weights that have VNNI tiles: interleaved q8_0 / q4_0, the g128 formats, and int8 rows of whole blocks.
bool vnni_format(const QWeight& w) {
  return (w.rows4 && (w.format == QFormat::Q8_0 || w.format == QFormat::Q4_0)) || w.format == QFormat::Q4_G128 ||
         w.format == QFormat::Q4_G128_ASYM || (w.format == QFormat::INT8 && w.cols % kBlock == 0);
}

bool use_avx2(QImpl impl) {
#if LMF_HAVE_X86
  if (impl == QImpl::Avx2 || impl == QImpl::Vnni) return true;
  return impl == QImpl::Auto && cpu_has_avx2();
#else
  (void)impl;
  return false;
#endif
}

// One row of the weight into f32 (the prefill path's panels).
void dequant_row(const QWeight& w, int64_t r, float* out) {
  const auto* row = static_cast<const uint8_t*>(w.codes) + static_cast<size_t>(r) * row_bytes(w);
  const int64_t nb = w.cols / kBlock;
  switch (w.format) {
    case QFormat::F32:
      std::memcpy(out, row, sizeof(float) * static_cast<size_t>(w.cols));
      break;
    case QFormat::F16:
      for (int64_t j = 0; j < w.cols; ++j) out[j] = half_to_float(load_u16(row + 2 * j));
      break;
    case QFormat::BF16:
      for (int64_t j = 0; j < w.cols; ++j) out[j] = bf16_to_float(load_u16(row + 2 * j));
      break;
    case QFormat::Q8_0: {
      const BlockWalk bw = block_walk(w, r);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = bw.at(b);
        const float d = half_to_float(load_u16(blk + bw.scale));
        for (int64_t j = 0; j < kBlock; ++j)
          out[b * kBlock + j] = d * static_cast<float>(static_cast<int8_t>(bw.code(blk, j)));
      }
      break;
    }
    case QFormat::Q4_0: {
      const BlockWalk bw = block_walk(w, r);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = bw.at(b);
        const uint8_t* c = blk + bw.first;
        const float d = half_to_float(load_u16(blk + bw.scale));
        for (int64_t j = 0; j < 16; ++j) {
          out[b * kBlock + j] = d * static_cast<float>((c[j] & 0x0f) - 8);
          out[b * kBlock + j + 16] = d * static_cast<float>((c[j] >> 4) - 8);
        }
      }
      break;
    }
    case QFormat::Q4_G128:
    case QFormat::Q4_G128_ASYM: {
      const int64_t groups = w.cols / kGroup;
      const auto* scales = static_cast<const uint16_t*>(w.scales) + r * groups;
      const auto* zeros = static_cast<const uint8_t*>(w.zeros);
      for (int64_t g = 0; g < groups; ++g) {
        const float d = half_to_float(scales[g]);
        const float z = zeros ? static_cast<float>(zeros[r * groups + g]) : 8.0f;
        const uint8_t* c = row + g * (kGroup / 2);
        for (int64_t j = 0; j < kGroup / 2; ++j) {
          out[g * kGroup + j] = d * (static_cast<float>(c[j] & 0x0f) - z);
          out[g * kGroup + j + 64] = d * (static_cast<float>(c[j] >> 4) - z);
        }
      }
      break;
    }
    case QFormat::INT8: {
      const float s = static_cast<const float*>(w.scales)[r];
      for (int64_t j = 0; j < w.cols; ++j) out[j] = s * static_cast<float>(static_cast<int8_t>(row[j]));
      break;
    }
    case QFormat::Q4_K:  // ggml's dequantize_row_q4_K / _q5_K: d * scale in f32, times the code, minus dmin * min
    case QFormat::Q5_K: {
      const bool q5 = w.format == QFormat::Q5_K;
      for (int64_t s = 0; s < w.cols / kSuper; ++s) {
        const uint8_t* blk = row + s * (q5 ? kQ5KBytes : kQ4KBytes);
        uint8_t sm[16];
        q4_K_scales(blk + 4, sm);
        const float d = half_to_float(load_u16(blk)), dmin = half_to_float(load_u16(blk + 2));
        float* o = out + s * kSuper;
        for (int j = 0; j < 8; ++j) {
          const float dj = d * sm[j], mj = dmin * sm[8 + j];
          for (int i = 0; i < 32; ++i) o[32 * j + i] = dj * static_cast<float>(qk45_code(blk, q5, 32 * j + i)) - mj;
        }
      }
      break;
    }
    case QFormat::Q6_K:  // ggml's dequantize_row_q6_K: d * scale * (q - 32), left to right
      for (int64_t s = 0; s < w.cols / kSuper; ++s) {
        const uint8_t* blk = row + s * kQ6KBytes;
        const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
        const float d = half_to_float(load_u16(blk + 208));
        for (int v = 0; v < kSuper; ++v)
          out[s * kSuper + v] = d * static_cast<float>(sc[v / 16]) * static_cast<float>(q6_K_code(blk, v) - 32);
      }
      break;
  }
}

#if LMF_HAVE_X86
// dequant_row with AVX2/F16C: the same values (d * code in f32, one rounding), 8 at a time. The prefill panels
// dequantize every weight once per product, and the scalar loop (a byte and a scale per value) took as long as the
// sgemm that followed at 64 activation rows.
LMF_TARGET_AVX2 void dequant_row_avx2(const QWeight& w, int64_t r, float* out) {
  const auto* row = static_cast<const uint8_t*>(w.codes) + static_cast<size_t>(r) * row_bytes(w);
  const int64_t nb = w.cols / kBlock;
  const auto bytes8 = [](const uint8_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); };
  switch (w.format) {
    case QFormat::F16:
    case QFormat::BF16: {
      const bool half = w.format == QFormat::F16;
      int64_t j = 0;
      for (; j + 8 <= w.cols; j += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * j));
        const __m256 v =
            half ? _mm256_cvtph_ps(h) : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        _mm256_storeu_ps(out + j, v);
      }
      for (; j < w.cols; ++j) {
        const uint16_t h = load_u16(row + 2 * j);
        out[j] = half ? _cvtsh_ss(h) : bf16_to_float(h);
      }
      break;
    }
    case QFormat::Q8_0: {
      const BlockWalk bw = block_walk(w, r);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = bw.at(b);
        const __m256 d = _mm256_set1_ps(f16(blk + bw.scale));
        const uint8_t* c = blk + bw.first;
        float* o = out + b * kBlock;
        for (int m = 0; m < 4; ++m) {  // 8 codes at a time
          __m128i v;
          if (bw.runs4) {  // two runs of four, 16 bytes apart
            int32_t lo, hi;
            std::memcpy(&lo, c + 32 * m, 4);
            std::memcpy(&hi, c + 32 * m + 16, 4);
            v = _mm_set_epi32(0, 0, hi, lo);
          } else {
            v = bytes8(c + 8 * m);
          }
          _mm256_storeu_ps(o + 8 * m, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))));
        }
      }
      break;
    }
    case QFormat::Q4_0: {
      const BlockWalk bw = block_walk(w, r);
      const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = bw.at(b);
        const __m256 d = _mm256_set1_ps(f16(blk + bw.scale));
        const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + bw.first));
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(c, mask), eight);                     // values 0..15
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(c, 4), mask), eight);  // values 16..31
        float* o = out + b * kBlock;
        _mm256_storeu_ps(o, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
        _mm256_storeu_ps(o + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)))));
        _mm256_storeu_ps(o + 16, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
        _mm256_storeu_ps(o + 24, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
      }
      break;
    }
    case QFormat::INT8: {
      const __m256 s = _mm256_set1_ps(static_cast<const float*>(w.scales)[r]);
      int64_t j = 0;
      for (; j + 8 <= w.cols; j += 8)
        _mm256_storeu_ps(out + j, _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes8(row + j)))));
      for (; j < w.cols; ++j)
        out[j] = static_cast<const float*>(w.scales)[r] * static_cast<float>(static_cast<int8_t>(row[j]));
      break;
    }
    case QFormat::Q4_K:  // as dequant_row: (d * scale) * q - dmin * min, each product rounded (no FMA)
      for (int64_t s = 0; s < w.cols / kSuper; ++s) {
        const uint8_t* blk = row + s * kQ4KBytes;
        alignas(16) uint8_t sm[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(sm), q4_K_scales_avx2(blk + 4));
        const float d = f16(blk), dmin = f16(blk + 2);
        for (int c = 0; c < 4; ++c) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * c));
          const __m256i nib[2] = {_mm256_and_si256(v, _mm256_set1_epi8(0x0f)),
                                  _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0f))};
          for (int h = 0; h < 2; ++h) {
            const int j = 2 * c + h;
            const __m256 dj = _mm256_set1_ps(d * sm[j]), mj = _mm256_set1_ps(dmin * sm[8 + j]);
            float* o = out + s * kSuper + 32 * j;
            const __m128i lo = _mm256_castsi256_si128(nib[h]), hi = _mm256_extracti128_si256(nib[h], 1);
            const __m128i q8[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
            for (int m = 0; m < 4; ++m)
              _mm256_storeu_ps(o + 8 * m,
                               _mm256_sub_ps(_mm256_mul_ps(dj, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q8[m]))), mj));
          }
        }
      }
      break;
    case QFormat::Q6_K:  // as dequant_row: (d * scale) * (q - 32)
      for (int64_t s = 0; s < w.cols / kSuper; ++s) {
        const uint8_t* blk = row + s * kQ6KBytes;
        const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
        const float d = f16(blk + 208);
        const __m256i off = _mm256_set1_epi8(32);
        for (int h = 0; h < 2; ++h) {
          __m256i q[4];
          q6_K_codes(blk, h, q);
          for (int k = 0; k < 4; ++k) {
            const __m256i c = _mm256_sub_epi8(q[k], off);  // -32..31
            const __m128i lo = _mm256_castsi256_si128(c), hi = _mm256_extracti128_si256(c, 1);
            const __m128i q8[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
            float* o = out + s * kSuper + 128 * h + 32 * k;
            for (int m = 0; m < 4; ++m) {
              const __m256 ds = _mm256_set1_ps(d * static_cast<float>(sc[8 * h + 2 * k + m / 2]));
              _mm256_storeu_ps(o + 8 * m, _mm256_mul_ps(ds, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8[m]))));
            }
          }
        }
      }
      break;
    default:  // f32 (a copy) and the g128 formats
      dequant_row(w, r, out);
  }
}
#endif

// dequant_row on the path `avx2` chooses (the prefill panels follow qgemm's QImpl; dequantize_row the CPU's).
void dequant_row_on(const QWeight& w, int64_t r, float* out, bool avx2) {
#if LMF_HAVE_X86
  if (avx2) return dequant_row_avx2(w, r, out);
#endif
  (void)avx2;
  dequant_row(w, r, out);
}

}  // namespace

void dequantize_row(const QWeight& w, int64_t r, float* out) {
  dequant_row_on(w, r, out, use_avx2(QImpl::Auto));
}

void interleave_rows4(QFormat format, int64_t rows, int64_t cols, const void* src, void* dst, bool inverse) {
  if (format != QFormat::Q8_0 && format != QFormat::Q4_0)
    throw std::invalid_argument("interleave_rows4: only q8_0 and q4_0 weights have the interleaved layout");
  if (rows < 0 || cols < 0 || cols % kBlock != 0)
    throw std::invalid_argument("interleave_rows4: bad shape (cols must be a multiple of 32)");
  const size_t bsz = block_bytes(format), code = bsz - 2, stride = static_cast<size_t>(cols / kBlock) * bsz;
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t groups = rows / 4, nb = cols / kBlock;
  const auto move = [&](size_t packed, size_t file, size_t n) {  // one piece, in the direction asked for
    if (inverse) {
      std::memcpy(out + file, in + packed, n);
    } else {
      std::memcpy(out + packed, in + file, n);
    }
  };
  parallel_for(groups, 64, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const size_t base = static_cast<size_t>(4 * g) * stride;
      for (int64_t b = 0; b < nb; ++b) {
        const size_t packed = base + static_cast<size_t>(b) * 4 * bsz;
        for (int64_t i = 0; i < 4; ++i) {
          const size_t file = base + static_cast<size_t>(i) * stride + static_cast<size_t>(b) * bsz;
          move(packed + 2 * i, file, 2);  // scale
          if (format == QFormat::Q8_0) {  // codes in runs of four: run m of row i at 8 + 16 m + 4 i
            for (size_t m = 0; m < code / 4; ++m) move(packed + 8 + 16 * m + 4 * i, file + 2 + 4 * m, 4);
          } else {
            move(packed + 8 + i * code, file + 2, code);
          }
        }
      }
    }
  });
  const size_t done = static_cast<size_t>(groups * 4) * stride;  // the tail rows keep the GGUF layout
  if (static_cast<size_t>(rows) * stride > done)
    std::memcpy(out + done, in + done, static_cast<size_t>(rows) * stride - done);
}

int64_t qgemm_sgemm_rows(const QWeight& w, QImpl impl) {
  if (use_vnni(impl) && vnni_format(w)) return std::numeric_limits<int64_t>::max();
  if (is_k_format(w.format) && use_avx2(impl)) return std::numeric_limits<int64_t>::max();
  return qgemm_sgemm_rows(w.format);
}

bool qgemm_available(QImpl impl) {
  if (impl == QImpl::Vnni) return LMF_HAVE_X86 && cpu_has_avx512_vnni();
  return impl != QImpl::Avx2 || (LMF_HAVE_X86 && cpu_has_avx2());
}

void qgemm(const QWeight& w, const float* x, int64_t n, float* y, bool accumulate, QImpl impl) {
  if (n <= 0 || w.rows <= 0) return;
  const int64_t rows = w.rows, cols = w.cols;
  // int8 rows may have any length; the 8-bit activation blocks need a multiple of 32, so other lengths take the
  // dequantizing path.
  const bool ragged = w.format == QFormat::INT8 && cols % kBlock != 0;
  if (w.format == QFormat::F32 && n >= qgemm_sgemm_rows(w.format)) {
    gemm<float>(false, true, n, rows, cols, 1.0f, x, cols, static_cast<const float*>(w.codes), cols,
                accumulate ? 1.0f : 0.0f, y, rows);
    return;
  }
  if (n >= qgemm_sgemm_rows(w, impl) || ragged) {
    // Panels of up to ~kPanelBytes (at least kMinPanel rows): each sgemm call repacks x, and wider panels run
    // OpenBLAS's kernel at a better shape. OpenBLAS's results depend on how the rows are cut (its edge tiles), so the
    // cut depends on the shape only, never the thread count: a multiple of four panels of equal size (rounded up to
    // 16 rows), which 1, 2 and 4 threads share evenly.
    const int64_t target = std::max(kMinPanel, kPanelBytes / (4 * cols));
    const int64_t quads = (rows + 4 * target - 1) / (4 * target);
    const int64_t panel = std::max(kMinPanel, ((rows + 4 * quads - 1) / (4 * quads) + 15) / 16 * 16);
    const int64_t panels = (rows + panel - 1) / panel;
    const bool avx2 = use_avx2(impl);
    parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
      std::vector<float> buf(static_cast<size_t>(panel * cols));
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t r0 = p * panel, r1 = std::min(rows, r0 + panel);
        for (int64_t r = r0; r < r1; ++r) dequant_row_on(w, r, buf.data() + (r - r0) * cols, avx2);
        gemm_serial<float>(false, true, n, r1 - r0, cols, 1.0f, x, cols, buf.data(), cols, accumulate ? 1.0f : 0.0f,
                           y + r0, rows);
      }
    });
    return;
  }
  const bool avx2 = use_avx2(impl);
  if (avx2 && is_k_format(w.format) && n > kKMaxRows) {
    for (int64_t c0 = 0; c0 < n; c0 += kKMaxRows)
      qgemm(w, x + c0 * cols, std::min(kKMaxRows, n - c0), y + c0 * rows, accumulate, impl);
    return;
  }
  // The AVX-512 tiles: the CPU's (vnni_cpu, which rows_avx2 takes: it picks its tiles by format), and whether this
  // weight's format has VNNI tiles (prefill_vnni, the 8-bit activations' layout).
  const bool vnni_cpu = use_vnni(impl);
  const bool vnni = vnni_cpu && vnni_format(w);
  if (vnni && avx2 && n > kVnniMaxRows) {
    // A long prompt on the VNNI tiles, kVnniMaxRows activation rows at a time: their 8-bit forms (up to 7 bytes a
    // value with q8_0's x4) stay a bounded buffer, for the price of reading the weights once more per chunk.
    for (int64_t c0 = 0; c0 < n; c0 += kVnniMaxRows)
      qgemm(w, x + c0 * cols, std::min(kVnniMaxRows, n - c0), y + c0 * rows, accumulate, impl);
    return;
  }
  // The quantized activations, one per row of x: thread-local up to kReusedXQuantRows rows, so decode and batched
  // decode allocate nothing per product; a prefill's are freed on return, as the engine's large scratch buffers.
  thread_local std::vector<XQuant> tl_xq;
  std::vector<XQuant> prefill_xq;
  std::vector<XQuant>& xqv = n <= kReusedXQuantRows ? tl_xq : prefill_xq;
  if (xqv.size() < static_cast<size_t>(n)) xqv.resize(static_cast<size_t>(n));
  XQuant* tl = xqv.data();
  const XQuant* xq = tl;
  if (is_int_format(w.format)) {
    const int64_t span = is_k_format(w.format)                                               ? kSuper
                         : w.format == QFormat::Q4_G128 || w.format == QFormat::Q4_G128_ASYM ? kGroup
                                                                                             : kBlock;
    for (int64_t t = 0; t < n; ++t) {
#if LMF_HAVE_X86
      if (avx2) {
        quantize_avx2(tl[t], x + t * cols, cols, span);
        continue;
      }
#endif
      tl[t].quantize(x + t * cols, cols, span);
    }
#if LMF_HAVE_X86
    if (avx2 && w.format == QFormat::Q4_0 && w.rows4)
      for (int64_t t = 0; t < n; ++t) pair_halves(tl[t]);
    if (avx2 && is_k_format(w.format))  // the portable path sums its codes itself
      for (int64_t t = 0; t < n; ++t) sums16(tl[t]);
    if (avx2 && w.format == QFormat::Q8_0 && w.rows4)
      for (int64_t t = 0; t < n; ++t) runs_x(tl[t], vnni && n >= 2);  // one row stays on AVX2 (rows_avx2)
#endif
  }
  // Tiles of kTile rows: one run of up to kHeadBytes per thread, then guided chunks, long ones first (each streams
  // hundreds of kB of weights), short ones last (down to kMinChunkBytes) so both threads finish within a chunk of
  // each other (with even chunks, waiting for the slower thread's last chunk was ~10% of a decode step). Up to 16
  // tiles run inline.
  const int64_t tiles = (rows + kTile - 1) / kTile;
  const std::function<void(int64_t, int64_t)> body = [&](int64_t t0, int64_t t1) {
    const int64_t r0 = t0 * kTile, r1 = std::min(rows, t1 * kTile);
#if LMF_HAVE_X86
    if (avx2 && vnni && n >= kVnniPrefillRows) {
      prefill_vnni(w, x, xq, n, r0, r1, y, accumulate);
      return;
    }
    if (avx2) {
      rows_avx2(w, x, xq, n, r0, r1, y, accumulate, vnni_cpu);
      return;
    }
#endif
    for (int64_t t = 0; t < n; ++t) rows_generic(w, x + t * cols, xq + t, r0, r1, y + t * rows, accumulate);
  };
  const int64_t tile_bytes = static_cast<int64_t>(kTile * row_bytes(w));
  const int64_t min_tiles = std::max<int64_t>(4, (kMinChunkBytes + tile_bytes - 1) / tile_bytes);
#if LMF_HAVE_X86
  if (avx2 && !ThreadPool::global().in_parallel_region()) {
    const int64_t head = tiles <= 16 ? 0 : ThreadPool::global().guided_head(tiles, min_tiles, kHeadBytes / tile_bytes);
    predict_next({static_cast<const uint8_t*>(w.codes), row_bytes(w), rows, head, w.rows4});
  }
#endif
  if (tiles <= 16) {
    body(0, tiles);
  } else {
    parallel_for_guided(tiles, min_tiles, body, kHeadBytes / tile_bytes);
  }
  (void)avx2;
}

}  // namespace lmforge::kernels::cpu
