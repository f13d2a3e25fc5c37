#include "lmforge/model/config.h"

#include <fstream>
#include <sstream>

#include "lmforge/core/error.h"

namespace lmforge::model {

namespace {

using nlohmann::json;

constexpr int64_t kMaxField = (int64_t{1} << 31) - 1;

// Typed field readers: absent (or null where allowed) keeps the default; a wrong type is an error.
struct Reader {
  const json& j;
  const std::string& source;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(source + ": field '" + key + "' " + what);
  }
  void integer(const char* key, int64_t& out, bool nullable = false) const {
    auto it = j.find(key);
    if (it == j.end() || (nullable && it->is_null())) return;
    if (!it->is_number_integer()) fail(key, "must be an integer, got " + it->dump());
    // No real config comes near 2^31 in any field; bounding them keeps size arithmetic far from overflow.
    if (it->is_number_unsigned() ? it->get<uint64_t>() > kMaxField : std::llabs(it->get<int64_t>()) > kMaxField)
      fail(key, "is out of range (" + it->dump() + ")");
    out = it->get<int64_t>();
  }
  void number(const char* key, double& out) const {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_number()) fail(key, "must be a number, got " + it->dump());
    out = it->get<double>();
  }
  void boolean(const char* key, bool& out) const {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_boolean()) fail(key, "must be true or false, got " + it->dump());
    out = it->get<bool>();
  }
  void string(const char* key, std::string& out) const {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_string()) fail(key, "must be a string, got " + it->dump());
    out = it->get<std::string>();
  }
};

void require(bool ok, const std::string& source, const std::string& key, const std::string& what) {
  if (!ok) throw Error(source + ": field '" + key + "' " + what);
}

}  // namespace

