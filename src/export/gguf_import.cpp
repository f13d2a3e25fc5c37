// GGUF (llama, deepseek2) -> lmforge model directory (f32), the inverse of gguf_export.cpp.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numbers>
#include <set>
#include <string>
#include <vector>

#include "gguf_layout.h"
#include "gguf_tokenizer.h"
#include "lmforge/core/error.h"
#include "lmforge/export/gguf_export.h"
#include "lmforge/io/atomic_file.h"
#include "lmforge/io/gguf.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/model/model.h"
#include "lmforge/model/rope.h"
#include "lmforge/quant/quantized_model.h"

namespace lmforge::exporter {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// How one lmforge tensor comes out of the file: rows [row0, row0 + rows) of a GGUF tensor seen as a matrix (the
// whole tensor, or one expert of an ffn_*_exps stack), llama's q/k rows un-permuted, or a tensor made from others
// (kv_b_proj from attn_k_b and attn_v_b). Nothing is read until the tensor's bytes are due.
struct Recipe {
  std::string src;       // GGUF tensor ("" when `make` is set)
  Shape shape;           // the lmforge tensor's shape
  int64_t row0 = 0;      // first row of the GGUF tensor's [numel / ne0, ne0] view
  int64_t qk_heads = 0;  // > 0: llama q/k rows (or bias) un-permuted for this many heads
  std::function<Tensor()> make;

  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  int64_t rows() const { return shape_numel(shape) / std::max<int64_t>(1, cols()); }
};

// The file's tensors, each consumed once so leftovers can be named; types are checked when a tensor is taken, so a
// file lmforge cannot read fails before anything is written.
class Source {
 public:
  explicit Source(const io::GgufFile& f) : f_(f) {
    for (const io::GgufTensorInfo& ti : f.tensors()) left_.insert(ti.name);
  }
  bool has(const std::string& name) const { return f_.contains(name); }
  Recipe take(const std::string& name, const Shape& shape) {
    check(name, shape);
    Recipe r;
    r.src = name;
    r.shape = shape;
    return r;
  }
  // Expert x of a stack [E, rows, cols]: its rows of the file tensor.
  Recipe take_expert(const std::string& name, const Shape& stack, int64_t x) {
    check(name, stack);
    Recipe r;
    r.src = name;
    r.shape = Shape(stack.begin() + 1, stack.end());
    r.row0 = x * r.shape[0];
    return r;
  }
  // The tensor in f32, dequantized as ggml does (llama.cpp's k-quant and IQ4 files included).
  Tensor f32(const Recipe& r) const {
    if (r.make) return r.make();
    Tensor t = f_.get_f32_rows(r.src, r.row0, r.rows()).reshape(r.shape);
    f_.drop_pages(r.src, r.row0, r.rows());  // read once: the file's pages need not stay resident
    return r.qk_heads > 0 ? unpermute_qk_from_gguf(t, r.qk_heads) : t;
  }
  // The tensor's blocks as they are in the file (u8 [rows, bytes per row]), rows un-permuted; only for a plain
  // 2-D recipe.
  Tensor raw_rows(const Recipe& r) const {
    const io::GgufTensorInfo& ti = f_.tensor(r.src);
    const int64_t rows = r.rows(), all = shape_numel(ti.shape) / r.cols();
    const auto row_bytes = static_cast<int64_t>(ti.nbytes / static_cast<uint64_t>(all));
    const unsigned char* base = f_.tensor_data(r.src) + r.row0 * row_bytes;
    Tensor out = Tensor::empty({rows, row_bytes}, DType::U8);
    auto* dst = static_cast<unsigned char*>(out.raw_data());
    const int64_t d = r.qk_heads > 0 ? rows / r.qk_heads : 0;
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(dst + i * row_bytes, base + (d > 0 ? gguf_qk_row(i, d) : i) * row_bytes,
                  static_cast<size_t>(row_bytes));
    f_.drop_pages(r.src, r.row0, rows);
    return out;
  }
  uint32_t type_of(const Recipe& r) const { return f_.tensor(r.src).type; }  // a plain recipe's file type
  void check_all_used() const {
    if (!left_.empty())
      throw Error(f_.path() + ": tensor \"" + *left_.begin() + "\" has no lmforge counterpart (not imported)");
  }

