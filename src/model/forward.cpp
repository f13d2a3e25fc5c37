// The decoder's forward pass: embeddings, blocks (attention + FFN with pre-norm residuals), final norm, LM head.
#include <algorithm>

#include "lmforge/core/ops.h"
#include "lmforge/model/moe.h"
#include "lmforge/model/rope.h"
#include "model/model_impl.h"

namespace lmforge::model {

namespace {

using kernels::cpu::RopeLayout;

// A projection, reported to the observer first when there is one.
Var proj(const ForwardOptions& o, const Var& x, const Var& w) {
  if (o.observe) o.observe(w.name(), x.value());
  return ops::linear(x, w);
}

Var linear_bias(const ForwardOptions& o, const Var& x, const Var& w, const Var& b) {
  Var y = proj(o, x, w);
  return b.defined() ? ops::add(y, b) : y;
}

Var swiglu_mlp(const ForwardOptions& o, const Mlp& m, const Var& x) {
  return proj(o, ops::swiglu(proj(o, x, m.gate), proj(o, x, m.up)), m.down);
}

struct Ctx {
  const ModelConfig& c;
  int64_t B, T;
  Tensor cos, sin;  // rope tables for this call's positions
  ForwardOptions opt;
};

ops::AttentionOptions span(const Ctx& x, int64_t layer, double scale) {
  ops::AttentionOptions a;
  a.causal = true;
  a.window = x.c.is_sliding_layer(layer) ? x.c.sliding_window : 0;
  a.q_offset = 0;
  a.scale = scale;
  return a;
}

Var llama_attention(const Ctx& x, const LayerParams& L, int64_t layer, const Var& h) {
  const ModelConfig& c = x.c;
  const int64_t H = c.num_attention_heads, Hkv = c.num_key_value_heads, hd = c.head_dim;
  Var q = ops::reshape(linear_bias(x.opt, h, L.q, L.q_bias), {x.B, x.T, H, hd});
  Var k = ops::reshape(linear_bias(x.opt, h, L.k, L.k_bias), {x.B, x.T, Hkv, hd});
  Var v = ops::reshape(linear_bias(x.opt, h, L.v, L.v_bias), {x.B, x.T, Hkv, hd});
  q = ops::rope(q, x.cos, x.sin, RopeLayout::HalfSplit);
  k = ops::rope(k, x.cos, x.sin, RopeLayout::HalfSplit);
  Var a = ops::attention(q, k, v, span(x, layer, 0.0));
  return linear_bias(x.opt, ops::reshape(a, {x.B, x.T, H * hd}), L.o, L.o_bias);
}

// The low-rank latents' RMSNorms use eps 1e-6 whatever rms_norm_eps says: HF DeepseekV3 (and DeepSeek's own code)
// construct q_a_layernorm and kv_a_layernorm with the class default.
constexpr double kLatentNormEps = 1e-6;

// DeepSeek Multi-head Latent Attention (training form: K and V decompressed from the latent).
Var mla_attention(const Ctx& x, const LayerParams& L, int64_t layer, const Var& h) {
  const ModelConfig& c = x.c;
  const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int64_t r = c.kv_lora_rank;
  const ForwardOptions& o = x.opt;
  Var q =
      c.q_lora_rank > 0 ? proj(o, ops::rmsnorm(proj(o, h, L.q_a), L.q_a_norm, kLatentNormEps), L.q_b) : proj(o, h, L.q);
  q = ops::reshape(q, {x.B, x.T, H, nope + rope});
  Var kv = proj(o, h, L.kv_a);  // [B, T, r + rope]
  Var latent = ops::slice(kv, 2, 0, r);
  Var k_pe = ops::reshape(ops::slice(kv, 2, r, r + rope), {x.B, x.T, 1, rope});
  Var kvb = ops::reshape(proj(o, ops::rmsnorm(latent, L.kv_a_norm, kLatentNormEps), L.kv_b), {x.B, x.T, H, nope + vd});
  Var v = ops::slice(kvb, 3, nope, nope + vd);
  k_pe = ops::rope(k_pe, x.cos, x.sin, RopeLayout::Interleaved);
  Var q_pe = ops::rope(ops::slice(q, 3, nope, nope + rope), x.cos, x.sin, RopeLayout::Interleaved);
  Var k_pe_heads = H == 1 ? k_pe : ops::concat(std::vector<Var>(static_cast<size_t>(H), k_pe), 2);
  Var qf = q_pe, kf = k_pe_heads;
  if (nope > 0) {
    qf = ops::concat({ops::slice(q, 3, 0, nope), q_pe}, 3);
    kf = ops::concat({ops::slice(kvb, 3, 0, nope), k_pe_heads}, 3);
  }
  Var a = ops::attention(qf, kf, v, span(x, layer, mla_softmax_scale(c)));
  return proj(o, ops::reshape(a, {x.B, x.T, H * vd}), L.o);
}

struct MoeOut {
  Var y, aux;
  ExpertLoad load;
};

MoeOut moe_ffn(const Ctx& x, const LayerParams& L, int64_t layer, const Var& h) {
  const ModelConfig& c = x.c;
  const int64_t N = x.B * x.T, D = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
  Var flat = ops::reshape(h, {N, D});
  RouteOptions ro = route_options(c);
  if (x.opt.training) {
    ro.aux_loss_alpha = c.aux_loss_alpha;
    ro.seq_aux = c.seq_aux;
    ro.batch = x.B;
    ro.capacity_factor = c.moe_capacity_factor;
    ro.noise_std = c.moe_router_noise_std;
    ro.noise_seed = x.opt.seed * 1000003ULL + static_cast<uint64_t>(layer);
  }
  Route r = route(ops::linear(flat, L.router), L.expert_bias, ro);
  // Tokens sorted by expert: one gather, each expert's MLP on its contiguous block, one weighted scatter-add.
  Dispatch d = dispatch(r, E);
  std::vector<int32_t> rows, slots;
  std::vector<int64_t> count(static_cast<size_t>(E), 0);
  for (int64_t e = 0; e < E; ++e) {
    if (!d.rows[e].defined()) continue;
    count[e] = d.rows[e].numel();
    rows.insert(rows.end(), d.rows[e].data<int32_t>(), d.rows[e].data<int32_t>() + count[e]);
    slots.insert(slots.end(), d.slots[e].data<int32_t>(), d.slots[e].data<int32_t>() + count[e]);
  }
  Var y;
  if (!rows.empty()) {
    const auto M = static_cast<int64_t>(rows.size());
    const Tensor rows_t = Tensor::from_ints(rows, {M}), slots_t = Tensor::from_ints(slots, {M});
    Var xs = ops::gather_rows(flat, rows_t);
    std::vector<Var> parts;
    int64_t off = 0;
    for (int64_t e = 0; e < E; ++e) {
      if (count[e] == 0) continue;
      Var xe = count[e] == M ? xs : ops::slice(xs, 0, off, off + count[e]);
      parts.push_back(swiglu_mlp(x.opt, L.experts[e], xe));
      off += count[e];
    }
    Var ys = parts.size() == 1 ? parts[0] : ops::concat(parts, 0);
    Var ws = ops::gather_rows(ops::reshape(r.weights, {N * K, 1}), slots_t);
    y = ops::scatter_add_rows(ops::scale_rows(ys, ws), rows_t, N);
  }
  if (L.shared.gate.defined()) {
    Var s = swiglu_mlp(x.opt, L.shared, flat);
    y = y.defined() ? ops::add(y, s) : s;
  }
  if (!y.defined()) y = Var(Tensor::zeros({N, D}, flat.dtype()));
  MoeOut out{ops::reshape(y, {x.B, x.T, D}), r.aux_loss, {layer, r.load, r.dropped}};
  return out;
}

struct BlockOut {
  Var x, aux;  // aux: the MoE layer's load-balancing loss (training), else undefined
  ExpertLoad load;
};

// Decoder block `l` on x [B, T, D]: pre-norm attention and FFN, each added to the residual stream.
BlockOut decoder_block(const Ctx& ctx, const LayerParams& L, int64_t l, const Var& xin) {
  const ModelConfig& c = ctx.c;
  Var h = ops::rmsnorm(xin, L.input_norm, c.rms_norm_eps);
  Var a = c.is_deepseek() ? mla_attention(ctx, L, l, h) : llama_attention(ctx, L, l, h);
  Var x1 = ops::add(xin, a);
  Var h2 = ops::rmsnorm(x1, L.post_norm, c.rms_norm_eps);
  if (!L.moe) return {ops::add(x1, swiglu_mlp(ctx.opt, L.mlp, h2)), {}, {}};
  MoeOut mo = moe_ffn(ctx, L, l, h2);
  return {ops::add(x1, mo.y), mo.aux, mo.load};
}

std::shared_ptr<Ctx> make_ctx(const ModelConfig& c, int64_t B, int64_t T, const ForwardOptions& opt) {
  const int64_t rot = c.is_deepseek() ? c.qk_rope_head_dim : c.head_dim;
  auto [cos, sin] = rope_tables(c, rot, T, opt.pos0);
  return std::make_shared<Ctx>(Ctx{c, B, T, cos, sin, opt});
}

}  // namespace

ForwardResult CausalLM::forward(const Tensor& ids, const ForwardOptions& opt) const {
  const ModelConfig& c = cfg_;
  const Impl& m = *impl_;
  LMF_CHECK(ids.dtype() == DType::I32 && ids.dim() == 2, "forward: ids must be i32 [batch, tokens], got ", ids.str());
  const int64_t B = ids.size(0), T = ids.size(1);
  LMF_CHECK(T > 0 && B > 0, "forward: empty batch ", ids.str());
  auto ctx = make_ctx(c, B, T, opt);

  ForwardResult res;
  Var x = ops::embedding(m.embed, ids);
  std::vector<Var> aux_terms;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerParams& L = m.layers[l];
    // One block; returns {x_out} or {x_out, aux}. Load statistics are taken from the first run only (a
    // checkpointed block runs again during backward).
    auto load_sink = std::make_shared<ExpertLoad>();
    auto recorded = std::make_shared<bool>(false);
    auto block = [ctx, &L, l, load_sink, recorded](const std::vector<Var>& in) -> std::vector<Var> {
      BlockOut b = decoder_block(*ctx, L, l, in[0]);
      if (L.moe && !*recorded) {
        *load_sink = b.load;
        *recorded = true;
      }
      std::vector<Var> out{b.x};
      if (b.aux.defined()) out.push_back(b.aux);
      return out;
    };
    std::vector<Var> out = opt.checkpoint_blocks && active_tape() ? checkpoint(block, {x}) : block({x});
    x = out[0];
    if (out.size() > 1) aux_terms.push_back(out[1]);
    if (L.moe) res.expert_load.push_back(*load_sink);
  }
  x = ops::rmsnorm(x, m.norm, c.rms_norm_eps);
  res.logits = proj(opt, x, m.lm_head.defined() ? m.lm_head : m.embed);
  for (const Var& a : aux_terms) res.aux_loss = res.aux_loss.defined() ? ops::add(res.aux_loss, a) : a;
  return res;
}

