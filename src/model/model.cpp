// Model construction, initialisation, and model directories (config.json + safetensors).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "lmforge/io/atomic_file.h"
#include "lmforge/io/safetensors.h"
#include "model/model_impl.h"

namespace lmforge::model {

namespace fs = std::filesystem;

namespace {

struct Builder {
  CausalLM::Impl& m;
  bool shapes_only = false;  // record names and shapes, allocate nothing
  bool no_values = false;    // parameters without values (CausalLM::without_weights)
  Var add(const std::string& name, const Shape& shape) {
    m.param_shapes.emplace_back(name, shape);
    if (shapes_only) return {};
    Var v = parameter(no_values ? Tensor() : Tensor::zeros(shape), name);
    if (no_values) v.impl()->shape = shape;
    m.named.emplace_back(name, v);
    return v;
  }
  Mlp mlp(const std::string& p, int64_t D, int64_t F) {
    return {add(p + "gate_proj.weight", {F, D}), add(p + "up_proj.weight", {F, D}),
            add(p + "down_proj.weight", {D, F})};
  }
};

}  // namespace

CausalLM::CausalLM(ModelConfig config) : cfg_(std::move(config)), impl_(std::make_shared<Impl>()) {
  build(Build::Allocate);
}

CausalLM::CausalLM(ModelConfig config, Build how) : cfg_(std::move(config)), impl_(std::make_shared<Impl>()) {
  build(how);
}

CausalLM CausalLM::without_weights(ModelConfig config) {
  return CausalLM(std::move(config), Build::NoValues);
}

std::vector<std::pair<std::string, Shape>> CausalLM::tensor_shapes(const ModelConfig& config) {
  const CausalLM m(config, Build::ShapesOnly);
  std::vector<std::pair<std::string, Shape>> out = m.impl_->param_shapes;
  for (const auto& [name, t] : m.impl_->buffers) out.emplace_back(name, t->shape());
  return out;
}

void CausalLM::build(Build how) {
  const ModelConfig& c = cfg_;
  Impl& m = *impl_;
  Builder b{m, how == Build::ShapesOnly, how == Build::NoValues};
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  m.embed = b.add("model.embed_tokens.weight", {c.vocab_size, D});
  m.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerParams& L = m.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    L.input_norm = b.add(p + "input_layernorm.weight", {D});
    const std::string a = p + "self_attn.";
    if (c.is_deepseek()) {
      const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
      if (c.q_lora_rank > 0) {
        L.q_a = b.add(a + "q_a_proj.weight", {c.q_lora_rank, D});
        L.q_a_norm = b.add(a + "q_a_layernorm.weight", {c.q_lora_rank});
        L.q_b = b.add(a + "q_b_proj.weight", {H * qk, c.q_lora_rank});
      } else {
        L.q = b.add(a + "q_proj.weight", {H * qk, D});
      }
      L.kv_a = b.add(a + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, D});
      L.kv_a_norm = b.add(a + "kv_a_layernorm.weight", {c.kv_lora_rank});
      L.kv_b = b.add(a + "kv_b_proj.weight", {H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank});
      L.o = b.add(a + "o_proj.weight", {D, H * c.v_head_dim});
    } else {
      const int64_t hd = c.head_dim, Hkv = c.num_key_value_heads;
      L.q = b.add(a + "q_proj.weight", {H * hd, D});
      if (c.attention_bias) L.q_bias = b.add(a + "q_proj.bias", {H * hd});
      L.k = b.add(a + "k_proj.weight", {Hkv * hd, D});
      if (c.attention_bias) L.k_bias = b.add(a + "k_proj.bias", {Hkv * hd});
      L.v = b.add(a + "v_proj.weight", {Hkv * hd, D});
      if (c.attention_bias) L.v_bias = b.add(a + "v_proj.bias", {Hkv * hd});
      L.o = b.add(a + "o_proj.weight", {D, H * hd});
      if (c.o_proj_bias) L.o_bias = b.add(a + "o_proj.bias", {D});
    }
    L.post_norm = b.add(p + "post_attention_layernorm.weight", {D});
    if (c.is_moe_layer(l)) {
      L.moe = true;
      L.router = b.add(p + "mlp.gate.weight", {c.n_routed_experts, D});
      if (c.topk_method == "noaux_tc") {
        L.expert_bias = Tensor::zeros({c.n_routed_experts});
        m.buffers.emplace_back(p + "mlp.gate.e_score_correction_bias", &L.expert_bias);
      }
      for (int64_t e = 0; e < c.n_routed_experts; ++e)
        L.experts.push_back(b.mlp(p + "mlp.experts." + std::to_string(e) + ".", D, c.moe_intermediate_size));
      if (c.n_shared_experts > 0)
        L.shared = b.mlp(p + "mlp.shared_experts.", D, c.moe_intermediate_size * c.n_shared_experts);
    } else {
      L.mlp = b.mlp(p + "mlp.", D, c.intermediate_size);
    }
  }
  m.norm = b.add("model.norm.weight", {D});
  if (!c.tie_word_embeddings) m.lm_head = b.add("lm_head.weight", {c.vocab_size, D});
  for (auto& [name, v] : m.named) params_.push_back(v);
}

