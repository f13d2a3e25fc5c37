// The engine's attention: caches (growing for full layers, ring buffers for sliding layers), llama GQA/MHA, and
// DeepSeek MLA over a cache of compressed latents, decoded either by decompressing K/V from the latents or in the
// absorbed-weight form.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/cpu_features.h"
#include "lmforge/kernels/thread_pool.h"
#include "lmforge/model/rope.h"
#include "model/engine_impl.h"

namespace lmforge::model {

namespace {

using kernels::cpu::RopeLayout;

// HF DeepseekV3 builds q_a_layernorm and kv_a_layernorm with eps 1e-6 whatever rms_norm_eps says (as forward.cpp).
constexpr double kLatentNormEps = 1e-6;

void fcopy(float* dst, const float* src, int64_t n) {
  std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
}

// Layer caches are head-major: head h's rows (positions, or ring slots for sliding layers) are the contiguous block
// [h * rows * d, (h + 1) * rows * d), so a decode step reads each KV head as one stream. new_k / new_v rows are
// token-major [n, heads * d], as the projections make them.

// Makes room for positions up to `end` (exclusive): full layers grow (doubling), sliding layers hold `window` rows.
// Growing moves each head's block to its place in the larger buffer.
void reserve(LayerCache& lc, int64_t end, int64_t window, int64_t heads, int64_t dk, int64_t dv) {
  const int64_t need = window > 0 ? std::min(window, end) : end;
  if (need <= lc.rows) return;
  int64_t rows = std::max<int64_t>(need, std::max<int64_t>(16, lc.rows * 2));
  if (window > 0) rows = std::min(rows, window);
  auto grow = [&](std::vector<float>& buf, int64_t d) {
    if (d == 0) return;
    std::vector<float> bigger(static_cast<size_t>(heads * rows * d));
    if (lc.rows > 0)
      for (int64_t h = 0; h < heads; ++h)
        fcopy(bigger.data() + h * rows * d, buf.data() + h * lc.rows * d, lc.rows * d);
    buf.swap(bigger);
  };
  grow(lc.k, dk);
  grow(lc.v, dv);
  lc.rows = rows;
}

// Token t of a token-major [n, heads * d] block into slot `slot` of a head-major buffer of `rows` rows a head.
void put_row(float* dst, int64_t rows, int64_t slot, const float* src, int64_t heads, int64_t d) {
  for (int64_t h = 0; h < heads; ++h) fcopy(dst + (h * rows + slot) * d, src + h * d, d);
}

// The keys a segment's queries see, in position order, head-major: head h's key j at k + h * k_head_stride + j * dk
// (values likewise); query t of the segment sits at key index q_offset + t. Writes the segment's new rows into the
// cache first.
struct KeyView {
  const float *k = nullptr, *v = nullptr;
  int64_t Tk = 0, q_offset = 0, k_head_stride = 0, v_head_stride = 0;
  std::vector<float> tk, tv;  // storage when the keys had to be gathered from a ring buffer
};

void key_view(LayerCache& lc, const Segment& s, int64_t window, const float* new_k, const float* new_v, int64_t heads,
              int64_t dk, int64_t dv, KeyView& kv) {
  const int64_t end = s.pos0 + s.n, row_k = heads * dk, row_v = heads * dv;
  reserve(lc, end, window, heads, dk, dv);
  auto store = [&](int64_t slot, int64_t t) {  // new row t into cache slot `slot`
    put_row(lc.k.data(), lc.rows, slot, new_k + t * row_k, heads, dk);
    if (dv) put_row(lc.v.data(), lc.rows, slot, new_v + t * row_v, heads, dv);
  };
  if (window == 0 || end <= window) {  // rows are positions
    for (int64_t t = 0; t < s.n; ++t) store(s.pos0 + t, t);
    kv.k = lc.k.data();
    kv.v = lc.v.data();
    kv.k_head_stride = lc.rows * dk;
    kv.v_head_stride = lc.rows * dv;
    kv.Tk = end;
    kv.q_offset = s.pos0;
    return;
  }
  // Ring buffer: the old keys the first query still sees, then the new ones, gathered per head.
  const int64_t old0 = std::max<int64_t>(0, s.pos0 - window + 1), n_old = s.pos0 - old0, Tk = n_old + s.n;
  auto gather = [&](std::vector<float>& dst, const std::vector<float>& ring, const float* fresh, int64_t d) {
    if (d == 0) return;
    dst.resize(static_cast<size_t>(heads * Tk * d));
    for (int64_t p = old0; p < s.pos0; ++p)
      for (int64_t h = 0; h < heads; ++h)
        fcopy(dst.data() + (h * Tk + p - old0) * d, ring.data() + (h * lc.rows + p % window) * d, d);
    for (int64_t t = 0; t < s.n; ++t) put_row(dst.data(), Tk, n_old + t, fresh + t * heads * d, heads, d);
  };
  gather(kv.tk, lc.k, new_k, dk);
  gather(kv.tv, lc.v, new_v, dv);
  for (int64_t p = std::max(s.pos0, end - window); p < end; ++p) store(p % window, p - s.pos0);
  kv.k = kv.tk.data();
  kv.v = kv.tv.data();
  kv.k_head_stride = Tk * dk;
  kv.v_head_stride = Tk * dv;
  kv.Tk = Tk;
  kv.q_offset = n_old;
}

void add_bias(float* y, const std::vector<float>& b, int64_t rows) {
  if (!b.empty()) kernels::cpu::add_rowvec(y, b.data(), y, rows, static_cast<int64_t>(b.size()));
}

std::vector<int64_t> positions(const std::vector<Segment>& segs, int64_t N) {
  std::vector<int64_t> pos(static_cast<size_t>(N));
  for (const Segment& s : segs)
    for (int64_t i = 0; i < s.n; ++i) pos[s.row0 + i] = s.pos0 + i;
  return pos;
}

// out[:, h, :] = W_h(x[:, h, :]) for per-head matrices: x [N, H, in_stride] (columns [in0, in0 + W.cols())),
// out [N, H, out_stride] (columns [out0, out0 + W.rows())).
void per_head(const std::vector<WeightMatrix>& w, const float* x, int64_t N, int64_t in_stride, int64_t in0, float* y,
              int64_t out_stride, int64_t out0) {
  const auto H = static_cast<int64_t>(w.size());
  const int64_t ci = w[0].cols(), co = w[0].rows();
  std::vector<float> a(static_cast<size_t>(N * ci)), b(static_cast<size_t>(N * co));
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t < N; ++t) fcopy(a.data() + t * ci, x + (t * H + h) * in_stride + in0, ci);
    weight_matmul(w[h], a.data(), N, b.data());
    for (int64_t t = 0; t < N; ++t) fcopy(y + (t * H + h) * out_stride + out0, b.data() + t * co, co);
  }
}

}  // namespace

