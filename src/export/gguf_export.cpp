// Model directory -> GGUF (architectures llama, qwen2 and deepseek2, llama.cpp's conventions).
#include "lmforge/export/gguf_export.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "gguf_layout.h"
#include "gguf_tokenizer.h"
#include "lmforge/core/error.h"
#include "lmforge/io/gguf.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/model/model.h"
#include "lmforge/model/rope.h"
#include "lmforge/quant/imatrix.h"
#include "lmforge/quant/quantized_model.h"

namespace lmforge::exporter {

namespace fs = std::filesystem;
using io::GgufValue;

namespace {

// What --type asks for: one dtype for the weight matrices, a k-quant mix, or each tensor as the dir stores it.
struct ExportType {
  std::string name;         // f32 f16 q8_0 q4_0 q4_K q5_K q6_K q4_K_S q4_K_M q5_K_S q5_K_M keep
  DType base = DType::F32;  // the matrices' dtype (keep: unused)
  bool mix = false;         // one of llama-quantize's mixes (quant::k_mix_format per tensor)
  quant::KMix k_mix;
  bool keep = false;
  // llama-quantize's overrides (GgufExportOptions).
  DType output = DType::U8, token_embd = DType::U8;  // U8: not set
  std::vector<std::pair<std::regex, DType>> patterns;
  bool pure = false, leave_output = false;
};

// An override's type: the weight types GGUF export writes.
DType override_dtype(const std::string& t, const std::string& flag) {
  if (t == "f32" || t == "f16" || t == "q8_0" || t == "q4_0" || t == "q4_K" || t == "q5_K" || t == "q6_K")
    return parse_dtype(t);
  throw Error(flag + " " + t + ": not one of f32, f16, q8_0, q4_0, q4_K, q5_K, q6_K");
}

ExportType parse_export_type(const std::string& t) {
  ExportType e;
  e.name = t;
  if (t == "f32" || t == "f16" || t == "q8_0" || t == "q4_0" || t == "q4_K" || t == "q5_K" || t == "q6_K") {
    e.base = parse_dtype(t);
  } else if (t == "q4_K_S" || t == "q4_K_M" || t == "q5_K_S" || t == "q5_K_M") {
    quant::parse_k_mix(t, &e.k_mix);
    e.base = e.k_mix.base == WeightFormat::Q4_K ? DType::Q4_K : DType::Q5_K;
    e.mix = true;
  } else if (t == "keep") {
    e.keep = true;
  } else {
    throw Error("--type " + t +
                ": not one of f32, f16, q8_0, q4_0, q4_K, q5_K, q6_K, q4_K_S, q4_K_M, q5_K_S, q5_K_M, keep");
  }
  return e;
}

ExportType parse_export_type(const GgufExportOptions& o) {
  ExportType e = parse_export_type(o.type);
  const bool any =
      !o.output_type.empty() || !o.token_embd_type.empty() || !o.tensor_types.empty() || o.pure || o.leave_output;
  if (any && (e.keep || !is_quantized(e.base)))
    throw Error(
        "--output-tensor-type, --token-embedding-type, --tensor-type, --pure and --leave-output-tensor "
        "apply to the quantized types (q8_0, q4_0, the k-quants and their mixes), not --type " +
        o.type);
  if (!o.output_type.empty()) e.output = override_dtype(o.output_type, "--output-tensor-type");
  if (!o.token_embd_type.empty()) e.token_embd = override_dtype(o.token_embd_type, "--token-embedding-type");
  for (const auto& [pattern, type] : o.tensor_types) {
    try {
      e.patterns.emplace_back(std::regex(pattern), override_dtype(type, "--tensor-type " + pattern + "="));
    } catch (const std::regex_error& err) {
      throw Error("--tensor-type " + pattern + "=" + type + ": not a regular expression (" + err.what() + ")");
    }
  }
  e.pure = o.pure;
  e.leave_output = o.leave_output;
  return e;
}

// llama_ftype values for general.file_type (llama.h): F32 0, F16 1, Q4_0 2, Q8_0 7, Q4_K_S 14, Q4_K_M 15, Q5_K_S 16,
// Q5_K_M 17, Q6_K 18.
uint32_t file_type(DType t, bool medium) {
  switch (t) {
    case DType::F16:
      return 1;
    case DType::Q4_0:
      return 2;
    case DType::Q8_0:
      return 7;
    case DType::Q4_K:
      return medium ? 15 : 14;
    case DType::Q5_K:
      return medium ? 17 : 16;
    case DType::Q6_K:
      return 18;
    default:
      return 0;
  }
}

bool is_k(DType t) {
  return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

// The GGUF tensor type --type keep gives a weight of format f: its own where GGUF has it, q8_0 for lmforge's g128
// and int8 formats.
DType gguf_dtype(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32:
      return DType::F32;
    case WeightFormat::F16:
      return DType::F16;
    case WeightFormat::BF16:
      return DType::BF16;
    case WeightFormat::Q4_0:
      return DType::Q4_0;
    case WeightFormat::Q4_K:
      return DType::Q4_K;
    case WeightFormat::Q5_K:
      return DType::Q5_K;
    case WeightFormat::Q6_K:
      return DType::Q6_K;
    default:
      return DType::Q8_0;
  }
}

// A tensor of the checkpoint as the export sees it: shape and dtype now, values only when the writer reaches it (so the
// export holds one converted tensor at a time, never the converted model).
struct Source {
  Shape shape;
  DType dtype = DType::F32;
  std::function<Tensor()> get;
  std::function<void()> done;  // after its bytes are in the file: e.g. hand the mapping's pages back
  // --type keep's dtype: the stored one where GGUF has it; q8_0 for a quantized dir's g128 / int8 formats.
  DType keep = DType::F32;
};

Source of(const Tensor& t) {
  return {t.shape(), t.dtype(), [t] { return t; }, {}, t.dtype()};
}

class Emitter {
 public:
  Emitter(io::GgufWriter& w, ExportType type, const model::ModelConfig& c, const quant::Imatrix* imatrix = nullptr,
          std::string imatrix_path = {})
      : w_(w),
        type_(std::move(type)),
        layers_(c.num_hidden_layers),
        experts_(c.n_routed_experts),
        tied_(c.tie_word_embeddings),
        imatrix_(imatrix),
        imatrix_path_(std::move(imatrix_path)) {}

