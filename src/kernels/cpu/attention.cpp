// Fused causal attention, FlashAttention-2 style: the Tq x Tk score matrix is never materialised. Scores are made
// one (q-block, k-block) tile at a time with gemm_serial, softmax is computed online (running max and sum per row),
// and the backward pass recomputes each tile's probabilities from the saved log-sum-exp. Memory is O(block^2) per
// thread (plus one float per query row of the current kv-head group in the backward).
//
// Masking is per row: each query row sees one contiguous key interval [lo, hi) (see visible_keys), so a tile only
// zeroes the columns outside that interval and tiles outside the union of the block's intervals are never visited.
// causal=false ignores `window` (no sliding window without causality).
//
// The softmax loops are multiversioned (AVX2/FMA or portable, chosen at run time); float uses the polynomial exp
// of vec_math.h so they vectorise, double uses std::exp.
//
// Results do not depend on the thread count: work is split into fixed tasks, each computed by one thread in a fixed
// order, and no two tasks write the same output.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/multiversion.h"
#include "kernels/cpu/vec_math.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge::kernels::cpu {

namespace {

// 64 x 64 tiles keep S, dP and the K/V panels in L2 while giving OpenBLAS enough work per call to amortise its
// per-call overhead (32-128 measured within noise of each other at head dim 64 on a 2-core VM).
constexpr int64_t kBlockQ = 64;
constexpr int64_t kBlockK = 64;
constexpr int64_t kChunk = 256;  // keys per chunk of the decode group kernel (group_attention_f32_avx2)

// Tasks handed to one pool chunk together until a chunk holds about this many multiply-adds, so that tiny calls
// (short decode steps, gradient checks) run inline instead of paying a pool wake-up.
inline int64_t task_grain(double madds_per_task) {
  return std::max<int64_t>(1, static_cast<int64_t>(65536.0 / std::max(1.0, madds_per_task)));
}

struct KeyRange {
  int64_t lo, hi;
};

// Keys [lo, hi) visible to the query at absolute position `pos`. lo and hi never decrease as pos grows, and for
// window > 0 consecutive rows' intervals overlap, so a block of rows sees the single interval
// [lo(first row), hi(last row)).
inline KeyRange visible_keys(const AttentionDims& d, int64_t pos) {
  if (!d.causal) return {0, d.Tk};
  const int64_t hi = std::clamp<int64_t>(pos + 1, 0, d.Tk);
  const int64_t lo = d.window > 0 ? std::clamp<int64_t>(pos - d.window + 1, 0, hi) : 0;
  return {lo, hi};
}

// Per row r of a tile whose first query sits at pos0 and first key at j0: visible columns [a[r], b[r]) of nk.
inline void tile_columns(const AttentionDims& d, int64_t pos0, int64_t j0, int64_t nq, int64_t nk, int64_t* a,
                         int64_t* b) {
  for (int64_t r = 0; r < nq; ++r) {
    const KeyRange kr = visible_keys(d, pos0 + r);
    a[r] = std::clamp<int64_t>(kr.lo - j0, 0, nk);
    b[r] = std::clamp<int64_t>(kr.hi - j0, a[r], nk);
  }
}

// One 64-byte aligned scratch buffer per thread and type, grown on demand and then reused: no allocation per tile.
// Fixed alignment also keeps vectorised loops from peeling differently on different threads.
template <typename T>
T* thread_scratch(size_t n) {
  thread_local std::vector<T> buf;
  constexpr size_t pad = 64 / sizeof(T);
  if (buf.size() < n + pad) buf.resize(n + pad);
  const auto addr = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<T*>((addr + 63) & ~uintptr_t(63));  // NOLINT(performance-no-int-to-ptr): aligning
}

// Online-softmax step for one tile. S (nq x nk, row stride ld) holds scaled scores on entry and the unnormalised
// probabilities exp(s - m) on exit, zero where masked, ready for O += P V. The running max m, sum l and the
// accumulator O (nq x dv) are rescaled when the max grows.
template <typename T>
LMF_ALWAYS_INLINE void forward_tile_impl(T* S, int64_t ld, int64_t nq, int64_t nk, const int64_t* a, const int64_t* b,
                                         T* m, T* l, T* O, int64_t dv) {
  for (int64_t r = 0; r < nq; ++r) {
    T* s = S + r * ld;
    const int64_t c0 = a[r], c1 = b[r];
    for (int64_t c = 0; c < c0; ++c) s[c] = T(0);
    for (int64_t c = c1; c < nk; ++c) s[c] = T(0);
    const T mx = lanes_max(s + c0, c1 - c0);
    // Nothing visible in this tile (or -inf scores): contributes nothing; also keeps -inf - -inf out of exp.
    if (!(mx > -std::numeric_limits<T>::infinity())) {
      for (int64_t c = c0; c < c1; ++c) s[c] = T(0);
      continue;
    }
    const T m_new = mx > m[r] ? mx : m[r];
    const T alpha = vexp<T>(m[r] - m_new);  // m[r] = -inf on the first visible tile: alpha = 0, O and l are 0
    for (int64_t c = c0; c < c1; ++c) s[c] = vexp<T>(s[c] - m_new);
    l[r] = l[r] * alpha + lanes_sum(s + c0, c1 - c0);
    m[r] = m_new;
    if (alpha != T(1)) {
      T* o = O + r * dv;
      for (int64_t c = 0; c < dv; ++c) o[c] *= alpha;
    }
  }
}

// Backward tile: on entry S holds scaled scores and dP = dO V^T; on exit S holds P = exp(S - lse) and dP holds
// scale * dS = scale * P * (dP - Di), both zero where masked. Visible rows always have a finite lse.
template <typename T>
LMF_ALWAYS_INLINE void backward_tile_impl(T* S, T* dP, int64_t ld, int64_t nq, int64_t nk, const int64_t* a,
                                          const int64_t* b, const T* lse, const T* Di, T scale) {
  for (int64_t r = 0; r < nq; ++r) {
    T* s = S + r * ld;
    T* dp = dP + r * ld;
    const int64_t c0 = a[r], c1 = b[r];
    for (int64_t c = 0; c < c0; ++c) s[c] = dp[c] = T(0);
    for (int64_t c = c1; c < nk; ++c) s[c] = dp[c] = T(0);
    const T L = lse[r], D = Di[r];
    for (int64_t c = c0; c < c1; ++c) {
      const T p = vexp<T>(s[c] - L);
      s[c] = p;
      dp[c] = scale * p * (dp[c] - D);
    }
  }
}

// One query row against its visible keys [lo, hi): a decode step (Tq = 1). At one row the tiled path is two sgemm
// calls per 64 keys, whose call overhead dwarfs the arithmetic (infer-250m decode at a 512-token context spent
// ~4.7 ms a token there); here it is direct dot products, one softmax and one pass of axpys over V. s: hi - lo
// scratch values. Writes the normalised row to o and its log-sum-exp to *lse (-inf and zeros when nothing is seen).
template <typename T>
LMF_ALWAYS_INLINE void row_attention_impl(const T* q, const T* k, int64_t ldk, const T* v, int64_t ldv, int64_t lo,
                                          int64_t hi, int64_t dk, int64_t dv, T scale, T* s, T* o, T* lse) {
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t j = lo; j < hi; ++j) {
    const T x = scale * lanes_dot(q, k + j * ldk, dk);
    s[j - lo] = x;
    mx = x > mx ? x : mx;
  }
  for (int64_t c = 0; c < dv; ++c) o[c] = T(0);
  if (!(mx > -std::numeric_limits<T>::infinity())) {
    *lse = -std::numeric_limits<T>::infinity();
    return;
  }
  for (int64_t j = 0; j < hi - lo; ++j) s[j] = vexp<T>(s[j] - mx);
  const T sum = lanes_sum(s, hi - lo);
  for (int64_t j = lo; j < hi; ++j) {
    const T p = s[j - lo];
    const T* vj = v + j * ldv;
    for (int64_t c = 0; c < dv; ++c) o[c] += p * vj[c];
  }
  const T inv = T(1) / sum;
  for (int64_t c = 0; c < dv; ++c) o[c] *= inv;
  *lse = mx + std::log(sum);
}