 private:
  void check(const std::string& name, const Shape& shape) {
    if (!f_.contains(name)) throw Error(f_.path() + ": tensor \"" + name + "\" missing");
    const io::GgufTensorInfo& ti = f_.tensor(name);
    if (ti.shape != shape)
      throw Error(f_.path() + ": tensor \"" + name + "\" has shape " + shape_str(ti.shape) + ", expected " +
                  shape_str(shape) + " from the metadata");
    (void)f_.get_f32_rows(name, 0, 0);  // no rows read: refuses a type lmforge cannot dequantize, as reading would
    left_.erase(name);
  }

  const io::GgufFile& f_;
  std::set<std::string> left_;
};

std::string fmt15(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15g", x);
  return buf;
}

int64_t opt_int(const io::GgufFile& f, const std::string& key, int64_t dflt) {
  return f.find(key) ? f.get_int(key) : dflt;
}

json common_config(const io::GgufFile& f, const std::string& a, int64_t vocab) {
  json c;
  c["vocab_size"] = vocab;
  c["hidden_size"] = f.get_int(a + ".embedding_length");
  c["intermediate_size"] = f.get_int(a + ".feed_forward_length");
  c["num_hidden_layers"] = f.get_int(a + ".block_count");
  c["num_attention_heads"] = f.get_int(a + ".attention.head_count");
  c["max_position_embeddings"] = f.get_int(a + ".context_length");
  c["rms_norm_eps"] = shortest_float(f.get_float(a + ".attention.layer_norm_rms_epsilon"));
  c["rope_theta"] = f.find(a + ".rope.freq_base") ? shortest_float(f.get_float(a + ".rope.freq_base")) : 10000.0;
  c["hidden_act"] = "silu";
  c["torch_dtype"] = "float32";
  // As llama.cpp reads them: the type defaults to linear, its factor from rope.scaling.factor or the older
  // rope.scale_linear (absent, 0 or 1: no scaling).
  const std::string type =
      f.find(a + ".rope.scaling.type") ? f.get_string(a + ".rope.scaling.type") : std::string("linear");
  if (type == "linear") {  // positions / factor (transformers' "linear")
    const std::string key = f.find(a + ".rope.scaling.factor") ? a + ".rope.scaling.factor" : a + ".rope.scale_linear";
    const double factor = f.find(key) ? shortest_float(f.get_float(key)) : 0.0;
    if (factor != 0.0 && factor != 1.0) {
      if (!(factor > 1.0)) throw Error(f.path() + ": " + key + " is " + fmt15(factor) + ", not > 1");
      c["rope_scaling"] = {{"type", "linear"}, {"factor", factor}};
    }
  } else {
    if (type != "none") {
      if (type != "yarn")
        throw Error(f.path() + ": " + a + ".rope.scaling.type \"" + type +
                    "\": only yarn and linear are supported by lmforge");
      json s = {{"type", "yarn"},
                {"factor", shortest_float(f.get_float(a + ".rope.scaling.factor"))},
                {"original_max_position_embeddings", f.get_int(a + ".rope.scaling.original_context_length")}};
      if (f.find(a + ".rope.scaling.yarn_beta_fast"))
        s["beta_fast"] = shortest_float(f.get_float(a + ".rope.scaling.yarn_beta_fast"));
      if (f.find(a + ".rope.scaling.yarn_beta_slow"))
        s["beta_slow"] = shortest_float(f.get_float(a + ".rope.scaling.yarn_beta_slow"));
      if (f.find(a + ".rope.scaling.yarn_log_multiplier")) {
        // The f32 multiplier's shortest decimal over 0.1, rounded to 15 digits: 0.0707 gives back 0.707.
        const double lm = shortest_float(f.get_float(a + ".rope.scaling.yarn_log_multiplier"));
        const double m = std::strtod(fmt15(lm / 0.1).c_str(), nullptr);
        s["mscale"] = m;  // DeepSeek's configs give mscale == mscale_all_dim; GGUF keeps only the latter
        s["mscale_all_dim"] = m;
      }
      c["rope_scaling"] = s;
    }
  }
  if (f.find("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = f.get_int("tokenizer.ggml.bos_token_id");
  if (f.find("tokenizer.ggml.eos_token_id")) c["eos_token_id"] = f.get_int("tokenizer.ggml.eos_token_id");
  if (f.find("tokenizer.ggml.padding_token_id")) c["pad_token_id"] = f.get_int("tokenizer.ggml.padding_token_id");
  return c;
}

// Llama-3.1's rope_scaling from llama.cpp's rope_freqs.weight (the divisors of each frequency: 1 for wavelengths
// under original / high_freq_factor, factor over original / low_freq_factor, 1 / ((1 - s) / factor + s) between,
// s = (original / wavelength - low) / (high - low)). factor is the last (lowest-frequency) divisor; s is linear in
// 1 / wavelength, and any (original, low, high) with the same line gives the same frequencies, so low_freq_factor is
// taken as 1 (Llama-3.1's and 3.2's value) and the line fitted to the blended divisors gives the other two. The
// result is checked by recomputing every divisor.
nlohmann::json llama3_scaling_from_freqs(const io::GgufFile& f, int64_t head_dim) {
  const std::string what = f.path() + ": tensor \"rope_freqs.weight\"";
  const io::GgufTensorInfo& ti = f.tensor("rope_freqs.weight");
  if (ti.shape != Shape{head_dim / 2})
    throw Error(what + " must hold head_dim / 2 = " + std::to_string(head_dim / 2) + " values");
  const Tensor rf = f.get_f32("rope_freqs.weight");
  const float* r = rf.data<float>();
  const int64_t half = head_dim / 2;
  const double factor = r[half - 1];
  const double theta = f.get_float("llama.rope.freq_base");
  std::vector<double> x, y;  // 1 / wavelength, blend s, for the divisors strictly between 1 and factor
  for (int64_t i = 0; i < half; ++i) {
    if (!(r[i] >= 1.0f - 1e-6f) || r[i] > factor * (1 + 1e-6))
      throw Error(what + ": divisors must rise from 1 to the last one");
    const double d = r[i];
    if (d <= 1.0 + 1e-6 || d >= factor * (1 - 1e-6)) continue;
    const double inv = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    x.push_back(inv / (2.0 * std::numbers::pi));
    y.push_back((1.0 / d - 1.0 / factor) / (1.0 - 1.0 / factor));
  }
  if (factor <= 1.0 || x.size() < 2)
    throw Error(what + ": fewer than two blended frequencies; its Llama-3.1 scaling parameters cannot be recovered");
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) mx += x[i], my += y[i];
  mx /= static_cast<double>(x.size());
  my /= static_cast<double>(x.size());
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < x.size(); ++i) sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx);
  const double slope = sxy / sxx, intercept = my - slope * mx;  // s = slope / wavelength + intercept
  if (!(slope > 0) || !(intercept < 0)) throw Error(what + ": the blended divisors do not follow Llama-3.1's formula");
  // s = (orig / wavelength - low) / (high - low) with low = 1: high - 1 = -1 / intercept, orig = slope * (high - 1).
  const double high = 1.0 - 1.0 / intercept;
  const double orig = std::round(slope * (high - 1.0));
  nlohmann::json s = {{"rope_type", "llama3"},
                      {"factor", shortest_float(static_cast<float>(factor))},
                      {"low_freq_factor", 1.0},
                      {"high_freq_factor", shortest_float(static_cast<float>(high))},
                      {"original_max_position_embeddings", static_cast<int64_t>(orig)}};
  // Check: the config's divisors are the file's.
  nlohmann::json cj = {{"model_type", "llama"},  {"vocab_size", 1},        {"hidden_size", head_dim},
                       {"intermediate_size", 1}, {"num_hidden_layers", 1}, {"num_attention_heads", 1},
                       {"head_dim", head_dim},   {"rope_theta", theta},    {"rope_scaling", s}};
  const model::ModelConfig cfg = model::parse_model_config(cj, what);
  model::ModelConfig plain = cfg;
  plain.rope_scaling.reset();
  const std::vector<double> base = model::rope_inv_freq(plain, head_dim), scaled = model::rope_inv_freq(cfg, head_dim);
  for (int64_t i = 0; i < half; ++i) {
    const double d = base[i] / scaled[i];
    if (std::abs(d - r[i]) > 1e-4 * r[i])
      throw Error(what + "[" + std::to_string(i) + "] = " + std::to_string(r[i]) +
                  " does not follow Llama-3.1's formula (fitted factor " + std::to_string(factor) +
                  ", high_freq_factor " + std::to_string(high) + ", original context " + std::to_string(orig) +
                  " give " + std::to_string(d) + ")");
  }
  return s;
}