namespace {

// The parameter count in any arithmetic type: int64 for the count, long double to reject configs whose count
// would overflow before anything is allocated.
template <typename N>
N count_parameters(const ModelConfig& c) {
  const N D = static_cast<N>(c.hidden_size), V = static_cast<N>(c.vocab_size),
          H = static_cast<N>(c.num_attention_heads);
  N n = V * D * (c.tie_word_embeddings ? 1 : 2) + D;  // embeddings, lm_head, final norm
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    n += 2 * D;  // input and post-attention norms
    if (c.is_deepseek()) {
      const N qk = static_cast<N>(c.qk_nope_head_dim + c.qk_rope_head_dim);
      const N ql = static_cast<N>(c.q_lora_rank), kl = static_cast<N>(c.kv_lora_rank);
      n += c.q_lora_rank > 0 ? D * ql + ql + ql * H * qk : D * H * qk;
      n += D * (kl + static_cast<N>(c.qk_rope_head_dim)) + kl;          // kv_a_proj_with_mqa, norm
      n += kl * H * static_cast<N>(c.qk_nope_head_dim + c.v_head_dim);  // kv_b_proj
      n += H * static_cast<N>(c.v_head_dim) * D;                        // o_proj
    } else {
      const N hd = static_cast<N>(c.head_dim), kv = static_cast<N>(c.num_key_value_heads);
      n += D * H * hd * 2 + D * kv * hd * 2;
      if (c.attention_bias) n += H * hd + 2 * kv * hd;
      if (c.o_proj_bias) n += D;
    }
    if (c.is_moe_layer(l)) {
      const N E = static_cast<N>(c.n_routed_experts);
      n += static_cast<N>(c.n_shared_experts + c.n_routed_experts) * 3 * D * static_cast<N>(c.moe_intermediate_size);
      n += E * D;                               // router
      if (c.topk_method == "noaux_tc") n += E;  // e_score_correction_bias
    } else {
      n += 3 * D * static_cast<N>(c.intermediate_size);
    }
  }
  return n;
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& source) {
  LMF_CHECK(j.is_object(), source, ": config must be a JSON object");
  Reader r{j, source};
  ModelConfig c;
  c.raw = j;
  r.string("model_type", c.model_type);
  require(c.model_type == "llama" || c.model_type == "qwen2" || c.model_type == "deepseek_v3", source, "model_type",
          "must be \"llama\", \"qwen2\" or \"deepseek_v3\", got \"" + c.model_type + "\"");
  r.integer("vocab_size", c.vocab_size);
  r.integer("hidden_size", c.hidden_size);
  r.integer("intermediate_size", c.intermediate_size);
  r.integer("num_hidden_layers", c.num_hidden_layers);
  r.integer("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = c.num_attention_heads;
  r.integer("num_key_value_heads", c.num_key_value_heads, true);
  r.integer("head_dim", c.head_dim, true);
  r.integer("max_position_embeddings", c.max_position_embeddings);
  r.number("rms_norm_eps", c.rms_norm_eps);
  r.number("rope_theta", c.rope_theta);
  r.number("initializer_range", c.initializer_range);
  r.boolean("attention_bias", c.attention_bias);
  c.o_proj_bias = c.attention_bias;
  if (c.is_qwen2()) {  // transformers' Qwen2: q/k/v projections with biases, o_proj without; no attention_bias key
    c.attention_bias = true;
    c.o_proj_bias = false;
    bool sliding = false;
    r.boolean("use_sliding_window", sliding);
    require(!sliding, source, "use_sliding_window", "true is not supported for qwen2 models");
  }
  r.boolean("tie_word_embeddings", c.tie_word_embeddings);
  r.integer("bos_token_id", c.bos_token_id, true);
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    if (it->is_number_integer()) {
      c.eos_token_ids = {it->get<int64_t>()};
    } else if (it->is_array()) {
      for (const json& e : *it) {
        require(e.is_number_integer(), source, "eos_token_id", "must be an integer or a list of integers");
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    } else {
      require(false, source, "eos_token_id", "must be an integer or a list of integers, got " + it->dump());
    }
  }
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    require(it->is_object(), source, "rope_scaling", "must be an object or null");
    Reader rs{*it, source};
    RopeScaling s;
    rs.string("type", s.type);
    if (s.type.empty()) rs.string("rope_type", s.type);
    require(s.type == "yarn" || s.type == "llama3" || s.type == "linear" || s.type == "default", source,
            "rope_scaling.type",
            "\"" + s.type + "\" is not supported (\"yarn\", \"llama3\", \"linear\" and \"default\" are)");
    rs.number("factor", s.factor);
    if (s.type != "linear" && s.type != "default")
      rs.integer("original_max_position_embeddings", s.original_max_position_embeddings);
    if (s.type == "default") {
      // transformers' rope_type "default": plain RoPE, as if rope_scaling were absent
    } else if (s.type == "linear") {
      require(s.factor >= 1.0, source, "rope_scaling.factor", "must be >= 1");
    } else if (s.type == "yarn") {
      rs.number("beta_fast", s.beta_fast);
      rs.number("beta_slow", s.beta_slow);
      rs.number("mscale", s.mscale);
      rs.number("mscale_all_dim", s.mscale_all_dim);
    } else {
      rs.number("low_freq_factor", s.low_freq_factor);
      rs.number("high_freq_factor", s.high_freq_factor);
      require(s.low_freq_factor > 0.0, source, "rope_scaling.low_freq_factor", "must be > 0");
      require(s.high_freq_factor > s.low_freq_factor, source, "rope_scaling.high_freq_factor",
              "must be > low_freq_factor");
      require(!c.is_deepseek(), source, "rope_scaling.type", "\"llama3\" applies to llama models");
    }
    if (s.type == "yarn" || s.type == "llama3") {
      require(s.factor >= 1.0, source, "rope_scaling.factor", "must be >= 1");
      require(s.original_max_position_embeddings > 0, source, "rope_scaling.original_max_position_embeddings",
              "must be > 0");
    }
    if (s.type != "default") c.rope_scaling = s;
  }
  r.integer("sliding_window", c.sliding_window, true);
  if (auto it = j.find("layer_types"); it != j.end() && !it->is_null()) {
    require(it->is_array(), source, "layer_types", "must be a list");
    for (const json& t : *it) {
      require(t.is_string() && (t == "full_attention" || t == "sliding_attention"), source, "layer_types",
              "entries must be \"full_attention\" or \"sliding_attention\", got " + t.dump());
      c.layer_types.push_back(t.get<std::string>());
    }
  }
  if (c.is_deepseek()) {
    r.integer("q_lora_rank", c.q_lora_rank, true);
    r.integer("kv_lora_rank", c.kv_lora_rank);
    r.integer("qk_nope_head_dim", c.qk_nope_head_dim);
    r.integer("qk_rope_head_dim", c.qk_rope_head_dim);
    r.integer("v_head_dim", c.v_head_dim);
    r.integer("moe_intermediate_size", c.moe_intermediate_size);
    r.integer("n_shared_experts", c.n_shared_experts, true);
    r.integer("n_routed_experts", c.n_routed_experts, true);
    r.integer("num_experts_per_tok", c.num_experts_per_tok, true);
    r.integer("first_k_dense_replace", c.first_k_dense_replace);
    r.integer("moe_layer_freq", c.moe_layer_freq);
    r.integer("n_group", c.n_group, true);
    r.integer("topk_group", c.topk_group, true);
    r.string("scoring_func", c.scoring_func);
    r.string("topk_method", c.topk_method);
    r.boolean("norm_topk_prob", c.norm_topk_prob);
    r.boolean("seq_aux", c.seq_aux);
    r.number("routed_scaling_factor", c.routed_scaling_factor);
    r.number("aux_loss_alpha", c.aux_loss_alpha);
    r.number("moe_capacity_factor", c.moe_capacity_factor);
    r.number("moe_router_noise_std", c.moe_router_noise_std);
    r.number("moe_bias_update_speed", c.moe_bias_update_speed);
    require(c.moe_capacity_factor >= 0, source, "moe_capacity_factor", "must be >= 0 (0: no capacity limit)");
    require(c.moe_router_noise_std >= 0, source, "moe_router_noise_std", "must be >= 0");
    require(c.moe_bias_update_speed >= 0, source, "moe_bias_update_speed", "must be >= 0");
    require(c.aux_loss_alpha >= 0, source, "aux_loss_alpha", "must be >= 0");
    require(!c.attention_bias, source, "attention_bias", "is not supported for deepseek_v3 models");
  }

  // Consistency.
  for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size},
                        {"hidden_size", c.hidden_size},
                        {"num_hidden_layers", c.num_hidden_layers},
                        {"num_attention_heads", c.num_attention_heads},
                        {"num_key_value_heads", c.num_key_value_heads},
                        {"max_position_embeddings", c.max_position_embeddings}})
    require(v > 0, source, key, "must be > 0, got " + std::to_string(v));
  require(c.rms_norm_eps > 0, source, "rms_norm_eps", "must be > 0");
  require(c.rope_theta > 0, source, "rope_theta", "must be > 0");
  require(c.num_attention_heads % c.num_key_value_heads == 0, source, "num_key_value_heads",
          std::to_string(c.num_key_value_heads) + " does not divide num_attention_heads " +
              std::to_string(c.num_attention_heads));
  if (c.head_dim == 0) {
    require(c.hidden_size % c.num_attention_heads == 0, source, "num_attention_heads",
            std::to_string(c.num_attention_heads) + " does not divide hidden_size " + std::to_string(c.hidden_size) +
                " (and no head_dim is given)");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  require(c.head_dim > 0 && c.head_dim % 2 == 0, source, "head_dim", "must be even and > 0 (RoPE rotates pairs)");
  if (!c.layer_types.empty()) {
    require(static_cast<int64_t>(c.layer_types.size()) == c.num_hidden_layers, source, "layer_types",
            "has " + std::to_string(c.layer_types.size()) + " entries for " + std::to_string(c.num_hidden_layers) +
                " layers");
    for (const auto& t : c.layer_types)
      require(t != "sliding_attention" || c.sliding_window > 0, source, "sliding_window",
              "must be > 0 when layer_types has sliding_attention layers");
  }
  require(c.sliding_window >= 0, source, "sliding_window", "must be >= 0");
  const bool moe = c.is_deepseek() && c.n_routed_experts > 0;
  if (!c.is_deepseek() || c.first_k_dense_replace > 0 || !moe)
    require(c.intermediate_size > 0, source, "intermediate_size", "must be > 0");
  if (c.is_deepseek()) {
    require(c.kv_lora_rank > 0, source, "kv_lora_rank", "must be > 0");
    require(c.qk_nope_head_dim >= 0 && c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0, source,
            "qk_rope_head_dim", "must be even and > 0 (qk_nope_head_dim >= 0)");
    require(c.v_head_dim > 0, source, "v_head_dim", "must be > 0");
    require(c.q_lora_rank >= 0, source, "q_lora_rank", "must be null or > 0");
    require(c.moe_layer_freq > 0, source, "moe_layer_freq", "must be > 0");
    require(c.first_k_dense_replace >= 0, source, "first_k_dense_replace", "must be >= 0");
    require(c.scoring_func == "softmax" || c.scoring_func == "sigmoid", source, "scoring_func",
            "must be \"softmax\" or \"sigmoid\", got \"" + c.scoring_func + "\"");
    require(c.topk_method == "greedy" || c.topk_method == "group_limited_greedy" || c.topk_method == "noaux_tc", source,
            "topk_method", "must be greedy, group_limited_greedy or noaux_tc, got \"" + c.topk_method + "\"");
    if (moe) {
      require(c.moe_intermediate_size > 0, source, "moe_intermediate_size", "must be > 0");
      require(c.num_experts_per_tok > 0 && c.num_experts_per_tok <= c.n_routed_experts, source, "num_experts_per_tok",
              std::to_string(c.num_experts_per_tok) +
                  " must be in [1, n_routed_experts = " + std::to_string(c.n_routed_experts) + "]");
      require(c.n_group > 0 && c.n_routed_experts % c.n_group == 0, source, "n_group",
              std::to_string(c.n_group) + " does not divide n_routed_experts " + std::to_string(c.n_routed_experts));
      require(c.topk_group > 0 && c.topk_group <= c.n_group, source, "topk_group",
              "must be in [1, n_group = " + std::to_string(c.n_group) + "]");
      require(c.n_shared_experts >= 0, source, "n_shared_experts", "must be >= 0");
    }
  }
  // Layers are walked one by one below and tensors sized from products of fields: refuse absurd models here.
  require(c.num_hidden_layers <= 65536, source, "num_hidden_layers", "must be at most 65536");
  require(count_parameters<long double>(c) < 0x1p50L, source, "hidden_size",
          "and the other sizes describe more than 2^50 parameters");
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream in(path);
  LMF_CHECK(in.good(), path, ": cannot open config");
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  LMF_CHECK(!j.is_discarded(), path, ": not valid JSON");
  return parse_model_config(j, path);
}

void refuse_quantized_dir(const ModelConfig& c, const std::string& path, const std::string& hint) {
  if (!c.raw.is_object() || !c.raw.contains("quantization_config")) return;
  const json& q = c.raw["quantization_config"];
  const std::string format = q.is_object() && q.contains("format") && q["format"].is_string()
                                 ? " (format " + q["format"].get<std::string>() + ")"
                                 : "";
  throw Error(path + ": a quantized model dir" + format +
              "; this needs the f32, bf16 or f16 model dir it was made from (generate, eval, bench, serve and export "
              "gguf load quantized dirs)" +
              (hint.empty() ? "" : "; " + hint));
}

bool ModelConfig::is_moe_layer(int64_t layer) const {
  return is_deepseek() && n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
}

bool ModelConfig::is_sliding_layer(int64_t layer) const {
  return !layer_types.empty() && layer_types[static_cast<size_t>(layer)] == "sliding_attention";
}

int64_t ModelConfig::num_parameters() const {
  return count_parameters<int64_t>(*this);
}

}  // namespace lmforge::model