LMF_MULTIVERSION_T(void, row_attention, row_attention_impl,
                   (const T* q, const T* k, int64_t ldk, const T* v, int64_t ldv, int64_t lo, int64_t hi, int64_t dk,
                    int64_t dv, T scale, T* s, T* o, T* lse),
                   (q, k, ldk, v, ldv, lo, hi, dk, dv, scale, s, o, lse))

#if LMF_HAVE_X86

// row_attention for f32 with head dims that are multiples of 8: eight keys' dot products at a time (eight
// independent FMA chains instead of one, one transposing reduction), and P·V with 32 output values held in four
// registers across all keys. The arithmetic is the portable version's; only the summation order differs.
LMF_TARGET_AVX2 void row_attention_f32_avx2(const float* q, const float* k, int64_t ldk, const float* v, int64_t ldv,
                                            int64_t lo, int64_t hi, int64_t dk, int64_t dv, float scale, float* s,
                                            float* o, float* lse) {
  const int64_t n = hi - lo;
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const float* k0 = k + (lo + j) * ldk;
    __m256 a[8];
    for (int u = 0; u < 8; ++u) a[u] = _mm256_setzero_ps();
    for (int64_t c = 0; c < dk; c += 8) {
      const __m256 qc = _mm256_loadu_ps(q + c);
      for (int u = 0; u < 8; ++u) a[u] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k0 + u * ldk + c), a[u]);
    }
    _mm256_storeu_ps(s + j, _mm256_mul_ps(vscale, hsum8(a)));
  }
  for (; j < n; ++j) {
    const float* kj = k + (lo + j) * ldk;
    __m256 a = _mm256_setzero_ps();
    for (int64_t c = 0; c < dk; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(kj + c), a);
    s[j] = scale * hsum(a);
  }
  const float mx = lanes_max(s, n);
  if (!(mx > -std::numeric_limits<float>::infinity())) {
    std::fill(o, o + dv, 0.0f);
    *lse = -std::numeric_limits<float>::infinity();
    return;
  }
  for (int64_t i = 0; i < n; ++i) s[i] = exp_f32(s[i] - mx);
  const float sum = lanes_sum(s, n);
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  int64_t c0 = 0;
  for (; c0 + 32 <= dv; c0 += 32) {
    __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
    for (int64_t i = 0; i < n; ++i) {
      const float* vi = v + (lo + i) * ldv + c0;
      const __m256 p = _mm256_set1_ps(s[i]);
      o0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vi), o0);
      o1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vi + 8), o1);
      o2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vi + 16), o2);
      o3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vi + 24), o3);
    }
    _mm256_storeu_ps(o + c0, _mm256_mul_ps(o0, inv));
    _mm256_storeu_ps(o + c0 + 8, _mm256_mul_ps(o1, inv));
    _mm256_storeu_ps(o + c0 + 16, _mm256_mul_ps(o2, inv));
    _mm256_storeu_ps(o + c0 + 24, _mm256_mul_ps(o3, inv));
  }
  for (; c0 < dv; c0 += 8) {
    __m256 o0 = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; ++i)
      o0 = _mm256_fmadd_ps(_mm256_set1_ps(s[i]), _mm256_loadu_ps(v + (lo + i) * ldv + c0), o0);
    _mm256_storeu_ps(o + c0, _mm256_mul_ps(o0, inv));
  }
  *lse = mx + std::log(sum);
}