  void add(const std::string& name, Source s, bool matrix = true) {
    const DType dt = out_dtype(name, s.shape, s.dtype, s.keep, matrix);
    auto imp = importance(name, s.shape, s.dtype, dt);
    w_.add_tensor(
        name, s.shape, dt,
        [get = std::move(s.get), dt, imp] { return convert(get(), dt, imp ? imp->data() : nullptr); },
        std::move(s.done));
  }

  // Experts' matrices as one [n, rows, cols] tensor, each converted into its slice in turn (so a stack of experts
  // is never held in f32 on its way to a smaller type).
  void add_stack(const std::string& name, std::vector<Source> parts) {
    LMF_CHECK(!parts.empty(), "GGUF tensor ", name, ": no experts to stack");
    Shape shape = parts[0].shape;
    shape.insert(shape.begin(), static_cast<int64_t>(parts.size()));
    DType src = parts[0].dtype, keep = parts[0].keep;  // all of one dtype: kept as the source (experts' blocks)
    for (const Source& p : parts) {
      LMF_CHECK(p.shape == parts[0].shape, "GGUF tensor ", name, ": experts of shapes ", shape_str(p.shape), " and ",
                shape_str(parts[0].shape), " do not stack");
      if (p.dtype != src) src = DType::F32;  // mixed: through f32
      if (p.keep != keep) keep = DType::Q8_0;
    }
    const DType dt = out_dtype(name, shape, src, keep, true);
    auto imp = importance(name, shape, src, dt);
    w_.add_tensor(name, shape, dt, [parts = std::move(parts), shape, dt, imp] {
      Tensor out = Tensor::empty(shape, dt);
      const size_t n = out.nbytes() / parts.size();
      for (const Source& p : parts) {
        const int64_t e = &p - parts.data(), cols = shape.back();
        const Tensor c = convert(p.get(), dt, imp ? imp->data() + e * cols : nullptr);
        std::memcpy(static_cast<unsigned char*>(out.raw_data()) + static_cast<size_t>(&p - parts.data()) * n,
                    c.raw_data(), n);
        if (p.done) p.done();
      }
      return out;
    });
  }
  int64_t quantized() const { return quantized_; }
  int64_t copied() const { return copied_; }
  int64_t imatrix_used() const { return imatrix_used_; }