void CausalLM::init_random(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, static_cast<float>(cfg_.initializer_range));
  for (auto& [name, v] : impl_->named) {
    Tensor& t = v.mutable_value();
    float* p = t.data<float>();
    const bool is_norm = name.find("norm.weight") != std::string::npos;
    const bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = is_norm ? 1.0f : is_bias ? 0.0f : normal(rng);
  }
  for (auto& [name, t] : impl_->buffers) t->fill(0.0);
}

std::vector<std::pair<std::string, Tensor>> CausalLM::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, v] : impl_->named) out.emplace_back(name, v.value());
  for (const auto& [name, t] : impl_->buffers) out.emplace_back(name, *t);
  return out;
}

int64_t CausalLM::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : state()) n += t.numel();
  return n;
}

void CausalLM::load_weights(const std::map<std::string, Tensor>& tensors, const std::string& source) {
  std::set<std::string> used;
  auto take = [&](const std::string& name, Tensor& dst) {
    auto it = tensors.find(name);
    LMF_CHECK(it != tensors.end(), source, ": tensor '", name, "' is missing (the config expects it)");
    LMF_CHECK(it->second.shape() == dst.shape(), source, ": tensor '", name, "' has shape ",
              shape_str(it->second.shape()), ", the config expects ", shape_str(dst.shape()));
    LMF_CHECK(is_floating(it->second.dtype()) || is_quantized(it->second.dtype()), source, ": tensor '", name,
              "' has dtype ", dtype_name(it->second.dtype()), ", expected a floating-point type");
    dst = it->second.to(DType::F32).contiguous();
    if (dst.storage() == it->second.storage()) dst = dst.clone();  // own the memory (not the file mapping)
    used.insert(name);
  };
  for (auto& [name, v] : impl_->named) take(name, v.mutable_value());
  for (auto& [name, t] : impl_->buffers) take(name, *t);
  for (const auto& [name, t] : tensors) {
    if (used.count(name) || skippable_extra_tensor(name, cfg_)) continue;
    LMF_CHECK(false, source, ": unexpected tensor '", name, "' (not part of a ", cfg_.model_type,
              " model with this config)");
  }
}

bool CausalLM::skippable_extra_tensor(const std::string& name, const ModelConfig& config) {
  if (name.find("rotary_emb.inv_freq") != std::string::npos) return true;
  // e.g. DeepSeek-V3's multi-token-prediction layer
  return name.rfind("model.layers.", 0) == 0 && std::atoll(name.c_str() + 13) >= config.num_hidden_layers;
}

CausalLM CausalLM::load(const std::string& dir) {
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  LMF_CHECK(fs::is_directory(dir), dir, ": not a model directory");
  LMF_CHECK(fs::exists(cfg_path), dir, ": no config.json in the model directory");
  const ModelConfig cfg = load_model_config(cfg_path);
  refuse_quantized_dir(cfg, cfg_path);
  CausalLM m(cfg);
  std::map<std::string, Tensor> tensors;
  std::string source;
  std::vector<io::SafetensorsFile> files;
  for (const std::string& p : io::model_weight_files(dir, source)) files.push_back(io::SafetensorsFile::open(p));
  for (const io::SafetensorsFile& f : files)
    for (const std::string& name : f.names()) tensors[name] = f.get(name);
  m.load_weights(tensors, source);
  return m;
}

void CausalLM::save(const std::string& dir, DType dtype) const {
  LMF_CHECK(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16, "model save: dtype ", dtype_name(dtype),
            " is not a weight storage type (f32, bf16, f16)");
  fs::create_directories(dir);
  io::NamedTensors out;
  for (const auto& [name, t] : state()) out.emplace_back(name, t.dtype() == dtype ? t : t.to(dtype));
  io::save_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  nlohmann::json j = cfg_.raw.is_object() ? cfg_.raw : nlohmann::json::object();
  j["model_type"] = cfg_.model_type;
  j["torch_dtype"] = dtype == DType::F32 ? "float32" : dtype == DType::BF16 ? "bfloat16" : "float16";
  io::write_file_atomic((fs::path(dir) / "config.json").string(), j.dump(2) + "\n");
}

void CausalLM::update_expert_bias(const std::vector<ExpertLoad>& load, double speed) {
  for (const ExpertLoad& el : load) {
    LayerParams& L = impl_->layers[static_cast<size_t>(el.layer)];
    if (!L.expert_bias.defined() || el.tokens.empty()) continue;
    double mean = 0;
    for (int64_t t : el.tokens) mean += static_cast<double>(t);
    mean /= static_cast<double>(el.tokens.size());
    float* b = L.expert_bias.data<float>();
    for (size_t e = 0; e < el.tokens.size(); ++e) {
      const double err = mean - static_cast<double>(el.tokens[e]);
      b[e] += static_cast<float>(speed * (err > 0 ? 1.0 : err < 0 ? -1.0 : 0.0));
    }
  }
}

}  // namespace lmforge::model