// Prefetches the cache lines of `count` elements from p (Hint: _MM_HINT_T0 into L1, _MM_HINT_T1 into L2).
template <int Hint, typename KV>
LMF_TARGET_AVX2 inline void prefetch_row(const KV* p, int64_t count) {
  for (int64_t o = 0; o < count; o += 64 / static_cast<int64_t>(sizeof(KV)))
    _mm_prefetch(reinterpret_cast<const char*>(p + o), static_cast<decltype(_MM_HINT_T0)>(Hint));
}

// Eight cache elements as floats: f32 as they are, IEEE half (the engine's f16 KV cache) through F16C.
LMF_TARGET_AVX2 inline __m256 load8(const float* p) {
  return _mm256_loadu_ps(p);
}
LMF_TARGET_AVX2 inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// All G query heads of one GQA group against their shared K/V rows (decode, f32, head dims multiples of 8 / 16):
// each key and value row is loaded once for the G heads rather than G times, which is what bounds decode at long
// contexts (the cache streams from L3/DRAM). q: G rows of dk; o: G rows of dv; lse: G values; s: G * kChunk.
//
// The keys go in chunks of kChunk with an online softmax (a running max and sum per head, the output rescaled
// when the max grows), so one chunk's keys and values stay in L2 whatever the context, and memory never idles:
// the score pass fetches its own keys ahead and the chunk's values, the P·V pass fetches the next chunk's keys, or
// those from next_k on (the first key of the task this thread runs next; nullptr: none) after the last chunk. With the
// whole context at once the P·V pass read only cached values and the cache streamed at about half of a plain read of
// the same bytes. In decode the cache comes from DRAM (a token's weights pass through the caches between two visits of
// a layer): there the kernel took ~30 us a layer where a second run over the same rows took ~19; fetching the values
// into L1 (T0) rather than L2 made it ~12% faster (in-process A/B, infer-250m q8_0 with an f16 cache, 512-640 keys;
// the T1 and T2 hints did the same as each other; an f32 cache keeps T1, its chunk of values being twice L1), and
// the first keys of a task, which the in-loop fetch 16 rows ahead skips, are fetched before the loop.
//
// KV is float, or uint16_t for an IEEE half cache (each block of eight widened by F16C as it is loaded; the
// arithmetic is the same f32 arithmetic on the rounded values, and half the bytes stream from memory).
template <int G, typename KV>
LMF_TARGET_AVX2 void group_attention_avx2(const float* q, const KV* k, int64_t ldk, const KV* v, int64_t ldv,
                                          int64_t lo, int64_t hi, int64_t dk, int64_t dv, float scale, float* s,
                                          float* o, float* lse, const KV* next_k) {
  constexpr int64_t per_line = 64 / static_cast<int64_t>(sizeof(KV));
  constexpr bool kHalf = sizeof(KV) == 2;
  const __m256 vscale = _mm256_set1_ps(scale);
  float m[G], l[G];
  for (int g = 0; g < G; ++g) {
    m[g] = -std::numeric_limits<float>::infinity();
    l[g] = 0.0f;
  }
  std::fill(o, o + G * dv, 0.0f);
  const int64_t passes = dv / 16, lines = (dk + per_line - 1) / per_line;
  for (int64_t j = lo; j < std::min(hi, lo + 16); ++j) prefetch_row<_MM_HINT_T0>(k + j * ldk, dk);
  for (int64_t c_lo = lo; c_lo < hi; c_lo += kChunk) {
    const int64_t n = std::min(kChunk, hi - c_lo);
    int64_t j = 0;
    // Eight keys at a time: eight independent FMA chains per head and one transposing reduction for the eight
    // scores. The block's 8 key rows stay in L1 across the G heads.
    for (; j + 8 <= n; j += 8) {
      const KV* k0 = k + (c_lo + j) * ldk;
      if (c_lo + j + 24 <= hi)
        for (int u = 0; u < 8; ++u) prefetch_row<_MM_HINT_T0>(k0 + (16 + u) * ldk, dk);
      for (int u = 0; u < 8; ++u) prefetch_row<kHalf ? _MM_HINT_T0 : _MM_HINT_T1>(v + (c_lo + j + u) * ldv, dv);
      for (int g = 0; g < G; ++g) {
        const float* qg = q + g * dk;
        __m256 a[8];
        for (int u = 0; u < 8; ++u) a[u] = _mm256_setzero_ps();
        for (int64_t c = 0; c < dk; c += 8) {
          const __m256 qc = _mm256_loadu_ps(qg + c);
          for (int u = 0; u < 8; ++u) a[u] = _mm256_fmadd_ps(load8(k0 + u * ldk + c), qc, a[u]);
        }
        _mm256_storeu_ps(s + g * kChunk + j, _mm256_mul_ps(vscale, hsum8(a)));
      }
    }
    for (; j < n; ++j) {
      const KV* kj = k + (c_lo + j) * ldk;
      __m256 acc[G];
      for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_ps();
      for (int64_t c = 0; c < dk; c += 8) {
        const __m256 kc = load8(kj + c);
        for (int g = 0; g < G; ++g) acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * dk + c), kc, acc[g]);
      }
      for (int g = 0; g < G; ++g) s[g * kChunk + j] = scale * hsum(acc[g]);
    }
    __m256 alpha[G];
    for (int g = 0; g < G; ++g) {
      float* sg = s + g * kChunk;
      const float mx = std::max(m[g], lanes_max(sg, n));
      if (!(mx > -std::numeric_limits<float>::infinity())) {  // no finite score yet: p = 0, nothing to rescale
        std::fill(sg, sg + n, 0.0f);
        alpha[g] = _mm256_set1_ps(1.0f);
        continue;
      }
      for (int64_t i = 0; i < n; ++i) sg[i] = exp_f32(sg[i] - mx);  // vectorised (no reduction in the loop)
      const float a = m[g] == mx ? 1.0f : std::exp(m[g] - mx);      // 0 on the first chunk (m = -inf)
      l[g] = l[g] * a + lanes_sum(sg, n);
      m[g] = mx;
      alpha[g] = _mm256_set1_ps(a);
    }
    // The keys after this chunk: the next chunk's, or the next task's first ones.
    const KV* pk = c_lo + kChunk < hi ? k + (c_lo + kChunk) * ldk : next_k;
    const int64_t pn = c_lo + kChunk < hi ? std::min(kChunk, hi - c_lo - kChunk) : std::min(kChunk, hi - lo);
    for (int64_t c0 = 0; c0 < dv; c0 += 16) {
      __m256 a0[G], a1[G];
      for (int g = 0; g < G; ++g) {
        a0[g] = _mm256_mul_ps(alpha[g], _mm256_loadu_ps(o + g * dv + c0));
        a1[g] = _mm256_mul_ps(alpha[g], _mm256_loadu_ps(o + g * dv + c0 + 8));
      }
      for (int64_t i = 0; i < n; ++i) {
        if (pk && i < pn)  // pass c0 / 16 of the dv / 16 fetches lines c0 / 16 (mod passes) of a key row
          for (int64_t ln = c0 / 16; ln < lines; ln += passes)
            _mm_prefetch(reinterpret_cast<const char*>(pk + i * ldk + per_line * ln), _MM_HINT_T1);
        const KV* vi = v + (c_lo + i) * ldv + c0;
        const __m256 v0 = load8(vi), v1 = load8(vi + 8);
        for (int g = 0; g < G; ++g) {
          const __m256 p = _mm256_set1_ps(s[g * kChunk + i]);
          a0[g] = _mm256_fmadd_ps(p, v0, a0[g]);
          a1[g] = _mm256_fmadd_ps(p, v1, a1[g]);
        }
      }
      for (int g = 0; g < G; ++g) {
        _mm256_storeu_ps(o + g * dv + c0, a0[g]);
        _mm256_storeu_ps(o + g * dv + c0 + 8, a1[g]);
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    if (!(l[g] > 0.0f)) {  // nothing visible: zeros
      lse[g] = -std::numeric_limits<float>::infinity();
      continue;
    }
    const __m256 inv = _mm256_set1_ps(1.0f / l[g]);
    for (int64_t c = 0; c < dv; c += 8)
      _mm256_storeu_ps(o + g * dv + c, _mm256_mul_ps(inv, _mm256_loadu_ps(o + g * dv + c)));
    lse[g] = m[g] + std::log(l[g]);
  }
}
#endif