 private:
  // Weight matrices (2-D and stacked 3-D) take the requested type when their rows split into its blocks (32 values,
  // 256 for the k-quants, which fall back to q8_0 otherwise as llama-quantize falls back to a 32-block type);
  // 1-D tensors and the MoE router stay f32, as in llama.cpp's converter (the router's logits decide routing). With
  // the k-quants the output layer (a tied model's token_embd) is q6_K and q4_K_M gives q6_K to attn_v and ffn_down
  // (experts' too) in the layers use_more_bits picks, as llama-quantize does. Blocks from a quantized model dir are
  // kept as they are when the file asks for their type (and a q8_0 LM head in a q4_0 file, as llama.cpp keeps its
  // output layer at more bits), so nothing is rounded twice.
  DType out_dtype(const std::string& name, const Shape& shape, DType src, DType keep, bool matrix) {
    if (!matrix || shape.size() < 2) return DType::F32;
    DType want = type_.keep ? keep : type_.base;
    const bool head = name == "output.weight" || (tied_ && name == "token_embd.weight");
    if (!type_.keep) {  // llama-quantize's order: the explicit types, the patterns, then the mix's rules
      if (name == "output.weight" && type_.leave_output)
        return src == DType::F16 || src == DType::BF16 ? src : DType::F32;
      const DType explicit_type = name == "token_embd.weight" && type_.token_embd != DType::U8 ? type_.token_embd
                                  : name == "output.weight" && type_.output != DType::U8       ? type_.output
                                                                                               : DType::U8;
      if (explicit_type != DType::U8) {
        const int64_t block = is_k(explicit_type) ? 256 : is_quantized(explicit_type) ? 32 : 1;
        LMF_CHECK(shape.back() % block == 0, "GGUF tensor ", name, ": ", dtype_name(explicit_type),
                  " needs rows of a multiple of ", block, " values, its rows have ", shape.back());
        if (explicit_type != DType::F32) ++quantized_;
        if (src == explicit_type) ++copied_;
        return explicit_type;
      }
      bool manual = false;
      for (const auto& [re, t] : type_.patterns)
        if (std::regex_search(name, re)) {
          want = t;
          manual = true;
          break;
        }
      if (!manual && !type_.pure) {
        if (is_k(want) && head) want = DType::Q6_K;
        if (type_.mix && !head) want = mix_dtype(name);
      }
    }
    if (is_quantized(src) && (src == want || (head && src == DType::Q8_0 && want == DType::Q4_0))) {
      ++quantized_;
      ++copied_;
      return src;
    }
    if (is_k(want) && shape.back() % 256 != 0) want = DType::Q8_0;
    if (is_quantized(want) && shape.back() % 32 != 0) want = DType::F32;
    if (want != DType::F32) ++quantized_;
    return want;
  }
  // llama-quantize's choice for blk.N.* under the mix (quant::k_mix_format): attn_v, attn_k, attn_output and the
  // ffn_down tensors (ffn_down_exps and ffn_down_shexp too) by their layer.
  DType mix_dtype(const std::string& name) const {
    if (name.rfind("blk.", 0) != 0) return type_.base;
    const auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
    const quant::KRole role = has(".attn_v.weight")        ? quant::KRole::AttnV
                              : has(".attn_k.weight")      ? quant::KRole::AttnK
                              : has(".attn_output.weight") ? quant::KRole::AttnOutput
                              : has(".ffn_down")           ? quant::KRole::FfnDown
                                                           : quant::KRole::Other;
    const WeightFormat f = quant::k_mix_format(type_.k_mix, role, std::stoll(name.substr(4)), layers_, experts_);
    return f == WeightFormat::Q8_0   ? DType::Q8_0
           : f == WeightFormat::Q5_K ? DType::Q5_K
           : f == WeightFormat::Q6_K ? DType::Q6_K
                                     : type_.base;
  }
  // The importance vectors for tensor `name` of `shape` going to dt: llama-quantize's lookup (an imatrix entry of the
  // GGUF name with one vector per matrix of the tensor, [n, cols] for a 3-D [n, rows, cols]; a size that does not fit
  // is an error, except for token_embd, which llama-quantize skips); null when there is none or dt does not use one.
  std::shared_ptr<const std::vector<float>> importance(const std::string& name, const Shape& shape, DType src,
                                                       DType dt) {
    if (!imatrix_ || src == dt || !uses_importance(dt)) return nullptr;
    std::vector<float> v = imatrix_->values(name);
    if (v.empty()) return nullptr;
    const int64_t mats = shape.size() == 3 ? shape[0] : 1, cols = shape.back();
    if (static_cast<int64_t>(v.size()) != mats * cols) {
      if (name == "token_embd.weight") return nullptr;
      throw Error(imatrix_path_ + ": imatrix entry " + name + " has " + std::to_string(v.size()) +
                  " values; the tensor " + shape_str(shape) + " needs " + std::to_string(mats * cols));
    }
    ++imatrix_used_;
    return std::make_shared<const std::vector<float>>(std::move(v));
  }
  static bool uses_importance(DType dt) { return dt == DType::Q4_0 || is_k(dt); }
  // The bytes of `t` in `dt`: as they are when already of that dtype (f16 -> f32 -> f16 is exact), else through f32;
  // `imp` (a vector per matrix of t, or null): importance-weighted rounding into q4_0 / a k-quant.
  static Tensor convert(const Tensor& t, DType dt, const float* imp = nullptr) {
    if (t.dtype() == dt) return t.contiguous();
    Tensor f = t.to(DType::F32).contiguous();
    if (dt == DType::F32) return f;
    if (!imp || !uses_importance(dt)) return f.to(dt);
    const int64_t cols = f.size(f.dim() - 1), mats = f.dim() == 3 ? f.size(0) : 1, rows = f.numel() / cols / mats;
    Tensor out = Tensor::empty(f.shape(), dt);
    const size_t bytes = out.nbytes() / static_cast<size_t>(mats);
    const WeightFormat wf = dt == DType::Q4_0   ? WeightFormat::Q4_0
                            : dt == DType::Q4_K ? WeightFormat::Q4_K
                            : dt == DType::Q5_K ? WeightFormat::Q5_K
                                                : WeightFormat::Q6_K;
    for (int64_t m = 0; m < mats; ++m) {
      const Tensor slice = f.reshape({mats, rows, cols}).select(0, m);
      const WeightMatrix q = WeightMatrix::quantize(slice, wf, imp + m * cols);
      std::memcpy(static_cast<unsigned char*>(out.raw_data()) + static_cast<size_t>(m) * bytes,
                  q.file_layout().codes().contiguous().raw_data(), bytes);
    }
    return out;
  }

