#include "lmforge/eval/model_dir.h"

#include <filesystem>
#include <fstream>

#include "lmforge/core/error.h"
#include "lmforge/quant/quantized_model.h"

namespace lmforge::eval {

namespace fs = std::filesystem;

namespace {

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  LMF_CHECK(in.good(), p.string(), ": cannot read");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  LMF_CHECK(!j.is_discarded() && j.is_object(), p.string(), ": not a JSON object");
  return j;
}

std::string token_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

}  // namespace

model::Engine load_engine(const std::string& dir, const model::EngineOptions& opt) {
  LMF_CHECK(fs::is_directory(dir), dir, ": not a model directory");
  const fs::path cfg = fs::path(dir) / "config.json";
  if (fs::exists(cfg) && read_json(cfg).contains("quantization_config")) {
    // A quantized dir from `lmforge quantize`: the weights stay in their formats; every product runs on them.
    const HugePageScope huge;  // the weights decode streams every token
    quant::QuantizedWeights q = quant::load_quantized_model(dir);
    model::EngineWeights w{std::move(q.linear), std::move(q.dense)};
    return model::Engine(q.config, std::move(w), opt, dir);
  }
  return model::Engine::load(dir, opt);
}

ModelDir open_model_dir(const std::string& dir, bool need_tokenizer, const model::EngineOptions& opt) {
  LMF_CHECK(fs::is_directory(dir), dir, ": not a model directory");
  ModelDir m{dir, load_engine(dir, opt), std::nullopt, nlohmann::json::object(), "", "", ""};
  const fs::path tok = fs::path(dir) / "tokenizer.json";
  if (fs::exists(tok)) {
    m.tokenizer.emplace(tokenizer::Tokenizer::from_file(tok.string()));
  } else {
    LMF_CHECK(!need_tokenizer, dir, ": no tokenizer.json in the model directory (needed to turn text into ids)");
  }
  if (const fs::path g = fs::path(dir) / "generation_config.json"; fs::exists(g)) m.generation_config = read_json(g);
  if (const fs::path t = fs::path(dir) / "tokenizer_config.json"; fs::exists(t)) {
    const nlohmann::json j = read_json(t);
    if (j.contains("chat_template")) {
      const auto& ct = j["chat_template"];
      if (ct.is_string()) {
        m.chat_template = ct.get<std::string>();
      } else if (ct.is_array()) {  // [{"name": "default", "template": ...}, ...]
        for (const auto& e : ct)
          if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
            m.chat_template = e["template"].get<std::string>();
      }
    }
    if (j.contains("bos_token")) m.bos_token = token_text(j["bos_token"]);
    if (j.contains("eos_token")) m.eos_token = token_text(j["eos_token"]);
  }
  return m;
}

int32_t ModelDir::token_id(const std::string& text) const {
  if (!tokenizer || text.empty()) return -1;
  const auto id = tokenizer->token_to_id(text);
  return id && static_cast<int64_t>(*id) < engine.config().vocab_size ? static_cast<int32_t>(*id) : -1;
}

std::vector<int32_t> ModelDir::encode(const std::string& text, bool add_special_tokens) const {
  LMF_CHECK(tokenizer.has_value(), path, ": no tokenizer.json in the model directory");
  tokenizer::EncodeOptions o;
  o.add_special_tokens = add_special_tokens;
  o.invalid_utf8 = tokenizer::InvalidUtf8::kReplace;
  const std::vector<uint32_t> ids = tokenizer->encode(text, o);
  const int64_t V = engine.config().vocab_size;
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (uint32_t id : ids) {
    LMF_CHECK(static_cast<int64_t>(id) < V, path, ": tokenizer.json gives id ", id, " but the model's vocab_size is ",
              V);
    out.push_back(static_cast<int32_t>(id));
  }
  return out;
}

std::string ModelDir::token_bytes(int32_t id) const {
  if (!tokenizer || id < 0 || static_cast<size_t>(id) >= tokenizer->vocab_size()) return {};
  const uint32_t u = static_cast<uint32_t>(id);
  return tokenizer->decode_bytes(std::span<const uint32_t>(&u, 1), true);
}

model::SamplingParams generation_defaults(const ModelDir& m) {
  model::SamplingParams p;
  const nlohmann::json& g = m.generation_config;
  const std::string src = m.path + "/generation_config.json";
  auto num = [&](const char* k, double& dst) {
    if (!g.contains(k) || g[k].is_null()) return;
    LMF_CHECK(g[k].is_number(), src, ": field '", k, "' must be a number");
    dst = g[k].get<double>();
  };
  num("temperature", p.temperature);
  num("top_p", p.top_p);
  num("min_p", p.min_p);
  num("repetition_penalty", p.repetition_penalty);
  double k = 0, mx = static_cast<double>(p.max_tokens);
  num("top_k", k);
  num("max_new_tokens", mx);
  p.top_k = static_cast<int64_t>(k);
  p.max_tokens = static_cast<int64_t>(mx);
  if (g.contains("do_sample") && g["do_sample"].is_boolean() && !g["do_sample"].get<bool>()) p.temperature = 0;
  const int64_t V = m.engine.config().vocab_size;
  const auto add_eos = [&](int64_t id) {
    if (id >= 0 && id < V) p.eos_ids.push_back(static_cast<int32_t>(id));
  };
  if (g.contains("eos_token_id")) {
    const auto& e = g["eos_token_id"];
    if (e.is_number_integer()) add_eos(e.get<int64_t>());
    if (e.is_array())
      for (const auto& x : e)
        if (x.is_number_integer()) add_eos(x.get<int64_t>());
  }
  // The tokenizer's EOS (a chat model's end of turn, <|im_end|> or <|eot_id|>), as vLLM stops at it too.
  add_eos(m.token_id(m.eos_token));
  return p;
}

}  // namespace lmforge::eval