// A decode step's GQA group through the shared-K/V kernel; false where it does not apply (then per head). Groups
// of one go per head for f32 (row_attention_f32_avx2); an f16 cache has only this kernel, so it takes them here.
// Whether group_attention_avx2 takes a task of G query heads with these head dims (half: an f16 cache, which also
// takes G = 1). The one rule for decode_group and attention_f16kv.
inline bool group_kernel_takes(int64_t G, int64_t dk, int64_t dv, bool half) {
#if LMF_HAVE_X86
  return dk % 8 == 0 && dv % 16 == 0 && (G == 2 || G == 4 || G == 8 || (half && G == 1)) && cpu_has_avx2();
#else
  (void)G, (void)dk, (void)dv, (void)half;
  return false;
#endif
}

template <typename T, typename KV>
bool decode_group(int64_t G, const T* q, const KV* k, int64_t ldk, const KV* v, int64_t ldv, int64_t lo, int64_t hi,
                  int64_t dk, int64_t dv, T scale, T* s, T* o, T* lse, const KV* next_k) {
#if LMF_HAVE_X86
  if constexpr (std::is_same_v<T, float>) {
    if (!group_kernel_takes(G, dk, dv, !std::is_same_v<KV, float>)) return false;
    switch (G) {
      case 1:
        group_attention_avx2<1>(q, k, ldk, v, ldv, lo, hi, dk, dv, scale, s, o, lse, next_k);
        return true;
      case 2:
        group_attention_avx2<2>(q, k, ldk, v, ldv, lo, hi, dk, dv, scale, s, o, lse, next_k);
        return true;
      case 4:
        group_attention_avx2<4>(q, k, ldk, v, ldv, lo, hi, dk, dv, scale, s, o, lse, next_k);
        return true;
      case 8:
        group_attention_avx2<8>(q, k, ldk, v, ldv, lo, hi, dk, dv, scale, s, o, lse, next_k);
        return true;
      default:
        return false;
    }
  }
#endif
  (void)G, (void)q, (void)k, (void)ldk, (void)v, (void)ldv, (void)lo, (void)hi, (void)dk, (void)dv, (void)scale;
  (void)s, (void)o, (void)lse, (void)next_k;
  return false;
}