  io::GgufWriter& w_;
  ExportType type_;
  int64_t layers_;
  int64_t experts_;
  bool tied_;
  const quant::Imatrix* imatrix_;
  std::string imatrix_path_;
  int64_t quantized_ = 0;
  int64_t copied_ = 0;
  int64_t imatrix_used_ = 0;
};

// The weights by HF name: a plain dir's as the files hold them (views of the mappings; bf16 stays bf16), checked
// against the config as CausalLM::load checks them; a quantized dir's (docs/QUANTIZATION.md) with its q8_0 / q4_0
// matrices as block tensors of that dtype (GGUF's own layout) and the other formats dequantized one at a time, so
// exporting never builds the f32 model.
std::vector<std::pair<std::string, Source>> load_state(const std::string& model_dir, const std::string& config_path) {
  std::vector<std::pair<std::string, Source>> state;
  if (quant::is_quantized_dir(model_dir)) {
    quant::QuantizedWeights q = quant::load_quantized_model(model_dir);
    for (auto& [name, w] : q.linear) {
      // GGUF's own block formats go as block tensors (f16 / bf16 as they are); the others dequantized.
      const DType keep = gguf_dtype(w.format());
      const DType dt = keep == DType::Q8_0 && w.format() != WeightFormat::Q8_0 ? DType::F32 : keep;
      const bool stored = dt != DType::F32;
      state.emplace_back(name, Source{{w.rows(), w.cols()},
                                      dt,
                                      [w = w, stored, dt] {
                                        if (!stored) return w.dequantize();
                                        const Tensor c = w.file_layout().codes();
                                        if (c.dtype() == dt) return c;  // q8_0 / q4_0 blocks, f16 / bf16
                                        Tensor out = Tensor::empty({w.rows(), w.cols()}, dt);  // k-quants: u8 bytes
                                        std::memcpy(out.raw_data(), c.contiguous().raw_data(), out.nbytes());
                                        return out;
                                      },
                                      {},
                                      keep});
    }
    for (auto& [name, t] : q.dense) {
      Source src = of(t);
      // An untied embedding (f32 in the dir) goes in the dir's main type under keep, as llama-quantize stores
      // token_embd in the file's base type.
      if (name == "model.embed_tokens.weight") src.keep = gguf_dtype(q.quant.format);
      state.emplace_back(name, std::move(src));
    }
    return state;
  }
  const model::ModelConfig cfg = model::load_model_config(config_path);
  std::string source;
  std::map<std::string, std::shared_ptr<const io::SafetensorsFile>> file;
  for (const std::string& p : io::model_weight_files(model_dir, source)) {
    auto f = std::make_shared<const io::SafetensorsFile>(io::SafetensorsFile::open(p));
    for (const std::string& name : f->names()) file.emplace(name, f);
  }
  for (const auto& [name, shape] : model::CausalLM::tensor_shapes(cfg)) {
    auto it = file.find(name);
    LMF_CHECK(it != file.end(), source, ": tensor '", name, "' is missing (the config expects it)");
    const Tensor t = it->second->get(name);
    LMF_CHECK(t.shape() == shape, source, ": tensor '", name, "' has shape ", shape_str(t.shape()),
              ", the config expects ", shape_str(shape));
    LMF_CHECK(is_floating(t.dtype()), source, ": tensor '", name, "' has dtype ", dtype_name(t.dtype()),
              ", expected a floating-point type");
    state.emplace_back(name, Source{shape, t.dtype(), [f = it->second, name = name] { return f->get(name); },
                                    [f = it->second, name = name] { f->drop_pages(name); }, t.dtype()});
    file.erase(it);
  }
  for (const auto& [name, f] : file)
    LMF_CHECK(model::CausalLM::skippable_extra_tensor(name, cfg), source, ": unexpected tensor '", name,
              "' (not part of a ", cfg.model_type, " model with this config)");
  return state;
}

// llama's Q/K rows in GGUF order.
Source permuted_qk(Source s, int64_t n_head) {
  s.get = [get = std::move(s.get), n_head] { return permute_qk_to_gguf(get(), n_head); };
  return s;
}

// The checkpoint's tensors by HF name; each is consumed once so leftovers can be reported.
class Tensors {
 public:
  Tensors(std::vector<std::pair<std::string, Source>> state, std::string source) : source_(std::move(source)) {
    for (auto& [k, v] : state) map_.emplace(std::move(k), std::move(v));
  }
  bool has(const std::string& name) const { return map_.count(name) != 0; }
  Source take(const std::string& name) {
    auto it = map_.find(name);
    LMF_CHECK(it != map_.end(), source_, ": tensor ", name, " missing");
    Source t = std::move(it->second);
    map_.erase(it);
    return t;
  }
  void check_all_used() const {
    if (!map_.empty())
      throw Error(source_ + ": tensor " + map_.begin()->first + " has no GGUF counterpart in this exporter");
  }

