// The engine's attention: caches (growing for full layers, ring buffers for sliding layers), llama GQA/MHA, and
// DeepSeek MLA over a cache of compressed latents, decoded either by decompressing K/V from the latents or in the
// absorbed-weight form.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "lmforge/core/half.h"
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
template <typename E>
void grow_buffer(std::vector<E>& buf, int64_t heads, int64_t old_rows, int64_t rows, int64_t d) {
  if (d == 0) return;
  std::vector<E> bigger(static_cast<size_t>(heads * rows * d));
  if (old_rows > 0)
    for (int64_t h = 0; h < heads; ++h)
      std::memcpy(bigger.data() + h * rows * d, buf.data() + h * old_rows * d,
                  sizeof(E) * static_cast<size_t>(old_rows * d));
  buf.swap(bigger);
}

void reserve(LayerCache& lc, bool half, int64_t end, int64_t window, int64_t heads, int64_t dk, int64_t dv) {
  const int64_t need = window > 0 ? std::min(window, end) : end;
  if (need <= lc.rows) return;
  int64_t rows = std::max<int64_t>(need, std::max<int64_t>(16, lc.rows * 2));
  if (window > 0) rows = std::min(rows, window);
  if (half) {
    grow_buffer(lc.hk, heads, lc.rows, rows, dk);
    grow_buffer(lc.hv, heads, lc.rows, rows, dv);
  } else {
    grow_buffer(lc.k, heads, lc.rows, rows, dk);
    grow_buffer(lc.v, heads, lc.rows, rows, dv);
  }
  lc.rows = rows;
}

// Token t of a token-major [n, heads * d] block into slot `slot` of a head-major buffer of `rows` rows a head.
void put_row(float* dst, int64_t rows, int64_t slot, const float* src, int64_t heads, int64_t d) {
  for (int64_t h = 0; h < heads; ++h) fcopy(dst + (h * rows + slot) * d, src + h * d, d);
}
void put_row(uint16_t* dst, int64_t rows, int64_t slot, const float* src, int64_t heads, int64_t d) {
  for (int64_t h = 0; h < heads; ++h) f32_to_f16_row(src + h * d, dst + (h * rows + slot) * d, d);
}

// Rows [0, n) of each head of a head-major buffer (`rows` rows a head) as floats, head-major with n rows a head.
void widen(const float* src, int64_t rows, int64_t n, int64_t heads, int64_t d, float* dst) {
  for (int64_t h = 0; h < heads; ++h) fcopy(dst + h * n * d, src + h * rows * d, n * d);
}
void widen(const uint16_t* src, int64_t rows, int64_t n, int64_t heads, int64_t d, float* dst) {
  for (int64_t h = 0; h < heads; ++h) f16_to_f32_row(src + h * rows * d, dst + h * n * d, n * d);
}

// The keys a segment's queries see, in position order, head-major: head h's key j at k + h * k_head_stride + j * dk
// (values likewise); query t of the segment sits at key index q_offset + t. Writes the segment's new rows into the
// cache first. An f16 cache is seen directly through hk / hv (k and v null) where it needs no gathering; otherwise,
// and after widen_view, k / v point at f32 copies.
struct KeyView {
  const float *k = nullptr, *v = nullptr;
  const uint16_t *hk = nullptr, *hv = nullptr;
  int64_t Tk = 0, q_offset = 0, k_head_stride = 0, v_head_stride = 0;
  int64_t heads = 0, dk = 0, dv = 0;
  std::vector<float> tk, tv;  // storage when the keys had to be gathered from a ring buffer or widened
};