// The decode row: the AVX2 f32 kernel where it applies, else the multiversioned portable one.
template <typename T>
void decode_row(const T* q, const T* k, int64_t ldk, const T* v, int64_t ldv, int64_t lo, int64_t hi, int64_t dk,
                int64_t dv, T scale, T* s, T* o, T* lse) {
#if LMF_HAVE_X86
  if constexpr (std::is_same_v<T, float>) {
    if (dk % 8 == 0 && dv % 8 == 0 && cpu_has_avx2())
      return row_attention_f32_avx2(q, k, ldk, v, ldv, lo, hi, dk, dv, scale, s, o, lse);
  }
#endif
  row_attention<T>(q, k, ldk, v, ldv, lo, hi, dk, dv, scale, s, o, lse);
}

LMF_MULTIVERSION_T(void, forward_tile, forward_tile_impl,
                   (T * S, int64_t ld, int64_t nq, int64_t nk, const int64_t* a, const int64_t* b, T* m, T* l, T* O,
                    int64_t dv),
                   (S, ld, nq, nk, a, b, m, l, O, dv))
LMF_MULTIVERSION_T(void, backward_tile, backward_tile_impl,
                   (T * S, T* dP, int64_t ld, int64_t nq, int64_t nk, const int64_t* a, const int64_t* b, const T* lse,
                    const T* Di, T scale),
                   (S, dP, ld, nq, nk, a, b, lse, Di, scale))

// One operand's heads (keys, or values) in either layout: the row stride of a head and where head g of batch row b
// starts. Head-major (k_head_stride / v_head_stride > 0): the engine's cache, rows k_row_stride / v_row_stride
// apart when set; token-major otherwise: [B, Tk, Hkv, D].
template <typename E>
struct Heads {
  const E* p;
  int64_t ld, head_stride, d, Tk, Hkv;
  Heads(const AttentionDims& a, const E* base, bool values)
      : p(base),
        head_stride(values ? a.v_head_stride : a.k_head_stride),
        d(values ? a.Dv : a.Dk),
        Tk(a.Tk),
        Hkv(a.Hkv) {
    const int64_t row_stride = values ? a.v_row_stride : a.k_row_stride;
    ld = head_stride > 0 ? (row_stride > 0 ? row_stride : d) : Hkv * d;
  }
  const E* head(int64_t b, int64_t g) const {
    return head_stride > 0 ? p + (b * Hkv + g) * head_stride : p + (b * Tk * Hkv + g) * d;
  }
};

// Query heads per decode task: a GQA group of up to 8 heads is one task; larger ones (MLA's absorbed form is one KV
// head for all query heads) split into sub-groups of 8 (or 4, 2) so the threads share them and each key block is
// read once per sub-group.
inline int64_t decode_sub_group(int64_t group) {
  if (group <= 8) return group;
  return group % 8 == 0 ? 8 : group % 4 == 0 ? 4 : group % 2 == 0 ? 2 : 1;
}

// Key splits per decode task: a single sequence has only Hkv tasks (4 for infer-250m), and two threads that each
// own half of them waited for each other at the end (main thread: a median 4.4 us a layer inside q8_0 decode; the
// threads run at different speeds on a shared machine). Long contexts cut each task's keys into parts of at least
// kSplitKeys, merged by their log-sum-exp afterwards, so the pool balances parts: that wait fell to 2.2 us and the
// attention job by 2.3 us a layer (5%; 128-key parts did the same). A function of the shapes only, not of the
// thread count, so the result does not depend on it.
constexpr int64_t kSplitKeys = 256;
inline int64_t decode_splits(int64_t tasks, int64_t keys) {
  if (tasks >= 16) return 1;
  return std::clamp<int64_t>(keys / kSplitKeys, 1, 4);
}