 private:
  std::map<std::string, Source> map_;
  std::string source_;
};

void set_u32(io::GgufWriter& w, const std::string& key, int64_t v) {
  LMF_CHECK(v >= 0 && v <= 0xffffffffLL, "GGUF ", key, " = ", v, " does not fit a uint32");
  w.set(key, GgufValue::u32(static_cast<uint32_t>(v)));
}

void add_common_hparams(io::GgufWriter& w, const std::string& a, const model::ModelConfig& c) {
  set_u32(w, a + ".vocab_size", c.vocab_size);
  set_u32(w, a + ".context_length", c.max_position_embeddings);
  set_u32(w, a + ".embedding_length", c.hidden_size);
  set_u32(w, a + ".block_count", c.num_hidden_layers);
  set_u32(w, a + ".feed_forward_length", c.intermediate_size);
  set_u32(w, a + ".attention.head_count", c.num_attention_heads);
  w.set(a + ".rope.freq_base", GgufValue::f32(static_cast<float>(c.rope_theta)));
  w.set(a + ".attention.layer_norm_rms_epsilon", GgufValue::f32(static_cast<float>(c.rms_norm_eps)));
  if (c.rope_scaling && c.rope_scaling->type == "linear") {  // llama.cpp: freq_scale = 1 / factor
    w.set(a + ".rope.scaling.type", GgufValue::string("linear"));
    w.set(a + ".rope.scaling.factor", GgufValue::f32(static_cast<float>(c.rope_scaling->factor)));
  }
  if (c.rope_scaling && c.rope_scaling->type == "yarn") {  // llama3's scaling travels as rope_freqs.weight
    const model::RopeScaling& s = *c.rope_scaling;
    w.set(a + ".rope.scaling.type", GgufValue::string(s.type));
    w.set(a + ".rope.scaling.factor", GgufValue::f32(static_cast<float>(s.factor)));
    set_u32(w, a + ".rope.scaling.original_context_length", s.original_max_position_embeddings);
    w.set(a + ".rope.scaling.yarn_beta_fast", GgufValue::f32(static_cast<float>(s.beta_fast)));
    w.set(a + ".rope.scaling.yarn_beta_slow", GgufValue::f32(static_cast<float>(s.beta_slow)));
  }
}

// Architecture llama, or qwen2 (model_type qwen2): the same tensors, but llama.cpp rotates qwen2's heads as HF does
// (NEOX), so its q/k rows are not permuted, and it has q/k/v biases without o_proj's.
void export_llama(io::GgufWriter& w, Emitter& e, Tensors& t, const model::ModelConfig& c, const std::string& src) {
  const bool qwen2 = c.is_qwen2();
  const std::string a = qwen2 ? "qwen2" : "llama";
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_sliding_layer(l))
      throw Error(src + ": layer_types[" + std::to_string(l) + "] is sliding_attention; GGUF architecture " + a +
                  " has no per-layer sliding window, so llama.cpp would attend over the full context (not exported)");
  if (c.rope_scaling && c.rope_scaling->mscale != 1.0)
    throw Error(src + ": rope_scaling.mscale != 1 has no " + a + " GGUF key (not exported)");
  if (qwen2 && c.rope_scaling && c.rope_scaling->type == "llama3")
    throw Error(src + ": rope_scaling type llama3 has no qwen2 GGUF form (llama.cpp reads rope_freqs for llama only)");
  const auto qk = [&](Source x, int64_t heads) { return qwen2 ? x : permuted_qk(std::move(x), heads); };
  add_common_hparams(w, a, c);
  set_u32(w, a + ".attention.head_count_kv", c.num_key_value_heads);
  set_u32(w, a + ".rope.dimension_count", c.head_dim);
  set_u32(w, a + ".attention.key_length", c.head_dim);
  set_u32(w, a + ".attention.value_length", c.head_dim);

