// The decoder as an ONNX graph, op for op the math of src/model/forward.cpp at inference, with a KV cache:
// each layer's new keys/values are appended to past_key_values.{i}.* and returned as present.{i}.*.
//
// Masks use cache indices, as Hugging Face does: query i of this call sits at index past + i, and sees key j when
// j <= past + i (causal), j > past + i - sliding_window (sliding layers), and attention_mask[b, j] == 1. RoPE angles
// come from position_ids, formed in float32 as position * inv_freq (the same product lmforge::model::rope_tables
// forms), so left-padded batches work as in transformers.
#include "export/onnx_decoder.h"

#include <cmath>
#include <limits>

#include "lmforge/core/error.h"
#include "lmforge/model/rope.h"

namespace lmforge::exporter {

namespace {

using model::ModelConfig;
using G = OnnxGraphBuilder;

constexpr const char* kBatch = "batch_size";
constexpr const char* kSeq = "sequence_length";
constexpr const char* kPast = "past_sequence_length";
constexpr const char* kTotal = "past_sequence_length + sequence_length";

// As forward.cpp: the latents' RMSNorms use eps 1e-6 whatever rms_norm_eps says (HF DeepseekV3 does too).
constexpr double kLatentNormEps = 1e-6;

struct Dim {
  int64_t value = -1;
  std::string param;
};

void value_info(onnx::ValueInfoProto* vi, const std::string& name, int32_t type, const std::vector<Dim>& dims) {
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(type);
  auto* shape = tt->mutable_shape();
  for (const Dim& d : dims) {
    auto* x = shape->add_dim();
    if (d.param.empty()) {
      x->set_dim_value(d.value);
    } else {
      x->set_dim_param(d.param);
    }
  }
}

struct Shared {
  std::string mask_full, mask_sliding;  // additive biases [B, 1, S, T]: 0 where allowed, float lowest elsewhere
  std::string cos, sin;                 // [B, 1, S, rot/2] (half-split) or [B, 1, S, rot/2, 1] (interleaved)
};

Shared shared_inputs(DecoderGraph& d, int64_t rot, bool interleaved) {
  const ModelConfig& c = d.c;
  G& b = d.b;
  b.set_scope("mask");
  Shared s;
  const std::string S = b.op("Gather", {b.op("Shape", {"input_ids"}), b.int_scalar(1)}, {G::attr("axis", int64_t{0})});
  const std::string T =
      b.op("Gather", {b.op("Shape", {"attention_mask"}), b.int_scalar(1)}, {G::attr("axis", int64_t{0})});
  const std::string kidx = b.op("Range", {b.int_scalar(0), T, b.int_scalar(1)});                // [T]
  const std::string qidx = b.unsqueeze(b.op("Range", {b.sub(T, S), T, b.int_scalar(1)}), {1});  // [S, 1]
  const std::string causal = b.op("LessOrEqual", {kidx, qidx});                                 // [S, T]
  const std::string keep = b.unsqueeze(
      b.op("Cast", {"attention_mask"}, {G::attr("to", int64_t{onnx::TensorProto::BOOL})}), {1, 2});  // [B, 1, 1, T]
  const std::string zero = b.float_scalar(0.0f), lowest = b.float_scalar(std::numeric_limits<float>::lowest());
  s.mask_full = b.op("Where", {b.op("And", {causal, keep}), zero, lowest});
  bool any_sliding = false;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) any_sliding = any_sliding || c.is_sliding_layer(l);
  if (any_sliding) {
    const std::string in_window = b.op("Greater", {kidx, b.sub(qidx, b.int_scalar(c.sliding_window))});
    s.mask_sliding = b.op("Where", {b.op("And", {b.op("And", {causal, in_window}), keep}), zero, lowest});
  }