void key_view(LayerCache& lc, const Segment& s, int64_t window, const float* new_k, const float* new_v, int64_t heads,
              int64_t dk, int64_t dv, KeyView& kv) {
  const bool half = s.seq->half;
  const int64_t end = s.pos0 + s.n, row_k = heads * dk, row_v = heads * dv;
  reserve(lc, half, end, window, heads, dk, dv);
  kv.heads = heads;
  kv.dk = dk;
  kv.dv = dv;
  auto store = [&](int64_t slot, int64_t t) {  // new row t into cache slot `slot`
    if (half) {
      put_row(lc.hk.data(), lc.rows, slot, new_k + t * row_k, heads, dk);
      if (dv) put_row(lc.hv.data(), lc.rows, slot, new_v + t * row_v, heads, dv);
    } else {
      put_row(lc.k.data(), lc.rows, slot, new_k + t * row_k, heads, dk);
      if (dv) put_row(lc.v.data(), lc.rows, slot, new_v + t * row_v, heads, dv);
    }
  };
  if (window == 0 || end <= window) {  // rows are positions
    for (int64_t t = 0; t < s.n; ++t) store(s.pos0 + t, t);
    if (half) {
      kv.hk = lc.hk.data();
      kv.hv = lc.hv.data();
    } else {
      kv.k = lc.k.data();
      kv.v = lc.v.data();
    }
    kv.k_head_stride = lc.rows * dk;
    kv.v_head_stride = lc.rows * dv;
    kv.Tk = end;
    kv.q_offset = s.pos0;
    return;
  }
  // Ring buffer: the old keys the first query still sees, then the new ones, gathered per head (as floats; new
  // rows of an f16 cache rounded as the cache holds them).
  const int64_t old0 = std::max<int64_t>(0, s.pos0 - window + 1), n_old = s.pos0 - old0, Tk = n_old + s.n;
  std::vector<uint16_t> h16;
  auto gather = [&](std::vector<float>& dst, const auto& ring, const float* fresh, int64_t d) {
    if (d == 0) return;
    dst.resize(static_cast<size_t>(heads * Tk * d));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t p = old0, run = 0; p < s.pos0; p += run) {  // at most two runs of consecutive slots
        run = std::min(s.pos0 - p, window - p % window);
        widen(ring.data() + (h * lc.rows + p % window) * d, 0, run, 1, d, dst.data() + (h * Tk + p - old0) * d);
      }
    for (int64_t t = 0; t < s.n; ++t) {
      const float* row = fresh + t * heads * d;
      if (half) {
        h16.resize(static_cast<size_t>(heads * d));
        f32_to_f16_row(row, h16.data(), heads * d);
        for (int64_t h = 0; h < heads; ++h)
          f16_to_f32_row(h16.data() + h * d, dst.data() + (h * Tk + n_old + t) * d, d);
      } else {
        put_row(dst.data(), Tk, n_old + t, row, heads, d);
      }
    }
  };
  if (half) {
    gather(kv.tk, lc.hk, new_k, dk);
    gather(kv.tv, lc.hv, new_v, dv);
  } else {
    gather(kv.tk, lc.k, new_k, dk);
    gather(kv.tv, lc.v, new_v, dv);
  }
  for (int64_t p = std::max(s.pos0, end - window); p < end; ++p) store(p % window, p - s.pos0);
  kv.k = kv.tk.data();
  kv.v = kv.tv.data();
  kv.k_head_stride = Tk * dk;
  kv.v_head_stride = Tk * dv;
  kv.Tk = Tk;
  kv.q_offset = n_old;
}

// A view of an f16 cache as f32 copies of its visible rows (prefill, or a decode the f16 kernel does not take).
void widen_view(KeyView& kv) {
  if (!kv.hk) return;
  kv.tk.resize(static_cast<size_t>(kv.heads * kv.Tk * kv.dk));
  widen(kv.hk, kv.k_head_stride / kv.dk, kv.Tk, kv.heads, kv.dk, kv.tk.data());
  kv.k = kv.tk.data();
  kv.k_head_stride = kv.Tk * kv.dk;
  if (kv.dv) {
    kv.tv.resize(static_cast<size_t>(kv.heads * kv.Tk * kv.dv));
    widen(kv.hv, kv.v_head_stride / kv.dv, kv.Tk, kv.heads, kv.dv, kv.tv.data());
    kv.v = kv.tv.data();
    kv.v_head_stride = kv.Tk * kv.dv;
  }
  kv.hk = kv.hv = nullptr;
}