// A decode step (Tq = 1): one task per (b, kv head, sub-group of its query heads, part of the keys), the
// sub-group's heads scored against each key row together. KV = uint16_t (an f16 cache) only where decode_group
// applies (attention_f16kv checks that first).
template <typename T, typename KV>
void decode_step(const AttentionDims& d, const T* q, const KV* k, const KV* v, T* out, T* lse) {
  const int64_t group = d.Hq / d.Hkv, sub = decode_sub_group(group), subs = group / sub;
  const Heads<KV> K(d, k, false), V(d, v, true);
  const int64_t ldk = K.ld, ldv = V.ld;
  const T scale = static_cast<T>(d.scale);
  const KeyRange kr = visible_keys(d, d.q_offset);
  const int64_t units = d.B * d.Hkv * subs, splits = decode_splits(units, kr.hi - kr.lo);
  // Part s of a unit's keys: [lo + s * part, ...), parts a multiple of 8 keys (the kernel's blocks).
  const int64_t part = ((kr.hi - kr.lo + splits - 1) / splits + 7) & ~int64_t{7};
  const int64_t tasks = units * splits;
  // Split tasks write their parts here, merged below: o [tasks, sub, Dv], lse [tasks, sub].
  thread_local std::vector<T> parts;
  if (splits > 1) parts.resize(static_cast<size_t>(tasks * sub * (d.Dv + 1)));
  T* part_o = parts.data();
  T* part_l = part_o + tasks * sub * d.Dv;
  auto key_lo = [&](int64_t task) { return std::min(kr.hi, kr.lo + task % splits * part); };
  auto first_key = [&](int64_t task) {
    const int64_t u = task / splits;
    return K.head(u / (d.Hkv * subs), u / subs % d.Hkv) + key_lo(task) * ldk;
  };
  const auto body = [&](int64_t t0, int64_t t1) {
    T* S = thread_scratch<T>(static_cast<size_t>(sub * std::max<int64_t>(d.Tk, kChunk)));
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t u = task / splits, b = u / (d.Hkv * subs), g = u / subs % d.Hkv, h0 = g * group + u % subs * sub;
      const int64_t lo = key_lo(task), hi = std::min(kr.hi, lo + part);
      const T* qp = q + (b * d.Hq + h0) * d.Dk;
      const KV* kp = K.head(b, g);
      const KV* vp = V.head(b, g);
      T* op = splits > 1 ? part_o + task * sub * d.Dv : out + (b * d.Hq + h0) * d.Dv;
      T* lp = splits > 1 ? part_l + task * sub : lse + b * d.Hq + h0;
      // The next task's first keys, fetched while this one finishes, unless they are this one's own.
      const KV* after = task + 1 < t1 ? first_key(task + 1) : nullptr;
      const KV* next_k = after != kp + lo * ldk ? after : nullptr;
      if (decode_group<T, KV>(sub, qp, kp, ldk, vp, ldv, lo, hi, d.Dk, d.Dv, scale, S, op, lp, next_k)) continue;
      if constexpr (std::is_same_v<T, KV>) {
        for (int64_t h = 0; h < sub; ++h)
          decode_row<T>(qp + h * d.Dk, kp, ldk, vp, ldv, lo, hi, d.Dk, d.Dv, scale, S, op + h * d.Dv, lp + h);
      }
    }
  };
  const int64_t threads = ThreadPool::global().num_threads();
  if (splits > 1) {
    // Each thread starts on a run of whole units (its keys stream on from part to part), then the rest go one
    // part at a time to whoever is free.
    parallel_for_guided(tasks, 1, body, std::max<int64_t>(1, tasks / threads / 2));
  } else {
    // The tasks cost the same: runs of contiguous tasks, so a thread knows its next task's keys and fetches them
    // while it finishes the current one (decode_group's next_k). One run per thread for a few tasks, four per
    // thread for a batch, so a descheduled thread leaves less behind.
    const int64_t runs = threads * (tasks > 4 * threads ? 4 : 1);
    parallel_for(tasks, std::max((tasks + runs - 1) / runs, task_grain(double(sub) * d.Tk * (d.Dk + d.Dv))), body);
    return;
  }
  // Merge each unit's parts: weights exp(lse_s - max), out = sum w_s o_s / sum w_s, lse = max + log(sum w_s).
  for (int64_t u = 0; u < units; ++u) {
    const int64_t b = u / (d.Hkv * subs), h0 = u / subs % d.Hkv * group + u % subs * sub;
    for (int64_t h = 0; h < sub; ++h) {
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t s = 0; s < splits; ++s) m = std::max(m, part_l[(u * splits + s) * sub + h]);
      T* o = out + (b * d.Hq + h0 + h) * d.Dv;
      if (!(m > -std::numeric_limits<T>::infinity())) {
        std::fill(o, o + d.Dv, T(0));
        lse[b * d.Hq + h0 + h] = m;
        continue;
      }
      T w[4], wsum = 0;
      for (int64_t s = 0; s < splits; ++s) wsum += w[s] = std::exp(part_l[(u * splits + s) * sub + h] - m);
      const T inv = T(1) / wsum;
      for (int64_t c = 0; c < d.Dv; ++c) {
        T acc = 0;
        for (int64_t s = 0; s < splits; ++s) acc += w[s] * part_o[((u * splits + s) * sub + h) * d.Dv + c];
        o[c] = acc * inv;
      }
      lse[b * d.Hq + h0 + h] = m + std::log(wsum);
    }
  }
}

}  // namespace