  b.set_scope("rope");
  std::vector<float> inv;
  for (double f : model::rope_inv_freq(c, rot)) inv.push_back(static_cast<float>(f));
  const std::string pos =
      b.unsqueeze(b.op("Cast", {"position_ids"}, {G::attr("to", int64_t{onnx::TensorProto::FLOAT})}), {2});
  const std::string angle = b.mul(pos, b.floats(inv));  // [B, S, rot/2]
  s.cos = b.op("Cos", {angle});
  s.sin = b.op("Sin", {angle});
  const double af = model::rope_attention_factor(c);
  if (af != 1.0) {
    s.cos = b.mul(s.cos, b.float_scalar(static_cast<float>(af)));
    s.sin = b.mul(s.sin, b.float_scalar(static_cast<float>(af)));
  }
  const std::vector<int64_t> axes = interleaved ? std::vector<int64_t>{1, 4} : std::vector<int64_t>{1};
  s.cos = b.unsqueeze(s.cos, axes);
  s.sin = b.unsqueeze(s.sin, axes);
  return s;
}

// x [B, heads, S, rot]. Half-split pairs (i, i + rot/2) as HF Llama; interleaved pairs (2i, 2i + 1) as DeepSeek.
std::string rope(G& b, const std::string& x, const Shared& s, int64_t rot, bool interleaved) {
  const int64_t half = rot / 2;
  const std::string xr = interleaved ? b.reshape(x, {0, 0, 0, half, 2}) : x;
  const std::string a = interleaved ? b.slice(xr, -1, 0, 1) : b.slice(xr, -1, 0, half);
  const std::string c = interleaved ? b.slice(xr, -1, 1, 2) : b.slice(xr, -1, half, rot);
  const std::string y1 = b.sub(b.mul(a, s.cos), b.mul(c, s.sin));
  const std::string y2 = b.add(b.mul(c, s.cos), b.mul(a, s.sin));
  const std::string y = b.op("Concat", {y1, y2}, {G::attr("axis", int64_t{-1})});
  return interleaved ? b.reshape(y, {0, 0, 0, rot}) : y;
}

// q [B, H, S, dk], k [B, Hkv, T, dk], v [B, Hkv, T, dv] -> [B, H, S, dv]. Query head h reads kv head h / (H / Hkv).
std::string attend(G& b, std::string q, std::string k, std::string v, int64_t H, int64_t Hkv, int64_t dk, int64_t dv,
                   double scale, const std::string& bias) {
  if (Hkv != H) {
    const std::string rep = b.ints({1, 1, H / Hkv, 1, 1});
    k = b.reshape(b.op("Expand", {b.unsqueeze(k, {2}), rep}), {0, H, -1, dk});
    v = b.reshape(b.op("Expand", {b.unsqueeze(v, {2}), rep}), {0, H, -1, dv});
  }
  std::string scores =
      b.mul(b.op("MatMul", {q, b.transpose(k, {0, 1, 3, 2})}), b.float_scalar(static_cast<float>(scale)));
  const std::string p = b.op("Softmax", {b.add(scores, bias)}, {G::attr("axis", int64_t{-1})});
  return b.op("MatMul", {p, v});
}

std::string concat_past(G& b, int64_t layer, const std::string& x, const char* which) {
  const std::string l = std::to_string(layer);
  return b.op("Concat", {"past_key_values." + l + "." + which, x}, {G::attr("axis", int64_t{2})},
              "present." + l + "." + which);
}

std::string gqa_attention(DecoderGraph& d, const Shared& s, int64_t layer, const std::string& h,
                          const std::string& bias) {
  const ModelConfig& c = d.c;
  G& b = d.b;
  const int64_t H = c.num_attention_heads, Hkv = c.num_key_value_heads, hd = c.head_dim;
  const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.";
  auto proj = [&](const char* name, int64_t heads) {
    const std::string w = p + name + ".weight";
    const std::string y = b.linear(h, d.w(w), c.attention_bias ? d.w(p + name + ".bias") : "");
    return b.transpose(b.reshape(y, {0, 0, heads, hd}), {0, 2, 1, 3});  // [B, heads, S, hd]
  };
  const std::string q = rope(b, proj("q_proj", H), s, hd, false);
  const std::string k = concat_past(b, layer, rope(b, proj("k_proj", Hkv), s, hd, false), "key");
  const std::string v = concat_past(b, layer, proj("v_proj", Hkv), "value");
  const std::string a = attend(b, q, k, v, H, Hkv, hd, hd, 1.0 / std::sqrt(static_cast<double>(hd)), bias);
  const std::string merged = b.reshape(b.transpose(a, {0, 2, 1, 3}), {0, 0, H * hd});
  return b.linear(merged, d.w(p + "o_proj.weight"), c.o_proj_bias ? d.w(p + "o_proj.bias") : "");
}

// Multi-head Latent Attention in its decompressed form: the cache holds each head's full key (nope + rope) and
// value, not the latent, so the graph stays plain ONNX (see docs/FORMATS.md).
std::string mla_attention(DecoderGraph& d, const Shared& s, int64_t layer, const std::string& h,
                          const std::string& bias) {
  const ModelConfig& c = d.c;
  G& b = d.b;
  const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, rot = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int64_t r = c.kv_lora_rank;
  const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.";
  std::string q = c.q_lora_rank > 0 ? b.linear(b.rmsnorm(b.linear(h, d.w(p + "q_a_proj.weight")),
                                                         d.w(p + "q_a_layernorm.weight"), kLatentNormEps),
                                               d.w(p + "q_b_proj.weight"))
                                    : b.linear(h, d.w(p + "q_proj.weight"));
  q = b.transpose(b.reshape(q, {0, 0, H, nope + rot}), {0, 2, 1, 3});        // [B, H, S, nope + rot]
  const std::string kv = b.linear(h, d.w(p + "kv_a_proj_with_mqa.weight"));  // [B, S, r + rot]
  const std::string latent = b.rmsnorm(b.slice(kv, 2, 0, r), d.w(p + "kv_a_layernorm.weight"), kLatentNormEps);
  std::string k_pe = b.transpose(b.reshape(b.slice(kv, 2, r, r + rot), {0, 0, 1, rot}), {0, 2, 1, 3});  // [B,1,S,rot]
  k_pe = rope(b, k_pe, s, rot, true);
  const std::string kvb = b.transpose(b.reshape(b.linear(latent, d.w(p + "kv_b_proj.weight")), {0, 0, H, nope + vd}),
                                      {0, 2, 1, 3});  // [B, H, S, nope + vd]
  const std::string q_pe = rope(b, b.slice(q, 3, nope, nope + rot), s, rot, true);
  const std::string k_pe_heads = b.op("Expand", {k_pe, b.ints({1, H, 1, 1})});
  std::string qf = q_pe, kf = k_pe_heads;
  if (nope > 0) {
    qf = b.op("Concat", {b.slice(q, 3, 0, nope), q_pe}, {G::attr("axis", int64_t{-1})});
    kf = b.op("Concat", {b.slice(kvb, 3, 0, nope), k_pe_heads}, {G::attr("axis", int64_t{-1})});
  }
  const std::string k = concat_past(b, layer, kf, "key");
  const std::string v = concat_past(b, layer, b.slice(kvb, 3, nope, nope + vd), "value");
  const std::string a = attend(b, qf, k, v, H, H, nope + rot, vd, model::mla_softmax_scale(c), bias);
  return b.linear(b.reshape(b.transpose(a, {0, 2, 1, 3}), {0, 0, H * vd}), d.w(p + "o_proj.weight"));
}

void check_exportable(const ModelConfig& c) {
  LMF_CHECK(c.model_type == "llama" || c.model_type == "qwen2" || c.model_type == "deepseek_v3",
            "onnx export: model_type '", c.model_type, "' is not supported (llama, qwen2, deepseek_v3)");
  const int64_t rot = c.is_deepseek() ? c.qk_rope_head_dim : c.head_dim;
  LMF_CHECK(rot > 0 && rot % 2 == 0, "onnx export: ", c.is_deepseek() ? "qk_rope_head_dim" : "head_dim", " ", rot,
            " must be even and positive for RoPE");
  if (!c.is_deepseek())
    LMF_CHECK(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
              "onnx export: num_attention_heads ", c.num_attention_heads, " is not a multiple of num_key_value_heads ",
              c.num_key_value_heads);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    LMF_CHECK(!c.is_sliding_layer(l) || c.sliding_window > 0, "onnx export: layer ", l,
              " is a sliding layer (layer_types) but sliding_window is ", c.sliding_window);
}

}  // namespace