Recipe qk(Recipe r, int64_t heads) {
  r.qk_heads = heads;
  return r;
}

// Architectures llama and qwen2 (whose q/k rows llama.cpp does not permute, with q/k/v biases only).
void import_llama(const io::GgufFile& f, json& c, const model::ModelConfig& cfg, Source& s,
                  std::map<std::string, Recipe>& out) {
  (void)c;
  const auto qk = [&cfg](Recipe r, int64_t heads) { return cfg.is_qwen2() ? r : ::lmforge::exporter::qk(r, heads); };
  const int64_t D = cfg.hidden_size, H = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads, hd = cfg.head_dim;
  const int64_t F = cfg.intermediate_size, V = cfg.vocab_size;
  out["model.embed_tokens.weight"] = s.take("token_embd.weight", {V, D});
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".", b = "blk." + std::to_string(l) + ".";
    out[p + "input_layernorm.weight"] = s.take(b + "attn_norm.weight", {D});
    out[p + "self_attn.q_proj.weight"] = qk(s.take(b + "attn_q.weight", {H * hd, D}), H);
    out[p + "self_attn.k_proj.weight"] = qk(s.take(b + "attn_k.weight", {Hkv * hd, D}), Hkv);
    out[p + "self_attn.v_proj.weight"] = s.take(b + "attn_v.weight", {Hkv * hd, D});
    out[p + "self_attn.o_proj.weight"] = s.take(b + "attn_output.weight", {D, H * hd});
    if (cfg.attention_bias) {
      out[p + "self_attn.q_proj.bias"] = qk(s.take(b + "attn_q.bias", {H * hd}), H);
      out[p + "self_attn.k_proj.bias"] = qk(s.take(b + "attn_k.bias", {Hkv * hd}), Hkv);
      out[p + "self_attn.v_proj.bias"] = s.take(b + "attn_v.bias", {Hkv * hd});
    }
    if (cfg.o_proj_bias) out[p + "self_attn.o_proj.bias"] = s.take(b + "attn_output.bias", {D});
    out[p + "post_attention_layernorm.weight"] = s.take(b + "ffn_norm.weight", {D});
    out[p + "mlp.gate_proj.weight"] = s.take(b + "ffn_gate.weight", {F, D});
    out[p + "mlp.up_proj.weight"] = s.take(b + "ffn_up.weight", {F, D});
    out[p + "mlp.down_proj.weight"] = s.take(b + "ffn_down.weight", {D, F});
  }
  (void)f;
}

