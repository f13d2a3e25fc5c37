// Quantized model directories: writing, reading with every size checked, and dequantizing into a CausalLM.
#include "lmforge/quant/quantized_model.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "lmforge/core/error.h"
#include "lmforge/io/atomic_file.h"
#include "lmforge/io/safetensors.h"
#include "quant/model_files.h"

namespace lmforge::quant {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int format_bits(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32:
      return 32;
    case WeightFormat::F16:
    case WeightFormat::BF16:
      return 16;
    case WeightFormat::Q8_0:
    case WeightFormat::INT8:
      return 8;
    case WeightFormat::Q6_K:
      return 6;
    case WeightFormat::Q5_K:
      return 5;
    default:
      return 4;
  }
}

// The codes as stored in the file: GGUF blocks become raw bytes (safetensors has no block dtypes).
Tensor codes_for_file(const WeightMatrix& wm) {
  const WeightMatrix w = wm.file_layout();  // the engine's interleaved decode layout is never written
  const Tensor& c = w.codes();
  if (c.dtype() != DType::Q8_0 && c.dtype() != DType::Q4_0) return c;
  const auto per_row = static_cast<int64_t>(c.nbytes() / static_cast<size_t>(w.rows()));
  if (c.is_contiguous()) {  // the same bytes seen as u8: no copy of the model while it is written
    const int64_t at = static_cast<const char*>(c.raw_data()) - static_cast<const char*>(c.storage()->data());
    return Tensor::from_storage(c.storage(), DType::U8, {w.rows(), per_row}, at);
  }
  Tensor out = Tensor::empty({w.rows(), per_row}, DType::U8);
  std::memcpy(out.raw_data(), c.contiguous().raw_data(), c.nbytes());
  return out;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  LMF_CHECK(in.good(), p.string(), ": cannot read");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

bool is_linear_weight(const std::string& name) {
  return name == "lm_head.weight" || ends_with(name, "_proj.weight") || ends_with(name, "_proj_with_mqa.weight");
}

bool quantizable_weight(const std::string& name, const model::ModelConfig& c) {
  return is_linear_weight(name) || (c.tie_word_embeddings && name == "model.embed_tokens.weight");
}

WeightFormat format_for(const QuantConfig& q, const std::string& name) {
  if (std::find(q.not_quantized.begin(), q.not_quantized.end(), name) != q.not_quantized.end())
    return WeightFormat::F32;
  if (auto it = q.tensor_formats.find(name); it != q.tensor_formats.end()) return it->second;
  return name == "lm_head.weight" || name == "model.embed_tokens.weight" ? q.lm_head_format : q.format;
}

nlohmann::json QuantConfig::to_json() const {
  nlohmann::json j;
  j["quant_method"] = "lmforge";
  j["method"] = method;
  j["format"] = std::string(weight_format_name(format));
  j["bits"] = format_bits(format);
  const int64_t block = weight_format_block(format);
  j["group_size"] = block > 1 ? block : (format == WeightFormat::INT8 ? -1 : 0);  // -1: per output channel
  j["sym"] = format != WeightFormat::Q4_G128_ASYM;
  j["lm_head_format"] = std::string(weight_format_name(lm_head_format));
  j["not_quantized"] = not_quantized;
  if (!tensor_formats.empty()) {
    nlohmann::json tf = nlohmann::json::object();
    for (const auto& [name, f] : tensor_formats) tf[name] = std::string(weight_format_name(f));
    j["tensor_formats"] = tf;
  }
  if (!extra.empty()) j["details"] = extra;
  return j;
}

QuantConfig QuantConfig::from_json(const nlohmann::json& j, const std::string& source) {
  LMF_CHECK(j.is_object(), source, ": quantization_config is not an object");
  QuantConfig q;
  const auto str = [&](const char* key) -> std::string {
    LMF_CHECK(j.contains(key) && j[key].is_string(), source, ": quantization_config.", key,
              " is missing or not a string");
    return j[key].get<std::string>();
  };
  const std::string qm = str("quant_method");
  LMF_CHECK(qm == "lmforge", source, ": quantization_config.quant_method '", qm,
            "' is not lmforge's (GPTQ/AWQ checkpoints from other tools are not read yet)");
  q.method = str("method");
  const auto fmt = [&](const char* key) {
    try {
      return parse_weight_format(str(key));
    } catch (const Error& e) {
      throw Error(source + ": quantization_config." + key + ": " + e.what());
    }
  };
  q.format = fmt("format");
  q.lm_head_format = fmt("lm_head_format");
  if (j.contains("not_quantized")) {
    LMF_CHECK(j["not_quantized"].is_array(), source, ": quantization_config.not_quantized is not an array");
    for (const auto& n : j["not_quantized"]) {
      LMF_CHECK(n.is_string(), source, ": quantization_config.not_quantized holds a non-string");
      q.not_quantized.push_back(n.get<std::string>());
    }
  }
  if (j.contains("tensor_formats")) {
    LMF_CHECK(j["tensor_formats"].is_object(), source, ": quantization_config.tensor_formats is not an object");
    for (const auto& [name, v] : j["tensor_formats"].items()) {
      LMF_CHECK(v.is_string(), source, ": quantization_config.tensor_formats.", name, " is not a string");
      try {
        q.tensor_formats[name] = parse_weight_format(v.get<std::string>());
      } catch (const Error& e) {
        throw Error(source + ": quantization_config.tensor_formats." + name + ": " + e.what());
      }
    }
  }
  if (j.contains("details")) q.extra = j["details"];
  return q;
}

bool use_more_bits(int64_t layer, int64_t n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

bool parse_k_mix(const std::string& name, KMix* mix) {
  std::string t = name;
  for (char& ch : t) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (t.size() != 6 || t[0] != 'q' || (t[1] != '4' && t[1] != '5') || t.compare(2, 3, "_k_") != 0 ||
      (t[5] != 's' && t[5] != 'm'))
    return false;
  mix->base = t[1] == '4' ? WeightFormat::Q4_K : WeightFormat::Q5_K;
  mix->medium = t[5] == 'm';
  return true;
}

std::string k_mix_name(const KMix& mix) {
  return std::string(mix.base == WeightFormat::Q4_K ? "q4_K_" : "q5_K_") + (mix.medium ? "M" : "S");
}

WeightFormat k_mix_format(const KMix& mix, KRole role, int64_t layer, int64_t n_layers, int64_t n_experts) {
  const bool q4 = mix.base == WeightFormat::Q4_K;
  WeightFormat f = mix.base;
  switch (role) {
    case KRole::AttnV:  // layer: the attn_v tensor's index, one a layer
      if (mix.medium && use_more_bits(layer, n_layers))
        f = WeightFormat::Q6_K;
      else if (q4 && !mix.medium && layer < 4)
        f = WeightFormat::Q5_K;
      if (n_experts == 8) f = WeightFormat::Q8_0;
      break;
    case KRole::AttnK:
      if (n_experts == 8) f = WeightFormat::Q8_0;
      break;
    case KRole::AttnOutput:
      if (n_experts == 8 && q4) f = WeightFormat::Q5_K;
      break;
    case KRole::FfnDown:
      if (mix.medium && use_more_bits(layer, n_layers))
        f = WeightFormat::Q6_K;
      else if (q4 && !mix.medium && layer < n_layers / 8)
        f = WeightFormat::Q5_K;
      break;
    case KRole::Other:
      break;
  }
  return f;
}

void apply_k_mix(QuantConfig& q, const model::ModelConfig& c, const KMix& mix) {
  LMF_CHECK(mix.base == WeightFormat::Q4_K || mix.base == WeightFormat::Q5_K,
            "apply_k_mix: base format must be q4_K or q5_K");
  q.format = mix.base;
  q.lm_head_format = WeightFormat::Q6_K;
  for (const auto& [name, shape] : model::CausalLM::tensor_shapes(c)) {
    if (!is_linear_weight(name) || name.rfind("model.layers.", 0) != 0) continue;
    const int64_t layer = std::stoll(name.substr(13));
    const KRole role = ends_with(name, ".v_proj.weight")      ? KRole::AttnV
                       : ends_with(name, ".k_proj.weight")    ? KRole::AttnK
                       : ends_with(name, ".o_proj.weight")    ? KRole::AttnOutput
                       : ends_with(name, ".down_proj.weight") ? KRole::FfnDown
                                                              : KRole::Other;
    const WeightFormat f = k_mix_format(mix, role, layer, c.num_hidden_layers, c.n_routed_experts);
    if (f != mix.base) q.tensor_formats[name] = f;
  }
}

QuantizedWeights quantize_rtn_dir(const std::string& dir, QuantConfig qc, size_t* bytes_in,
                                  const std::map<std::string, std::vector<float>>* importance) {
  const ModelFiles files(dir);
  QuantizedWeights q;
  q.config = files.config();
  q.quantized = true;
  q.quant = std::move(qc);
  for (const auto& [name, shape] : model::CausalLM::tensor_shapes(q.config)) {
    if (!quantizable_weight(name, q.config)) {
      add_rtn(q, name, files.read_f32(name));
      continue;
    }
    const Tensor t = files.get(name);  // quantized from its stored dtype
    add_rtn(q, name, t, importance);
    WeightMatrix& w = q.linear.at(name);
    if (w.codes().storage() == t.storage()) w = WeightMatrix::quantize(t.clone(), w.format());  // not the mapping
    files.drop_pages(name);                                                                     // read once
  }
  if (bytes_in) *bytes_in = files.bytes();
  return q;
}

QuantizedWeights split_state(const model::CausalLM& m) {
  QuantizedWeights q;
  q.config = m.config();
  for (const auto& [name, t] : m.state()) {
    if (is_linear_weight(name))
      q.linear.emplace(name, WeightMatrix::quantize(t, WeightFormat::F32));
    else
      q.dense.emplace(name, t);
  }
  return q;
}

void add_rtn(QuantizedWeights& q, const std::string& name, const Tensor& t,
             const std::map<std::string, std::vector<float>>* importance) {
  if (!quantizable_weight(name, q.config)) {
    q.dense.emplace(name, t);
    return;
  }
  WeightFormat f = format_for(q.quant, name);
  if (is_k_quant(f) && t.size(1) % weight_format_block(f) != 0 && t.size(1) % kQ8BlockSize == 0) {
    f = WeightFormat::Q8_0;  // llama.cpp falls back to a 32-block type likewise (q5_0 / q8_0; q8_0 is ours)
    q.quant.tensor_formats[name] = f;
  }
  if (t.size(1) % weight_format_block(f) != 0) {  // e.g. a 4-bit group of 128 over a 96-wide input
    q.quant.not_quantized.push_back(name);
    f = WeightFormat::F32;
  }
  const float* imp = nullptr;
  if (importance && WeightMatrix::uses_importance(f)) {
    auto it = importance->find(name);
    if (it != importance->end()) {
      LMF_CHECK(static_cast<int64_t>(it->second.size()) == t.size(1), "importance for ", name, " has ",
                it->second.size(), " values, the weight ", t.size(1), " inputs");
      imp = it->second.data();
    }
  }
  q.linear.emplace(name, WeightMatrix::quantize(t, f, imp));
}

QuantizedWeights quantize_rtn(const model::CausalLM& m, QuantConfig qc,
                              const std::map<std::string, std::vector<float>>* importance) {
  QuantizedWeights q;
  q.config = m.config();
  q.quantized = true;
  q.quant = std::move(qc);
  for (const auto& [name, t] : m.state()) add_rtn(q, name, t, importance);
  return q;
}

void save_quantized_model(const std::string& dir, const QuantizedWeights& q, const std::string& src_dir) {
  fs::create_directories(dir);
  io::NamedTensors out;
  for (const auto& [name, w] : q.linear) {
    out.emplace_back(name, codes_for_file(w));
    if (w.scales().defined()) out.emplace_back(name + ".scales", w.scales());
    if (w.zeros().defined()) out.emplace_back(name + ".zeros", w.zeros());
  }
  for (const auto& [name, t] : q.dense) out.emplace_back(name, t.dtype() == DType::F32 ? t : t.to(DType::F32));
  io::save_safetensors((fs::path(dir) / "model.safetensors").string(), out,
                       {{"format", "pt"}, {"lmforge_quantization", std::string(weight_format_name(q.quant.format))}});
  nlohmann::json j = q.config.raw.is_object() ? q.config.raw : nlohmann::json::object();
  j["model_type"] = q.config.model_type;
  if (q.quantized) j["quantization_config"] = q.quant.to_json();
  io::write_file_atomic((fs::path(dir) / "config.json").string(), j.dump(2) + "\n");
  if (src_dir.empty() || fs::equivalent(fs::path(src_dir), fs::path(dir))) return;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"})
    if (fs::exists(fs::path(src_dir) / f))
      io::write_file_atomic((fs::path(dir) / f).string(), read_text(fs::path(src_dir) / f));
}

QuantizedWeights load_quantized_model(const std::string& dir) {
  LMF_CHECK(fs::is_directory(dir), dir, ": not a model directory");
  const fs::path cfg_path = fs::path(dir) / "config.json";
  LMF_CHECK(fs::exists(cfg_path), dir, ": no config.json in the model directory");
  const std::string text = read_text(cfg_path);
  const nlohmann::json raw = nlohmann::json::parse(text, nullptr, false);
  LMF_CHECK(!raw.is_discarded() && raw.is_object(), cfg_path.string(), ": not a JSON object");
  QuantizedWeights q;
  q.config = model::parse_model_config(raw, cfg_path.string());
  if (!raw.contains("quantization_config")) {  // a plain model dir (sharded ones too)
    q = split_state(model::CausalLM::load(dir));
    return q;
  }
  q.quantized = true;
  q.quant = QuantConfig::from_json(raw["quantization_config"], cfg_path.string());
  q.config.raw.erase("quantization_config");
  const std::string st_path = (fs::path(dir) / "model.safetensors").string();
  LMF_CHECK(fs::exists(st_path), dir, ": a quantized model dir needs model.safetensors (not sharded)");
  const io::SafetensorsFile file = io::SafetensorsFile::open(st_path);
  std::set<std::string> used;
  const auto get = [&](const std::string& name, bool required) -> Tensor {
    if (!file.contains(name)) {
      LMF_CHECK(!required, st_path, ": tensor '", name, "' is missing (the config expects it)");
      return {};
    }
    used.insert(name);
    return file.get(name);
  };
  for (const auto& [name, shape] : model::CausalLM::tensor_shapes(q.config)) {  // names and shapes, no model
    // A tied embedding is stored in lm_head_format (RTN, GPTQ and AWQ alike); dirs written before that keep it f32.
    const bool stored_as_codes =
        quantizable_weight(name, q.config) &&
        (is_linear_weight(name) || (file.contains(name) && !is_floating_st(file.entry(name).dtype)));
    if (!stored_as_codes) {
      Tensor v = get(name, true);
      LMF_CHECK(v.shape() == shape && is_floating(v.dtype()), st_path, ": tensor '", name, "' is ", v.str(),
                ", the config expects f32 ", shape_str(shape));
      q.dense.emplace(name, v.to(DType::F32).contiguous());
      continue;
    }
    const WeightFormat f = format_for(q.quant, name);
    const int64_t rows = shape[0], cols = shape[1];
    const std::string what = st_path + ": tensor '" + name + "'";
    Tensor codes = get(name, true), scales, zeros;
    if (f == WeightFormat::Q4_G128 || f == WeightFormat::Q4_G128_ASYM || f == WeightFormat::INT8)
      scales = get(name + ".scales", true);
    if (f == WeightFormat::Q4_G128_ASYM) zeros = get(name + ".zeros", true);
    if (f == WeightFormat::Q8_0 || f == WeightFormat::Q4_0) {
      LMF_CHECK(cols % 32 == 0, what, ": input size ", cols, " is not a multiple of 32 for ", weight_format_name(f));
      const int64_t per_row = cols / 32 * (f == WeightFormat::Q8_0 ? 34 : 18);
      LMF_CHECK(codes.dtype() == DType::U8 && codes.shape() == Shape({rows, per_row}), what, ": ",
                weight_format_name(f), " codes must be u8 [", rows, ", ", per_row, "], got ", codes.str());
      Tensor blocks = Tensor::empty({rows, cols}, f == WeightFormat::Q8_0 ? DType::Q8_0 : DType::Q4_0);
      std::memcpy(blocks.raw_data(), codes.contiguous().raw_data(), blocks.nbytes());
      codes = blocks;
      file.drop_pages(name);  // copied: do not hold the file's pages as well
    } else if (f == WeightFormat::F32) {
      LMF_CHECK(codes.shape() == shape && is_floating(codes.dtype()), what, " is ", codes.str(),
                ", the config expects f32 ", shape_str(shape));
      if (codes.dtype() == DType::F32) {
        codes = codes.contiguous().clone();
        file.drop_pages(name);
      } else {
        codes = codes.to(DType::F32).contiguous();
      }
    } else {
      // The other formats' parts copied and the file's pages let go, as q8_0 / q4_0 above: the engine stacks q/k/v
      // and gate/up into new matrices, and mapped originals would stay resident beside them (infer-250m: q4_K_M
      // 272 -> 170 MB peak RSS, q6_K 343 -> 208 MB).
      for (auto [part, suffix] : {std::pair{&codes, ""}, std::pair{&scales, ".scales"}, std::pair{&zeros, ".zeros"}}) {
        if (!part->defined()) continue;
        *part = part->contiguous().clone();
        file.drop_pages(name + suffix);
      }
    }
    q.linear.emplace(name, WeightMatrix::from_parts(f, rows, cols, codes, scales, zeros, what));
  }
  for (const std::string& name : file.names()) {
    if (used.count(name) || model::CausalLM::skippable_extra_tensor(name, q.config)) continue;
    LMF_CHECK(false, st_path, ": unexpected tensor '", name, "' (not part of this config's quantized model)");
  }
  return q;
}

model::CausalLM dequantize_to_causal_lm(const QuantizedWeights& q) {
  model::CausalLM m(q.config);
  std::map<std::string, Tensor> tensors = q.dense;
  for (const auto& [name, w] : q.linear) tensors[name] = w.dequantize();
  m.load_weights(tensors, "quantized weights");
  return m;
}

bool is_quantized_dir(const std::string& dir) {
  const fs::path cfg_path = fs::path(dir) / "config.json";
  std::error_code ec;
  if (!fs::is_regular_file(cfg_path, ec)) return false;
  const nlohmann::json raw = nlohmann::json::parse(read_text(cfg_path), nullptr, false);
  return raw.is_object() && raw.contains("quantization_config");
}

model::CausalLM load_causal_lm_any(const std::string& dir) {
  if (is_quantized_dir(dir)) return dequantize_to_causal_lm(load_quantized_model(dir));
  return model::CausalLM::load(dir);
}

}  // namespace lmforge::quant