// Attention of one segment over its key view: on an f16 cache directly where the kernel takes it (a decode step),
// else over f32 copies.
void attend(kernels::cpu::AttentionDims d, KeyView& kv, const float* q, float* out, float* lse, bool v_is_k) {
  d.Tk = kv.Tk;
  d.q_offset = kv.q_offset;
  auto strides = [&] {
    d.k_head_stride = kv.k_head_stride;
    d.v_head_stride = v_is_k ? kv.k_head_stride : kv.v_head_stride;
  };
  strides();
  if (kv.hk) {
    if (kernels::cpu::attention_f16kv(d, q, kv.hk, v_is_k ? kv.hk : kv.hv, out, lse)) return;
    widen_view(kv);  // new strides
    strides();
  }
  kernels::cpu::attention(d, q, kv.k, v_is_k ? kv.k : kv.v, out, lse);
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
  thread_local std::vector<float> cs, sn, lse;  // resized each call; thread-local keeps their capacity
  rope_rows(*this, positions(segs, N), cs, sn);
  kernels::cpu::AttentionDims d;
  d.causal = true;
  d.window = L.window;
  d.Hq = H;

  if (!c.is_deepseek()) {
    const int64_t hd = c.head_dim, Hkv = c.num_key_value_heads, nq = H * hd, nk = Hkv * hd;
    thread_local std::vector<float> q_buf, k_buf, v_buf, qr_buf, kr_buf, att_buf, qkv_buf;
    const Scratch q_s(q_buf, N * nq), k_s(k_buf, N * nk), v_s(v_buf, N * nk), qr_s(qr_buf, N * nq),
        kr_s(kr_buf, N * nk), att_s(att_buf, N * nq);
    float *q = q_s.data(), *k = k_s.data(), *v = v_s.data(), *qr = qr_s.data(), *kr = kr_s.data(), *att = att_s.data();
    const int64_t row = nq + 2 * nk;
    const Scratch qkv_s(qkv_buf, L.qkv.defined() ? N * row : 0);
    if (L.qkv.defined()) {
      float* qkv = qkv_s.data();
      weight_matmul(L.qkv, h, N, qkv);
      if (N == 1) {  // one token's row is [q | k | v]: read them in place
        q = qkv;
        k = q + nq;
        v = k + nk;
      } else {
        for (int64_t t = 0; t < N; ++t) {
          const float* src = qkv + t * row;
          std::copy(src, src + nq, q + t * nq);
          std::copy(src + nq, src + nq + nk, k + t * nk);
          std::copy(src + nq + nk, src + row, v + t * nk);
        }
      }
    } else {
      weight_matmul(L.q, h, N, q);
      weight_matmul(L.k, h, N, k);
      weight_matmul(L.v, h, N, v);
    }
    add_bias(q, L.q_bias, N);
    add_bias(k, L.k_bias, N);
    add_bias(v, L.v_bias, N);
    kernels::cpu::rope(q, qr, cs.data(), sn.data(), 1, N, H, hd, hd, RopeLayout::HalfSplit, false);
    kernels::cpu::rope(k, kr, cs.data(), sn.data(), 1, N, Hkv, hd, hd, RopeLayout::HalfSplit, false);
    d.Hkv = Hkv;
    d.Dk = d.Dv = hd;
    d.scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (const Segment& s : segs) {
      KeyView kv;
      key_view(s.seq->layers[layer], s, L.window, kr + s.row0 * nk, v + s.row0 * nk, Hkv, hd, hd, kv);
      d.Tq = s.n;
      lse.resize(static_cast<size_t>(H * s.n));
      attend(d, kv, qr + s.row0 * nq, att + s.row0 * nq, lse.data(), false);
    }
    weight_matmul(L.o, att, N, out);
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
      lse.resize(static_cast<size_t>(H * s.n));
      attend(d, kvw, qa.data() + s.row0 * H * dq, olat.data() + s.row0 * H * r, lse.data(), true);
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
      widen_view(kvw);
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
