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
#include <cmath>
#include <cstdint>
#include <limits>
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

LMF_MULTIVERSION_T(void, forward_tile, forward_tile_impl,
                   (T * S, int64_t ld, int64_t nq, int64_t nk, const int64_t* a, const int64_t* b, T* m, T* l, T* O,
                    int64_t dv),
                   (S, ld, nq, nk, a, b, m, l, O, dv))
LMF_MULTIVERSION_T(void, backward_tile, backward_tile_impl,
                   (T * S, T* dP, int64_t ld, int64_t nq, int64_t nk, const int64_t* a, const int64_t* b, const T* lse,
                    const T* Di, T scale),
                   (S, dP, ld, nq, nk, a, b, lse, Di, scale))

}  // namespace

template <typename T>
void attention(const AttentionDims& d, const T* q, const T* k, const T* v, T* out, T* lse) {
  if (d.B <= 0 || d.Tq <= 0 || d.Hq <= 0 || d.Hkv <= 0) return;
  const int64_t group = d.Hq / d.Hkv;
  const int64_t n_qblocks = (d.Tq + kBlockQ - 1) / kBlockQ;
  const int64_t ldq = d.Hq * d.Dk, ldk = d.Hkv * d.Dk, ldv = d.Hkv * d.Dv;
  const T scale = static_cast<T>(d.scale);
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
      const T* kp = k + (b * d.Tk * d.Hkv + g) * d.Dk;  // key j of this head at kp + j * ldk
      const T* vp = v + (b * d.Tk * d.Hkv + g) * d.Dv;
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

}  // namespace lmforge::kernels::cpu