template <typename T>
void attention(const AttentionDims& d, const T* q, const T* k, const T* v, T* out, T* lse) {
  if (d.B <= 0 || d.Tq <= 0 || d.Hq <= 0 || d.Hkv <= 0) return;
  const int64_t group = d.Hq / d.Hkv;
  const int64_t n_qblocks = (d.Tq + kBlockQ - 1) / kBlockQ;
  const int64_t ldq = d.Hq * d.Dk;
  assert((d.k_head_stride > 0) == (d.v_head_stride > 0));  // both strides or neither
  const Heads<T> K(d, k, false), V(d, v, true);
  const int64_t ldk = K.ld, ldv = V.ld;
  const T scale = static_cast<T>(d.scale);
  if (d.Tq == 1) {
    decode_step<T, T>(d, q, k, v, out, lse);
    return;
  }
  // One task per (b, head, q-block); causal blocks differ in cost, the pool's dynamic chunks even that out.
  const double work = double(std::min(d.Tq, kBlockQ)) * d.Tk * (d.Dk + d.Dv);
  parallel_for(d.B * d.Hq * n_qblocks, task_grain(work), [&](int64_t t0, int64_t t1) {
    T* S = thread_scratch<T>(kBlockQ * kBlockK + kBlockQ * d.Dv + 2 * kBlockQ);
    T* O = S + kBlockQ * kBlockK;
    T* m = O + kBlockQ * d.Dv;
    T* l = m + kBlockQ;
    int64_t col_a[kBlockQ], col_b[kBlockQ];
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t qb = task % n_qblocks, h = task / n_qblocks % d.Hq, b = task / (n_qblocks * d.Hq);
      const int64_t g = h / group;
      const int64_t i0 = qb * kBlockQ, nq = std::min(kBlockQ, d.Tq - i0);
      const T* qp = q + ((b * d.Tq + i0) * d.Hq + h) * d.Dk;
      const T* kp = K.head(b, g);  // key j of this head at kp + j * ldk
      const T* vp = V.head(b, g);
      std::fill(O, O + nq * d.Dv, T(0));
      std::fill(m, m + nq, -std::numeric_limits<T>::infinity());
      std::fill(l, l + nq, T(0));
      const int64_t pos0 = d.q_offset + i0;
      const int64_t lo = visible_keys(d, pos0).lo, hi = visible_keys(d, pos0 + nq - 1).hi;
      for (int64_t j0 = lo; j0 < hi; j0 += kBlockK) {
        const int64_t nk = std::min(kBlockK, hi - j0);
        gemm_serial<T>(false, true, nq, nk, d.Dk, scale, qp, ldq, kp + j0 * ldk, ldk, T(0), S, kBlockK);
        tile_columns(d, pos0, j0, nq, nk, col_a, col_b);
        forward_tile<T>(S, kBlockK, nq, nk, col_a, col_b, m, l, O, d.Dv);
        gemm_serial<T>(false, false, nq, d.Dv, nk, T(1), S, kBlockK, vp + j0 * ldv, ldv, T(1), O, d.Dv);
      }
      // Rows that saw no key: out = 0, lse = -inf (the backward gives them zero gradients).
      T* lp = lse + (b * d.Hq + h) * d.Tq + i0;
      for (int64_t r = 0; r < nq; ++r) {
        const bool any = l[r] > T(0);
        const T inv = any ? T(1) / l[r] : T(0);
        T* o = out + ((b * d.Tq + i0 + r) * d.Hq + h) * d.Dv;
        for (int64_t c = 0; c < d.Dv; ++c) o[c] = O[r * d.Dv + c] * inv;
        lp[r] = any ? m[r] + std::log(l[r]) : -std::numeric_limits<T>::infinity();
      }
    }
  });
}