  e.add("token_embd.weight", t.take("model.embed_tokens.weight"));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".", b = "blk." + std::to_string(l) + ".";
    e.add(b + "attn_norm.weight", t.take(p + "input_layernorm.weight"));
    e.add(b + "attn_q.weight", qk(t.take(p + "self_attn.q_proj.weight"), c.num_attention_heads));
    e.add(b + "attn_k.weight", qk(t.take(p + "self_attn.k_proj.weight"), c.num_key_value_heads));
    e.add(b + "attn_v.weight", t.take(p + "self_attn.v_proj.weight"));
    e.add(b + "attn_output.weight", t.take(p + "self_attn.o_proj.weight"));
    if (c.attention_bias) {
      e.add(b + "attn_q.bias", qk(t.take(p + "self_attn.q_proj.bias"), c.num_attention_heads));
      e.add(b + "attn_k.bias", qk(t.take(p + "self_attn.k_proj.bias"), c.num_key_value_heads));
      e.add(b + "attn_v.bias", t.take(p + "self_attn.v_proj.bias"));
    }
    if (c.o_proj_bias) e.add(b + "attn_output.bias", t.take(p + "self_attn.o_proj.bias"));
    e.add(b + "ffn_norm.weight", t.take(p + "post_attention_layernorm.weight"));
    e.add(b + "ffn_gate.weight", t.take(p + "mlp.gate_proj.weight"));
    e.add(b + "ffn_up.weight", t.take(p + "mlp.up_proj.weight"));
    e.add(b + "ffn_down.weight", t.take(p + "mlp.down_proj.weight"));
  }
  e.add("output_norm.weight", t.take("model.norm.weight"));
  if (!c.tie_word_embeddings) e.add("output.weight", t.take("lm_head.weight"));
  if (c.rope_scaling && c.rope_scaling->type == "llama3") {
    // As llama.cpp's converter: the per-frequency divisors of Llama-3.1's scaling, which llama.cpp applies as
    // theta_i / rope_freqs[i] (1 for the high frequencies, factor for the low ones, a blend between).
    model::ModelConfig plain = c;
    plain.rope_scaling.reset();
    const std::vector<double> base = model::rope_inv_freq(plain, c.head_dim),
                              scaled = model::rope_inv_freq(c, c.head_dim);
    std::vector<double> factors(base.size());
    for (size_t i = 0; i < base.size(); ++i) factors[i] = base[i] / scaled[i];
    e.add("rope_freqs.weight", of(Tensor::from_vector(factors, {static_cast<int64_t>(factors.size())})), false);
  }
}

// One MoE layer: the router (f32), the expert bias, the routed experts stacked, the shared experts.
void export_moe(Emitter& e, Tensors& t, const model::ModelConfig& c, const std::string& m, const std::string& b) {
  e.add(b + "ffn_gate_inp.weight", t.take(m + "gate.weight"), /*matrix=*/false);
  if (t.has(m + "gate.e_score_correction_bias"))
    e.add(b + "exp_probs_b.bias", t.take(m + "gate.e_score_correction_bias"));
  for (const char* proj : {"gate", "up", "down"}) {
    std::vector<Source> parts;
    for (int64_t x = 0; x < c.n_routed_experts; ++x)
      parts.push_back(t.take(m + "experts." + std::to_string(x) + "." + proj + "_proj.weight"));
    e.add_stack(b + "ffn_" + proj + "_exps.weight", std::move(parts));
  }
  if (c.n_shared_experts > 0) {
    e.add(b + "ffn_gate_shexp.weight", t.take(m + "shared_experts.gate_proj.weight"));
    e.add(b + "ffn_up_shexp.weight", t.take(m + "shared_experts.up_proj.weight"));
    e.add(b + "ffn_down_shexp.weight", t.take(m + "shared_experts.down_proj.weight"));
  }
}