std::string DecoderGraph::w(const std::string& name) {
  auto it = weights.find(name);
  LMF_CHECK(it != weights.end(), "onnx export: the model has no tensor '", name, "'");
  if (it->second.defined()) {
    b.weight(name, it->second);
    it->second = Tensor();  // added once; later uses refer to the same initializer
  }
  return name;
}

std::string swiglu_mlp(DecoderGraph& d, const std::string& prefix, const std::string& x) {
  G& b = d.b;
  const std::string g = b.linear(x, d.w(prefix + "gate_proj.weight"));
  const std::string silu = b.mul(g, b.op("Sigmoid", {g}));
  return b.linear(b.mul(silu, b.linear(x, d.w(prefix + "up_proj.weight"))), d.w(prefix + "down_proj.weight"));
}

void build_decoder_graph(const model::CausalLM& m, const OnnxExportOptions& opt, onnx::GraphProto* g,
                         OnnxGraphBuilder& b) {
  const ModelConfig& c = m.config();
  check_exportable(c);
  DecoderGraph d{c, b, {}, opt.moe_dispatch};
  for (const auto& [name, t] : m.state()) d.weights.emplace(name, t);
  const bool ds = c.is_deepseek();
  const int64_t kv_heads = ds ? c.num_attention_heads : c.num_key_value_heads;
  const int64_t key_dim = ds ? c.qk_nope_head_dim + c.qk_rope_head_dim : c.head_dim;
  const int64_t value_dim = ds ? c.v_head_dim : c.head_dim;

  g->set_name(c.model_type + "_decoder_with_past");
  value_info(g->add_input(), "input_ids", onnx::TensorProto::INT64, {{-1, kBatch}, {-1, kSeq}});
  value_info(g->add_input(), "attention_mask", onnx::TensorProto::INT64, {{-1, kBatch}, {-1, kTotal}});
  value_info(g->add_input(), "position_ids", onnx::TensorProto::INT64, {{-1, kBatch}, {-1, kSeq}});
  value_info(g->add_output(), "logits", onnx::TensorProto::FLOAT, {{-1, kBatch}, {-1, kSeq}, {c.vocab_size, ""}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string i = std::to_string(l);
    for (const char* which : {"key", "value"}) {
      const int64_t dim = std::string(which) == "key" ? key_dim : value_dim;
      value_info(g->add_input(), "past_key_values." + i + "." + which, onnx::TensorProto::FLOAT,
                 {{-1, kBatch}, {kv_heads, ""}, {-1, kPast}, {dim, ""}});
      value_info(g->add_output(), "present." + i + "." + which, onnx::TensorProto::FLOAT,
                 {{-1, kBatch}, {kv_heads, ""}, {-1, kTotal}, {dim, ""}});
    }
  }

  const Shared s = shared_inputs(d, ds ? c.qk_rope_head_dim : c.head_dim, ds);
  b.set_scope("embed");
  std::string x = b.op("Gather", {d.w("model.embed_tokens.weight"), "input_ids"}, {G::attr("axis", int64_t{0})});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    b.set_scope("layers." + std::to_string(l));
    const std::string& bias = c.is_sliding_layer(l) ? s.mask_sliding : s.mask_full;
    const std::string h = b.rmsnorm(x, d.w(p + "input_layernorm.weight"), c.rms_norm_eps);
    const std::string a = ds ? mla_attention(d, s, l, h, bias) : gqa_attention(d, s, l, h, bias);
    const std::string x1 = b.add(x, a);
    const std::string h2 = b.rmsnorm(x1, d.w(p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    x = b.add(x1, c.is_moe_layer(l) ? moe_ffn(d, l, h2) : swiglu_mlp(d, p + "mlp.", h2));
  }
  b.set_scope("head");
  x = b.rmsnorm(x, d.w("model.norm.weight"), c.rms_norm_eps);
  // Tied embeddings: the head reads the same initializer as the embedding (no second copy in the file).
  const std::string head = c.tie_word_embeddings ? "model.embed_tokens.weight" : d.w("lm_head.weight");
  b.op("MatMul", {x, b.transpose(head, {1, 0})}, {}, "logits");
}

}  // namespace lmforge::exporter