void Engine::Impl::attention(int64_t layer, const float* h, int64_t N, std::vector<Segment>& segs, float* out) {
  const EngineLayer& L = layers[layer];
  const int64_t H = c.num_attention_heads;
  std::vector<float> cs, sn;
  rope_rows(*this, positions(segs, N), cs, sn);
  kernels::cpu::AttentionDims d;
  d.causal = true;
  d.window = L.window;
  d.Hq = H;
  std::vector<float> lse;

  if (!c.is_deepseek()) {
    const int64_t hd = c.head_dim, Hkv = c.num_key_value_heads;
    std::vector<float> q(static_cast<size_t>(N * H * hd)), k(static_cast<size_t>(N * Hkv * hd)), v(k.size());
    std::vector<float> qr(q.size()), kr(k.size()), att(q.size());
    if (L.qkv.defined()) {
      const int64_t nq = H * hd, nk = Hkv * hd, row = nq + 2 * nk;
      std::vector<float> qkv(static_cast<size_t>(N * row));
      weight_matmul(L.qkv, h, N, qkv.data());
      for (int64_t t = 0; t < N; ++t) {
        const float* src = qkv.data() + t * row;
        std::copy(src, src + nq, q.data() + t * nq);
        std::copy(src + nq, src + nq + nk, k.data() + t * nk);
        std::copy(src + nq + nk, src + row, v.data() + t * nk);
      }
    } else {
      weight_matmul(L.q, h, N, q.data());
      weight_matmul(L.k, h, N, k.data());
      weight_matmul(L.v, h, N, v.data());
    }
    add_bias(q.data(), L.q_bias, N);
    add_bias(k.data(), L.k_bias, N);
    add_bias(v.data(), L.v_bias, N);
    kernels::cpu::rope(q.data(), qr.data(), cs.data(), sn.data(), 1, N, H, hd, hd, RopeLayout::HalfSplit, false);
    kernels::cpu::rope(k.data(), kr.data(), cs.data(), sn.data(), 1, N, Hkv, hd, hd, RopeLayout::HalfSplit, false);
    d.Hkv = Hkv;
    d.Dk = d.Dv = hd;
    d.scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (const Segment& s : segs) {
      KeyView kv;
      key_view(s.seq->layers[layer], s, L.window, kr.data() + s.row0 * Hkv * hd, v.data() + s.row0 * Hkv * hd, Hkv, hd,
               hd, kv);
      d.Tq = s.n;
      d.Tk = kv.Tk;
      d.q_offset = kv.q_offset;
      d.k_head_stride = kv.k_head_stride;
      d.v_head_stride = kv.v_head_stride;
      lse.resize(static_cast<size_t>(H * s.n));
      kernels::cpu::attention(d, qr.data() + s.row0 * H * hd, kv.k, kv.v, att.data() + s.row0 * H * hd, lse.data());
    }
    weight_matmul(L.o, att.data(), N, out);
    add_bias(out, L.o_bias, N);
    return;
  }

  // MLA.
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim, r = c.kv_lora_rank;
  const int64_t qk = nope + rope, row = r + rope;
  std::vector<float> q(static_cast<size_t>(N * H * qk));
  if (c.q_lora_rank > 0) {
    std::vector<float> qa(static_cast<size_t>(N * c.q_lora_rank)), rs(static_cast<size_t>(N));
    weight_matmul(L.q_a, h, N, qa.data());
    kernels::cpu::rmsnorm(qa.data(), L.q_a_norm.data(), qa.data(), rs.data(), N, c.q_lora_rank, kLatentNormEps);
    weight_matmul(L.q_b, qa.data(), N, q.data());
  } else {
    weight_matmul(L.q, h, N, q.data());
  }
  // New cache rows: [rmsnorm(latent) | rope(k_pe)].
  std::vector<float> kv(static_cast<size_t>(N * row)), lat(static_cast<size_t>(N * r)), rs(static_cast<size_t>(N));
  std::vector<float> pe(static_cast<size_t>(N * rope)), per(pe.size()), rows(kv.size());
  weight_matmul(L.kv_a, h, N, kv.data());
  for (int64_t t = 0; t < N; ++t) {
    fcopy(lat.data() + t * r, kv.data() + t * row, r);
    fcopy(pe.data() + t * rope, kv.data() + t * row + r, rope);
  }
  kernels::cpu::rmsnorm(lat.data(), L.kv_a_norm.data(), lat.data(), rs.data(), N, r, kLatentNormEps);
  kernels::cpu::rope(pe.data(), per.data(), cs.data(), sn.data(), 1, N, 1, rope, rope, RopeLayout::Interleaved, false);
  for (int64_t t = 0; t < N; ++t) {
    fcopy(rows.data() + t * row, lat.data() + t * r, r);
    fcopy(rows.data() + t * row + r, per.data() + t * rope, rope);
  }
  // Queries' rope part, rotated.
  std::vector<float> qpe(static_cast<size_t>(N * H * rope)), qper(qpe.size());
  for (int64_t i = 0; i < N * H; ++i) fcopy(qpe.data() + i * rope, q.data() + i * qk + nope, rope);
  kernels::cpu::rope(qpe.data(), qper.data(), cs.data(), sn.data(), 1, N, H, rope, rope, RopeLayout::Interleaved,
                     false);
  const auto scale = static_cast<float>(mla_softmax_scale(c));
  std::vector<float> att(static_cast<size_t>(N * H * vd));
  bool decode_only = true;
  for (const Segment& s : segs) decode_only = decode_only && s.n == 1;

  if (opt.mla_absorb && decode_only) {
    // Scores q_nope·(W_uk c) = (W_ukᵀ q_nope)·c: the query moves into latent space and the cache rows serve as
    // keys directly; values are the latents, mapped through W_uv after attention.
    const int64_t dq = row;
    std::vector<float> qa(static_cast<size_t>(N * H * dq), 0.0f), olat(static_cast<size_t>(N * H * r));
    if (nope > 0) per_head(L.uk_t, q.data(), N, qk, 0, qa.data(), dq, 0);
    for (int64_t i = 0; i < N * H; ++i) fcopy(qa.data() + i * dq + r, qper.data() + i * rope, rope);
    // One KV head for all H query heads: keys are the cache rows (row floats apart), values their first r floats.
    d.Hkv = 1;
    d.Dk = dq;
    d.Dv = r;
    d.scale = scale;
    d.k_row_stride = d.v_row_stride = row;
    for (const Segment& s : segs) {
      KeyView kvw;
      key_view(s.seq->layers[layer], s, L.window, rows.data() + s.row0 * row, nullptr, 1, row, 0, kvw);
      d.Tq = s.n;
      d.Tk = kvw.Tk;
      d.q_offset = kvw.q_offset;
      d.k_head_stride = d.v_head_stride = kvw.k_head_stride;
      lse.resize(static_cast<size_t>(H * s.n));
      kernels::cpu::attention(d, qa.data() + s.row0 * H * dq, kvw.k, kvw.k, olat.data() + s.row0 * H * r, lse.data());
    }
    per_head(L.uv, olat.data(), N, r, 0, att.data(), vd, 0);
  } else {
    std::vector<float> qf(static_cast<size_t>(N * H * qk));
    for (int64_t i = 0; i < N * H; ++i) {
      fcopy(qf.data() + i * qk, q.data() + i * qk, nope);
      fcopy(qf.data() + i * qk + nope, qper.data() + i * rope, rope);
    }
    d.Hkv = H;
    d.Dk = qk;
    d.Dv = vd;
    d.scale = scale;
    for (const Segment& s : segs) {
      KeyView kvw;
      key_view(s.seq->layers[layer], s, L.window, rows.data() + s.row0 * row, nullptr, 1, row, 0, kvw);
      // Decompress the visible latents: K = [W_uk c | k_pe] per head, V = W_uv c.
      const int64_t Tk = kvw.Tk;
      std::vector<float> lt(static_cast<size_t>(Tk * r)), kvb(static_cast<size_t>(Tk * H * (nope + vd)));
      for (int64_t j = 0; j < Tk; ++j) fcopy(lt.data() + j * r, kvw.k + j * row, r);
      weight_matmul(L.kv_b, lt.data(), Tk, kvb.data());
      std::vector<float> K(static_cast<size_t>(Tk * H * qk)), V(static_cast<size_t>(Tk * H * vd));
      for (int64_t j = 0; j < Tk; ++j)
        for (int64_t hh = 0; hh < H; ++hh) {
          const float* src = kvb.data() + (j * H + hh) * (nope + vd);
          fcopy(K.data() + (j * H + hh) * qk, src, nope);
          fcopy(K.data() + (j * H + hh) * qk + nope, kvw.k + j * row + r, rope);
          fcopy(V.data() + (j * H + hh) * vd, src + nope, vd);
        }
      d.Tq = s.n;
      d.Tk = Tk;
      d.q_offset = kvw.q_offset;
      lse.resize(static_cast<size_t>(H * s.n));
      kernels::cpu::attention(d, qf.data() + s.row0 * H * qk, K.data(), V.data(), att.data() + s.row0 * H * vd,
                              lse.data());
    }
  }
  weight_matmul(L.o, att.data(), N, out);
}

}  // namespace lmforge::model