void export_deepseek2(io::GgufWriter& w, Emitter& e, Tensors& t, const model::ModelConfig& c, const std::string& src) {
  if (c.moe_layer_freq != 1)
    throw Error(src + ": moe_layer_freq " + std::to_string(c.moe_layer_freq) +
                ": llama.cpp's deepseek2 makes every layer after first_k_dense_replace an MoE layer (not exported)");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_sliding_layer(l))
      throw Error(src + ": layer_types[" + std::to_string(l) + "] is sliding_attention; deepseek2 has none");
  if (c.n_group > 1 && c.topk_method == "group_limited_greedy")
    throw Error(src +
                ": topk_method group_limited_greedy (group score = max) differs from llama.cpp's expert "
                "groups (sum of the top two); not exported");
  const std::string a = "deepseek2";
  add_common_hparams(w, a, c);
  // llama.cpp runs MLA as multi-query attention over the latent: one KV head whose key is the compressed latent
  // plus the RoPE part and whose value is the latent; the *_mla keys give the per-head sizes after decompression.
  set_u32(w, a + ".attention.head_count_kv", 1);
  set_u32(w, a + ".rope.dimension_count", c.qk_rope_head_dim);
  // Written as 0 when null: this llama.cpp reads the key unconditionally and then uses attn_q instead of q_a/q_b.
  set_u32(w, a + ".attention.q_lora_rank", c.q_lora_rank);
  set_u32(w, a + ".attention.kv_lora_rank", c.kv_lora_rank);
  set_u32(w, a + ".attention.key_length", c.kv_lora_rank + c.qk_rope_head_dim);
  set_u32(w, a + ".attention.value_length", c.kv_lora_rank);
  set_u32(w, a + ".attention.key_length_mla", c.qk_nope_head_dim + c.qk_rope_head_dim);
  set_u32(w, a + ".attention.value_length_mla", c.v_head_dim);
  set_u32(w, a + ".leading_dense_block_count", c.first_k_dense_replace);
  set_u32(w, a + ".expert_count", c.n_routed_experts);
  set_u32(w, a + ".expert_used_count", c.num_experts_per_tok);
  set_u32(w, a + ".expert_shared_count", c.n_shared_experts);
  set_u32(w, a + ".expert_feed_forward_length", c.moe_intermediate_size);
  w.set(a + ".expert_weights_scale", GgufValue::f32(static_cast<float>(c.routed_scaling_factor)));
  w.set(a + ".expert_weights_norm", GgufValue::boolean(c.norm_topk_prob));
  set_u32(w, a + ".expert_gating_func", c.scoring_func == "sigmoid" ? 2 : 1);  // llama_expert_gating_func_type
  if (c.topk_method == "noaux_tc" && c.n_group > 1) {
    set_u32(w, a + ".expert_group_count", c.n_group);
    set_u32(w, a + ".expert_group_used_count", c.topk_group);
  }
  if (c.rope_scaling && c.rope_scaling->type == "yarn") {
    if (c.rope_scaling->mscale != c.rope_scaling->mscale_all_dim)
      throw Error(src + ": rope_scaling.mscale != mscale_all_dim has no deepseek2 GGUF key (not exported)");
    // llama.cpp's converter: yarn_log_multiplier = 0.1 * mscale_all_dim (the attention-scale correction).
    w.set(a + ".rope.scaling.yarn_log_multiplier",
          GgufValue::f32(static_cast<float>(0.1 * c.rope_scaling->mscale_all_dim)));
  }

  e.add("token_embd.weight", t.take("model.embed_tokens.weight"));
  const int64_t H = c.num_attention_heads;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".", b = "blk." + std::to_string(l) + ".";
    const std::string s = p + "self_attn.";
    e.add(b + "attn_norm.weight", t.take(p + "input_layernorm.weight"));
    if (c.q_lora_rank > 0) {
      e.add(b + "attn_q_a.weight", t.take(s + "q_a_proj.weight"));
      e.add(b + "attn_q_a_norm.weight", t.take(s + "q_a_layernorm.weight"));
      e.add(b + "attn_q_b.weight", t.take(s + "q_b_proj.weight"));
    } else {
      e.add(b + "attn_q.weight", t.take(s + "q_proj.weight"));
    }
    e.add(b + "attn_kv_a_mqa.weight", t.take(s + "kv_a_proj_with_mqa.weight"));
    e.add(b + "attn_kv_a_norm.weight", t.take(s + "kv_a_layernorm.weight"));
    // attn_k_b [H, r, nope] (transposed) and attn_v_b [H, v, r], each split from kv_b_proj when it is due.
    const Source kv_b = t.take(s + "kv_b_proj.weight");
    const int64_t r = c.kv_lora_rank, nope = c.qk_nope_head_dim, v = c.v_head_dim;
    const auto part = [kv_b, H, nope, v](bool k) {
      return [get = kv_b.get, H, nope, v, k] {
        Tensor k_b, v_b;
        split_kv_b(get(), H, nope, v, k_b, v_b);
        return k ? k_b : v_b;
      };
    };
    e.add(b + "attn_k_b.weight", Source{{H, r, nope}, DType::F32, part(true), {}});
    e.add(b + "attn_v_b.weight", Source{{H, v, r}, DType::F32, part(false), kv_b.done});
    e.add(b + "attn_output.weight", t.take(s + "o_proj.weight"));
    e.add(b + "ffn_norm.weight", t.take(p + "post_attention_layernorm.weight"));
    const std::string m = p + "mlp.";
    if (!c.is_moe_layer(l)) {
      e.add(b + "ffn_gate.weight", t.take(m + "gate_proj.weight"));
      e.add(b + "ffn_up.weight", t.take(m + "up_proj.weight"));
      e.add(b + "ffn_down.weight", t.take(m + "down_proj.weight"));
    } else {
      export_moe(e, t, c, m, b);
    }
  }
  e.add("output_norm.weight", t.take("model.norm.weight"));
  if (!c.tie_word_embeddings) e.add("output.weight", t.take("lm_head.weight"));
}

}  // namespace