void import_deepseek2(const io::GgufFile& f, const model::ModelConfig& cfg, Source& s,
                      std::map<std::string, Recipe>& out) {
  const int64_t D = cfg.hidden_size, H = cfg.num_attention_heads, V = cfg.vocab_size;
  const int64_t nope = cfg.qk_nope_head_dim, rope = cfg.qk_rope_head_dim, vd = cfg.v_head_dim, r = cfg.kv_lora_rank;
  const int64_t E = cfg.n_routed_experts, Fm = cfg.moe_intermediate_size;
  out["model.embed_tokens.weight"] = s.take("token_embd.weight", {V, D});
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".", b = "blk." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    out[p + "input_layernorm.weight"] = s.take(b + "attn_norm.weight", {D});
    if (cfg.q_lora_rank > 0) {
      out[a + "q_a_proj.weight"] = s.take(b + "attn_q_a.weight", {cfg.q_lora_rank, D});
      out[a + "q_a_layernorm.weight"] = s.take(b + "attn_q_a_norm.weight", {cfg.q_lora_rank});
      out[a + "q_b_proj.weight"] = s.take(b + "attn_q_b.weight", {H * (nope + rope), cfg.q_lora_rank});
    } else {
      out[a + "q_proj.weight"] = s.take(b + "attn_q.weight", {H * (nope + rope), D});
    }
    out[a + "kv_a_proj_with_mqa.weight"] = s.take(b + "attn_kv_a_mqa.weight", {r + rope, D});
    out[a + "kv_a_layernorm.weight"] = s.take(b + "attn_kv_a_norm.weight", {r});
    if (s.has(b + "attn_kv_b.weight")) {  // files from converters before the k_b/v_b split
      out[a + "kv_b_proj.weight"] = s.take(b + "attn_kv_b.weight", {H * (nope + vd), r});
    } else {
      Recipe k_b = s.take(b + "attn_k_b.weight", {H, r, nope}), v_b = s.take(b + "attn_v_b.weight", {H, vd, r});
      Recipe kv_b;
      kv_b.shape = {H * (nope + vd), r};
      kv_b.make = [&s, k_b, v_b] { return join_kv_b(s.f32(k_b), s.f32(v_b)); };
      out[a + "kv_b_proj.weight"] = kv_b;
    }
    out[a + "o_proj.weight"] = s.take(b + "attn_output.weight", {D, H * vd});
    out[p + "post_attention_layernorm.weight"] = s.take(b + "ffn_norm.weight", {D});
    const std::string m = p + "mlp.";
    if (!cfg.is_moe_layer(l)) {
      const int64_t F = cfg.intermediate_size;
      out[m + "gate_proj.weight"] = s.take(b + "ffn_gate.weight", {F, D});
      out[m + "up_proj.weight"] = s.take(b + "ffn_up.weight", {F, D});
      out[m + "down_proj.weight"] = s.take(b + "ffn_down.weight", {D, F});
      continue;
    }
    out[m + "gate.weight"] = s.take(b + "ffn_gate_inp.weight", {E, D});
    if (cfg.topk_method == "noaux_tc") out[m + "gate.e_score_correction_bias"] = s.take(b + "exp_probs_b.bias", {E});
    for (const char* proj : {"gate", "up", "down"}) {
      const bool down = std::string(proj) == "down";
      const Shape stack = down ? Shape{E, D, Fm} : Shape{E, Fm, D};
      for (int64_t x = 0; x < E; ++x)
        out[m + "experts." + std::to_string(x) + "." + proj + "_proj.weight"] =
            s.take_expert(b + "ffn_" + proj + "_exps.weight", stack, x);
    }
    if (cfg.n_shared_experts > 0) {
      const int64_t Fs = Fm * cfg.n_shared_experts;
      out[m + "shared_experts.gate_proj.weight"] = s.take(b + "ffn_gate_shexp.weight", {Fs, D});
      out[m + "shared_experts.up_proj.weight"] = s.take(b + "ffn_up_shexp.weight", {Fs, D});
      out[m + "shared_experts.down_proj.weight"] = s.take(b + "ffn_down_shexp.weight", {D, Fs});
    }
  }
  (void)f;
}

}  // namespace