template <typename T>
void attention_backward(const AttentionDims& d, const T* q, const T* k, const T* v, const T* out, const T* lse,
                        const T* dout, T* dq, T* dk, T* dv) {
  if (d.B <= 0 || d.Hq <= 0 || d.Hkv <= 0) return;
  assert(d.k_head_stride == 0 && d.v_head_stride == 0);  // token-major K/V only
  const int64_t group = d.Hq / d.Hkv;
  const int64_t ldq = d.Hq * d.Dk, ldk = d.Hkv * d.Dk, ldv = d.Hkv * d.Dv, ldo = d.Hq * d.Dv;
  const T scale = static_cast<T>(d.scale);
  // One task per (b, kv head): it owns dK/dV of that head and dQ of the q heads that share it, so every gradient
  // is accumulated by one thread in a fixed order (no atomics, deterministic). The cost is parallelism: B * Hkv
  // tasks at most.
  const double work = double(group) * d.Tq * d.Tk * (3 * d.Dk + 2 * d.Dv);
  parallel_for(d.B * d.Hkv, task_grain(work), [&](int64_t t0, int64_t t1) {
    T* S = thread_scratch<T>(2 * kBlockQ * kBlockK + group * d.Tq);
    T* dP = S + kBlockQ * kBlockK;
    T* Di = dP + kBlockQ * kBlockK;  // [group, Tq]: rowsum(dO * O) per q head of the group
    int64_t col_a[kBlockQ], col_b[kBlockQ];
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t b = task / d.Hkv, g = task % d.Hkv;
      // The group's q heads are adjacent, so each query row's slice of dq is one contiguous run.
      for (int64_t t = 0; t < d.Tq; ++t)
        std::fill_n(dq + ((b * d.Tq + t) * d.Hq + g * group) * d.Dk, group * d.Dk, T(0));
      for (int64_t j = 0; j < d.Tk; ++j) {
        std::fill_n(dk + ((b * d.Tk + j) * d.Hkv + g) * d.Dk, d.Dk, T(0));
        std::fill_n(dv + ((b * d.Tk + j) * d.Hkv + g) * d.Dv, d.Dv, T(0));
      }
      for (int64_t hh = 0; hh < group; ++hh)
        for (int64_t t = 0; t < d.Tq; ++t) {
          const int64_t off = ((b * d.Tq + t) * d.Hq + g * group + hh) * d.Dv;
          T acc = T(0);
          for (int64_t c = 0; c < d.Dv; ++c) acc += dout[off + c] * out[off + c];
          Di[hh * d.Tq + t] = acc;
        }
      for (int64_t j0 = 0; j0 < d.Tk; j0 += kBlockK) {
        const int64_t nk = std::min(kBlockK, d.Tk - j0);
        // Query rows that see at least one key of [j0, j0 + nk): key j is seen by positions >= j (and < j + window).
        int64_t r0 = 0, r1 = d.Tq;
        if (d.causal) {
          r0 = std::clamp<int64_t>(j0 - d.q_offset, 0, d.Tq);
          if (d.window > 0) r1 = std::clamp<int64_t>(j0 + nk - 1 + d.window - d.q_offset, r0, d.Tq);
        }
        const T* kp = k + ((b * d.Tk + j0) * d.Hkv + g) * d.Dk;
        const T* vp = v + ((b * d.Tk + j0) * d.Hkv + g) * d.Dv;
        T* dkp = dk + ((b * d.Tk + j0) * d.Hkv + g) * d.Dk;
        T* dvp = dv + ((b * d.Tk + j0) * d.Hkv + g) * d.Dv;
        for (int64_t hh = 0; hh < group; ++hh) {
          const int64_t h = g * group + hh;
          for (int64_t i0 = r0; i0 < r1; i0 += kBlockQ) {
            const int64_t nq = std::min(kBlockQ, r1 - i0);
            const T* qp = q + ((b * d.Tq + i0) * d.Hq + h) * d.Dk;
            const T* dop = dout + ((b * d.Tq + i0) * d.Hq + h) * d.Dv;
            T* dqp = dq + ((b * d.Tq + i0) * d.Hq + h) * d.Dk;
            gemm_serial<T>(false, true, nq, nk, d.Dk, scale, qp, ldq, kp, ldk, T(0), S, kBlockK);
            gemm_serial<T>(false, true, nq, nk, d.Dv, T(1), dop, ldo, vp, ldv, T(0), dP, kBlockK);
            tile_columns(d, d.q_offset + i0, j0, nq, nk, col_a, col_b);
            backward_tile<T>(S, dP, kBlockK, nq, nk, col_a, col_b, lse + (b * d.Hq + h) * d.Tq + i0,
                             Di + hh * d.Tq + i0, scale);
            gemm_serial<T>(true, false, nk, d.Dv, nq, T(1), S, kBlockK, dop, ldo, T(1), dvp, ldv);   // dV += P^T dO
            gemm_serial<T>(false, false, nq, d.Dk, nk, T(1), dP, kBlockK, kp, ldk, T(1), dqp, ldq);  // dQ += dS K
            gemm_serial<T>(true, false, nk, d.Dk, nq, T(1), dP, kBlockK, qp, ldq, T(1), dkp, ldk);   // dK += dS^T Q
          }
        }
      }
    }
  });
}

template void attention<float>(const AttentionDims&, const float*, const float*, const float*, float*, float*);
template void attention<double>(const AttentionDims&, const double*, const double*, const double*, double*, double*);
template void attention_backward<float>(const AttentionDims&, const float*, const float*, const float*, const float*,
                                        const float*, const float*, float*, float*, float*);
template void attention_backward<double>(const AttentionDims&, const double*, const double*, const double*,
                                         const double*, const double*, const double*, double*, double*, double*);

bool attention_f16kv(const AttentionDims& d, const float* q, const uint16_t* k, const uint16_t* v, float* out,
                     float* lse) {
  if (d.Tq != 1 || d.B <= 0 || d.Hq <= 0 || d.Hkv <= 0 || d.Hq % d.Hkv != 0) return false;
  if (!group_kernel_takes(decode_sub_group(d.Hq / d.Hkv), d.Dk, d.Dv, true)) return false;
  decode_step<float, uint16_t>(d, q, k, v, out, lse);
  return true;
}

}  // namespace lmforge::kernels::cpu