GgufExportSummary export_gguf(const std::string& model_dir, const std::string& out_path, const GgufExportOptions& opt) {
  const ExportType type = parse_export_type(opt);
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  const model::ModelConfig cfg = model::load_model_config(config_path);
  // The tokenizer first, into its own writer: a missing or unexportable tokenizer.json fails before any tensor is
  // converted. Its keys join the file after the hyperparameters, where llama.cpp's converter puts them.
  io::GgufWriter tok;
  GgufExportSummary s;
  s.pre = add_tokenizer_metadata(tok, model_dir, cfg, opt.pre);
  io::GgufWriter w;
  s.architecture = cfg.is_deepseek() ? "deepseek2" : cfg.is_qwen2() ? "qwen2" : "llama";
  w.set("general.architecture", GgufValue::string(s.architecture));
  std::string name = opt.name;
  if (name.empty()) name = fs::absolute(fs::path(model_dir)).lexically_normal().filename().string();
  if (name.empty()) name = fs::absolute(fs::path(model_dir)).lexically_normal().parent_path().filename().string();
  w.set("general.name", GgufValue::string(name));
  // --type keep: the file type of the dir's main format (a q4_K dir with per-tensor q6_K is a Q4_K_M unless its
  // details name the mix _S).
  DType main = type.base;
  bool medium = type.mix && type.k_mix.medium;
  if (type.keep) {
    main = DType::F32;
    if (quant::is_quantized_dir(model_dir)) {  // its quantization_config only (the weights load once, below)
      std::ifstream in(config_path);
      const nlohmann::json raw = nlohmann::json::parse(in, nullptr, false);
      const quant::QuantConfig q = quant::QuantConfig::from_json(raw.at("quantization_config"), config_path);
      main = gguf_dtype(q.format);
      const std::string named = q.extra.value("mix", std::string());
      medium = named.empty() ? !q.tensor_formats.empty() : named.back() == 'M';
    }
  }
  w.set("general.file_type", GgufValue::u32(file_type(main, medium)));
  if (is_quantized(main)) w.set("general.quantization_version", GgufValue::u32(2));

  quant::Imatrix imatrix;
  if (!opt.imatrix.empty()) imatrix = quant::read_imatrix(opt.imatrix);
  Emitter e(w, type, cfg, opt.imatrix.empty() ? nullptr : &imatrix, opt.imatrix);
  Tensors t(load_state(model_dir, config_path), (fs::path(model_dir) / "model.safetensors").string());
  if (cfg.is_deepseek()) {
    export_deepseek2(w, e, t, cfg, config_path);
  } else {
    export_llama(w, e, t, cfg, config_path);
  }
  t.check_all_used();
  for (const auto& [key, value] : tok.metadata()) w.set(key, value);
  std::function<void(size_t, size_t)> progress;
  if (opt.progress)
    progress = [&](size_t done, size_t total) {
      opt.progress(static_cast<int64_t>(done), static_cast<int64_t>(total));
    };
  w.write(out_path, progress);
  s.tensors = static_cast<int64_t>(w.tensor_count());
  s.quantized = e.quantized();
  s.blocks_copied = e.copied();
  s.imatrix_used = e.imatrix_used();
  s.bytes = fs::file_size(out_path);
  return s;
}

}  // namespace lmforge::exporter