GgufImportSummary import_gguf(const std::string& gguf_path, const std::string& out_dir, DType dtype, bool keep_types) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16 && dtype != DType::Q8_0 &&
      dtype != DType::Q4_0)
    throw Error("import gguf: dtype " + std::string(dtype_name(dtype)) + " is not one of f32, bf16, f16, q8_0, q4_0");
  const io::GgufFile f = io::GgufFile::open(gguf_path);
  GgufImportSummary sum;
  for (const io::GgufTensorInfo& ti : f.tensors()) ++sum.source_types[io::ggml_type_name(ti.type)];
  sum.architecture = f.get_string("general.architecture");
  const std::string& a = sum.architecture;
  if (a != "llama" && a != "qwen2" && a != "deepseek2")
    throw Error(gguf_path + ": general.architecture \"" + a + "\": only llama, qwen2 and deepseek2 can be imported");
  if (!f.contains("token_embd.weight")) throw Error(gguf_path + ": tensor \"token_embd.weight\" missing");
  const Shape emb = f.tensor("token_embd.weight").shape;
  if (emb.size() != 2) throw Error(gguf_path + ": tensor \"token_embd.weight\" is not 2-D");
  json c = common_config(f, a, emb[0]);
  c["tie_word_embeddings"] = !f.contains("output.weight");
  const int64_t L = c["num_hidden_layers"].get<int64_t>();
  if (a == "llama" || a == "qwen2") {
    c["architectures"] = {a == "llama" ? "LlamaForCausalLM" : "Qwen2ForCausalLM"};
    c["model_type"] = a;
    c["num_key_value_heads"] = opt_int(f, a + ".attention.head_count_kv", c["num_attention_heads"].get<int64_t>());
    const int64_t hd = opt_int(f, a + ".attention.key_length",
                               c["hidden_size"].get<int64_t>() / std::max<int64_t>(1, c["num_attention_heads"]));
    c["head_dim"] = hd;
    if (opt_int(f, a + ".attention.value_length", hd) != hd || opt_int(f, a + ".rope.dimension_count", hd) != hd)
      throw Error(gguf_path + ": " + a +
                  ".attention.value_length / rope.dimension_count differ from key_length "
                  "(partial RoPE or unequal head sizes are not supported by lmforge)");
    if (a == "llama") {
      c["attention_bias"] = f.contains("blk.0.attn_q.bias");
      if (f.contains("rope_freqs.weight")) c["rope_scaling"] = llama3_scaling_from_freqs(f, hd);
    }
  } else {
    c["architectures"] = {"DeepseekV3ForCausalLM"};
    c["model_type"] = "deepseek_v3";
    c["num_key_value_heads"] = c["num_attention_heads"];
    if (!f.find(a + ".attention.key_length_mla"))
      throw Error(gguf_path + ": " + a +
                  ".attention.key_length_mla missing (a GGUF without MLA sizes is not "
                  "supported)");
    const int64_t rope = f.get_int(a + ".rope.dimension_count");
    c["qk_rope_head_dim"] = rope;
    c["qk_nope_head_dim"] = f.get_int(a + ".attention.key_length_mla") - rope;
    c["v_head_dim"] = f.get_int(a + ".attention.value_length_mla");
    c["kv_lora_rank"] = f.get_int(a + ".attention.kv_lora_rank");
    const int64_t q_lora = opt_int(f, a + ".attention.q_lora_rank", 0);
    c["q_lora_rank"] = q_lora > 0 ? json(q_lora) : json();
    c["moe_intermediate_size"] = f.get_int(a + ".expert_feed_forward_length");
    c["n_routed_experts"] = f.get_int(a + ".expert_count");
    c["num_experts_per_tok"] = f.get_int(a + ".expert_used_count");
    c["n_shared_experts"] = opt_int(f, a + ".expert_shared_count", 0);
    c["first_k_dense_replace"] = opt_int(f, a + ".leading_dense_block_count", 0);
    c["moe_layer_freq"] = 1;
    c["routed_scaling_factor"] =
        f.find(a + ".expert_weights_scale") ? shortest_float(f.get_float(a + ".expert_weights_scale")) : 1.0;
    c["norm_topk_prob"] = f.find(a + ".expert_weights_norm") && f.get_bool(a + ".expert_weights_norm");
    const int64_t gating = opt_int(f, a + ".expert_gating_func", 1);
    if (gating != 1 && gating != 2)
      throw Error(gguf_path + ": " + a + ".expert_gating_func " + std::to_string(gating) + " (1 softmax, 2 sigmoid)");
    c["scoring_func"] = gating == 2 ? "sigmoid" : "softmax";
    const bool has_bias =
        f.contains("blk." + std::to_string(c["first_k_dense_replace"].get<int64_t>()) + ".exp_probs_b.bias");
    c["topk_method"] = has_bias ? "noaux_tc" : "greedy";
    c["n_group"] = opt_int(f, a + ".expert_group_count", 1);
    c["topk_group"] = opt_int(f, a + ".expert_group_used_count", 1);
  }
  const std::string label = gguf_path + " (metadata)";
  const model::ModelConfig cfg = model::parse_model_config(c, label);
  (void)L;

  Source s(f);
  std::map<std::string, Recipe> out;
  if (cfg.rope_scaling && cfg.rope_scaling->type == "llama3")  // now in config.json's rope_scaling
    (void)s.take("rope_freqs.weight", {cfg.head_dim / 2});
  if (a == "llama" || a == "qwen2") {
    import_llama(f, c, cfg, s, out);
  } else {
    import_deepseek2(f, cfg, s, out);
  }
  out["model.norm.weight"] = s.take("output_norm.weight", {cfg.hidden_size});
  if (!cfg.tie_word_embeddings) out["lm_head.weight"] = s.take("output.weight", {cfg.vocab_size, cfg.hidden_size});
  s.check_all_used();

  // Exactly the tensors the config asks for, in the model's order.
  std::vector<std::pair<std::string, Recipe>> plan;
  for (const auto& [name, shape] : model::CausalLM::tensor_shapes(cfg)) {
    auto it = out.find(name);
    if (it == out.end()) throw Error(gguf_path + ": tensor '" + name + "' is missing (the config expects it)");
    if (it->second.shape != shape)
      throw Error(gguf_path + ": tensor '" + name + "' has shape " + shape_str(it->second.shape) +
                  ", the config expects " + shape_str(shape));
    plan.emplace_back(name, std::move(it->second));
    out.erase(it);
  }
  if (!out.empty()) throw Error(gguf_path + ": tensor '" + out.begin()->first + "' is not part of this model");
  fs::create_directories(out_dir);
  sum.tokenizer = write_tokenizer_from_gguf(f, out_dir, cfg.max_position_embeddings);
  sum.model_type = cfg.model_type;
  sum.tensors = static_cast<int64_t>(plan.size());

  if (keep_types || dtype == DType::Q8_0 || dtype == DType::Q4_0) {
    // A quantized model dir (docs/QUANTIZATION.md): projections whose file type is their target format keep the
    // file's bytes (rows un-permuted), the others are dequantized and quantized round-to-nearest, as `lmforge
    // quantize` would; embeddings and norms f32. Holds the quantized model, never an f32 copy of it.
    //   q8_0 / q4_0: that format for every projection (the LM head q8_0 unless the file's is q4_0);
    //   keep: each projection in its own type where the engine runs it (f32, f16, bf16, q8_0, q4_0, q4_K, q5_K,
    //   q6_K), the others (q2_K, q3_K, q4_1, q5_0, q5_1, iq4_*) in q6_K (q8_0 where 256 does not divide the input): one
    //   more rounding, 4x finer than a 4-bit one, rather than the size of q8_0 or f32.
    quant::QuantizedWeights q;
    q.config = cfg;
    q.quantized = true;
    q.quant.method = "gguf";
    const std::string head = cfg.tie_word_embeddings ? "token_embd.weight" : "output.weight";
    const auto runnable = [](uint32_t type, WeightFormat& out) {
      switch (static_cast<io::GgmlType>(type)) {
        case io::GgmlType::F32:
          out = WeightFormat::F32;
          return true;
        case io::GgmlType::F16:
          out = WeightFormat::F16;
          return true;
        case io::GgmlType::BF16:
          out = WeightFormat::BF16;
          return true;
        case io::GgmlType::Q8_0:
          out = WeightFormat::Q8_0;
          return true;
        case io::GgmlType::Q4_0:
          out = WeightFormat::Q4_0;
          return true;
        case io::GgmlType::Q4_K:
          out = WeightFormat::Q4_K;
          return true;
        case io::GgmlType::Q5_K:
          out = WeightFormat::Q5_K;
          return true;
        case io::GgmlType::Q6_K:
          out = WeightFormat::Q6_K;
          return true;
        default:
          return false;
      }
    };
    // Each projection's format (no data read yet).
    std::map<std::string, WeightFormat> target;
    if (!keep_types) {
      q.quant.format = dtype == DType::Q8_0 ? WeightFormat::Q8_0 : WeightFormat::Q4_0;
      // The LM head keeps the file's q8_0 / q4_0 blocks; from any other type it becomes q8_0 (quantize's default).
      // A tied model's LM head is token_embd: it is stored in lm_head_format too, so it keeps the file's blocks.
      q.quant.lm_head_format =
          f.tensor(head).type == static_cast<uint32_t>(io::GgmlType::Q4_0) ? WeightFormat::Q4_0 : WeightFormat::Q8_0;
    }
    std::map<WeightFormat, int64_t> counts;
    for (auto& [name, r] : plan) {
      if (!quant::quantizable_weight(name, cfg)) continue;
      WeightFormat wf = WeightFormat::F32;
      if (!keep_types) {
        wf = quant::format_for(q.quant, name);
      } else if (!r.make && !runnable(s.type_of(r), wf)) {
        wf = r.cols() % weight_format_block(WeightFormat::Q6_K) == 0 ? WeightFormat::Q6_K : WeightFormat::Q8_0;
      }
      // A projection recomputed from the file's parts (kv_b_proj from the transposed attn_k_b and attn_v_b) has no
      // blocks to keep; quantizing it again would add an error llama.cpp does not have, so it stays f32 (the
      // engine's MLA decode reads its f32 absorbed form anyway). So do inputs the block does not divide.
      if (r.make || r.cols() % weight_format_block(wf) != 0) {
        q.quant.not_quantized.push_back(name);
        wf = WeightFormat::F32;
      }
      target[name] = wf;
      if (name != "lm_head.weight" && name != "model.embed_tokens.weight" && !r.make) ++counts[wf];
    }
    if (keep_types) {  // the most common type names the dir; the head and the others are listed
      q.quant.format = WeightFormat::Q8_0;
      int64_t most = 0;
      for (const auto& [wf, n] : counts)
        if (n > most) most = n, q.quant.format = wf;
      const std::string head_name = cfg.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
      q.quant.lm_head_format = target.at(head_name);
      for (const auto& [name, wf] : target)
        if (wf != WeightFormat::F32 && quant::format_for(q.quant, name) != wf) q.quant.tensor_formats[name] = wf;
    }
    for (auto& [name, r] : plan) {
      if (!quant::quantizable_weight(name, cfg)) {
        q.dense.emplace(name, s.f32(r));
        continue;
      }
      const WeightFormat wf = target.at(name);
      WeightFormat file_format = WeightFormat::F32;
      if (!r.make && runnable(s.type_of(r), file_format) && file_format == wf &&
          (wf != WeightFormat::F32 || keep_types)) {
        const Tensor raw = s.raw_rows(r);
        const bool bytes = weight_codes_dtype(wf) == DType::U8;  // the k-quants' block bytes
        Tensor codes = bytes ? raw : Tensor::empty({r.rows(), r.cols()}, weight_codes_dtype(wf));
        if (!bytes) std::memcpy(codes.raw_data(), raw.raw_data(), codes.nbytes());
        q.linear.emplace(name,
                         WeightMatrix::from_parts(wf, r.rows(), r.cols(), codes, {}, {}, gguf_path + ": " + r.src));
        ++sum.copied;
      } else {
        q.linear.emplace(name, WeightMatrix::quantize(s.f32(r), wf));
        if (wf != WeightFormat::F32) ++sum.requantized;
      }
    }
    q.quant.extra = {{"source", fs::path(gguf_path).filename().string()},
                     {"blocks_copied", sum.copied},
                     {"requantized_rtn", sum.requantized}};
    quant::save_quantized_model(out_dir, q, "");
    return sum;
  }

  // f32 / bf16 / f16: written tensor by tensor, each read, converted and let go when its bytes are due, so the
  // import holds one tensor at a time (a 7B model imports in far less memory than its f32 size).
  std::vector<io::SafetensorsSpec> specs;
  for (const auto& [name, r] : plan) specs.push_back({name, dtype, r.shape});
  io::save_safetensors_streamed((fs::path(out_dir) / "model.safetensors").string(), specs, {{"format", "pt"}},
                                [&](size_t i, const io::SafetensorsSpec&) {
                                  Tensor t = s.f32(plan[i].second);
                                  return dtype == DType::F32 ? t : t.to(dtype);
                                });
  json j = cfg.raw.is_object() ? cfg.raw : json::object();  // as CausalLM::save writes it
  j["model_type"] = cfg.model_type;
  j["torch_dtype"] = dtype == DType::F32 ? "float32" : dtype == DType::BF16 ? "bfloat16" : "float16";
  io::write_file_atomic((fs::path(out_dir) / "config.json").string(), j.dump(2) + "\n");
  return sum;
}

}  // namespace lmforge::exporter