Tensor CausalLM::embed(const Tensor& ids) const {
  LMF_CHECK(ids.dtype() == DType::I32 && ids.dim() == 2 && ids.numel() > 0,
            "embed: ids must be i32 [batch, tokens], got ", ids.str());
  return ops::embedding(impl_->embed, ids).value();
}

Tensor CausalLM::forward_layer(int64_t layer, const Tensor& x, const ForwardOptions& opt) const {
  const ModelConfig& c = cfg_;
  LMF_CHECK(layer >= 0 && layer < c.num_hidden_layers, "forward_layer: layer ", layer, " is outside [0, ",
            c.num_hidden_layers, ")");
  LMF_CHECK(x.dtype() == DType::F32 && x.dim() == 3 && x.size(0) > 0 && x.size(1) > 0 && x.size(2) == c.hidden_size,
            "forward_layer: x must be f32 [batch, tokens, ", c.hidden_size, "], got ", x.str());
  LMF_CHECK(!opt.training && !active_tape(), "forward_layer: inference only (no training routing, no tape)");
  const auto ctx = make_ctx(c, x.size(0), x.size(1), opt);
  return decoder_block(*ctx, impl_->layers[layer], layer, Var(x)).x.value();
}

Var next_token_loss(const Var& logits, const Tensor& targets) {
  LMF_CHECK(
      logits.dim() == 3 && targets.dim() == 2 && targets.size(0) == logits.size(0) && targets.size(1) == logits.size(1),
      "loss: targets ", targets.str(), " do not match logits ", logits.value().str());
  const int64_t N = logits.size(0) * logits.size(1);
  return ops::cross_entropy(ops::reshape(logits, {N, logits.size(2)}), targets.reshape({N}));
}

Var causal_lm_loss(const Var& logits, const Tensor& ids) {
  LMF_CHECK(ids.dtype() == DType::I32 && ids.dim() == 2, "loss: ids must be i32 [batch, tokens], got ", ids.str());
  const int64_t B = ids.size(0), T = ids.size(1);
  std::vector<int32_t> src = ids.to_int_vector(), tgt(src.size(), -100);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) tgt[b * T + t] = src[b * T + t + 1];
  return next_token_loss(logits, Tensor::from_ints(tgt, {B, T}));
}

}  // namespace lmforge::model
