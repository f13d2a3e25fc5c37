#include "gguf_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "lmforge/core/error.h"
#include "lmforge/io/atomic_file.h"
#include "lmforge/tokenizer/tokenizer.h"
#include "lmforge/tokenizer/trainer.h"

namespace lmforge::exporter {

namespace fs = std::filesystem;
using io::GgufType;
using io::GgufValue;
using nlohmann::json;

namespace {

// llama.cpp's token types (llama_token_type / gguf-py TokenType).
constexpr int64_t kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6;

constexpr const char* kMetaspace = "\u2581";  // SentencePiece's "▁", standing for a space

// A SentencePiece-style tokenizer.json (Llama-2, Mistral, TinyLlama): BPE over characters with <0xXX> byte
// fallback, no ByteLevel, spaces written as U+2581 by the normalizer (Prepend "▁" + Replace " " -> "▁", or the
// Replace alone) or by a Metaspace pre-tokenizer. llama.cpp keeps such a vocabulary as tokenizer.ggml.model
// "llama" (its SPM tokenizer). Returns whether `tj` is one; `space_prefix`: a "▁" is prepended to the text.
bool spm_style(const json& tj, bool& space_prefix) {
  const json& model = tj.value("model", json::object());
  if (!model.value("byte_fallback", false)) return false;
  auto is = [](const json& j, const char* type) { return j.is_object() && j.value("type", "") == type; };
  const json norm = tj.value("normalizer", json());
  const json pre = tj.value("pre_tokenizer", json());
  if (norm.is_null()) {
    if (!is(pre, "Metaspace") || pre.value("replacement", kMetaspace) != std::string(kMetaspace)) return false;
    const std::string scheme =
        pre.value("prepend_scheme", pre.value("add_prefix_space", true) ? std::string("always") : "never");
    space_prefix = scheme != "never";
    return true;
  }
  if (!pre.is_null()) return false;
  const json steps = is(norm, "Sequence") ? norm.value("normalizers", json::array()) : json::array({norm});
  bool prepend = false, replace = false;
  for (const json& n : steps) {
    if (is(n, "Prepend") && n.value("prepend", "") == std::string(kMetaspace) && !prepend && !replace) {
      prepend = true;
    } else if (is(n, "Replace") && n.value("content", "") == std::string(kMetaspace) &&
               n.value("pattern", json::object()).value("String", "") == " " && !replace) {
      replace = true;
    } else {
      return false;
    }
  }
  space_prefix = prepend;
  return replace;
}

// GGUF pre-tokenizer name <-> the BPE trainer's pattern of the same regexes. The regexes are those of the
// models llama.cpp names these after (tokenizer.json of DeepSeek-V3, Llama-3, Qwen2, GPT-2).
struct PreName {
  const char* gguf;
  const char* pattern;
};
constexpr PreName kPreNames[] = {
    {"deepseek-v3", "deepseek-v3"}, {"llama-bpe", "llama3"}, {"qwen2", "qwen2"}, {"gpt-2", "gpt2"}};
// Other names llama.cpp gives the same regexes.
constexpr PreName kPreAliases[] = {{"llama3", "llama3"}, {"llama-v3", "llama3"}, {"deepseek-r1-qwen", "qwen2"}};

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

// What decides how text is split: each Split's pattern, behavior and invert, ByteLevel's regex switch and prefix
// space. Other fields (trim_offsets) do not change ids.
void signature(const json& p, std::vector<std::string>& out) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const json& s : p.value("pretokenizers", json::array())) signature(s, out);
  } else if (type == "Split") {
    const json& pat = p.value("pattern", json::object());
    out.push_back("split|" + pat.dump() + "|" + p.value("behavior", "") + "|" + (p.value("invert", false) ? "1" : "0"));
  } else if (type == "ByteLevel") {
    out.push_back(std::string("bytelevel|") + (p.value("use_regex", true) ? "1" : "0") +
                  (p.value("add_prefix_space", true) ? "1" : "0"));
  } else {
    out.push_back("other|" + p.dump());
  }
}

bool is_integer_type(GgufType t) {
  io::GgufValue v;
  v.type = t;
  return v.is_integer();
}

std::string pattern_for_pre(const std::string& pre) {
  for (const PreName& p : kPreNames)
    if (pre == p.gguf) return p.pattern;
  for (const PreName& p : kPreAliases)
    if (pre == p.gguf) return p.pattern;
  return "";
}

std::string known_names() {
  std::string s;
  for (const PreName& p : kPreNames) s += std::string(s.empty() ? "" : ", ") + p.gguf;
  return s;
}

// tokenizer_config.json's chat_template as tokenizer.chat_template.
void add_chat_template(io::GgufWriter& w, const std::string& model_dir) {
  const std::string tc_path = (fs::path(model_dir) / "tokenizer_config.json").string();
  if (!fs::exists(tc_path)) return;
  const json tc = read_json(tc_path);
  if (auto it = tc.find("chat_template"); it != tc.end()) {
    if (it->is_string()) {
      w.set("tokenizer.chat_template", GgufValue::string(it->get<std::string>()));
    } else if (it->is_array()) {  // [{"name": ..., "template": ...}]: the default one, as llama.cpp's converter
      for (const json& t : *it)
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
          w.set("tokenizer.chat_template", GgufValue::string(t["template"].get<std::string>()));
    } else if (!it->is_null()) {
      throw Error(tc_path + ": chat_template must be a string or a list of {name, template}");
    }
  }
}

// BOS/EOS as the post-processor adds them: an encoding with and without special tokens compared.
void template_bos_eos(const tokenizer::Tokenizer& tok, const model::ModelConfig& cfg, bool& add_bos, bool& add_eos,
                      int64_t& bos, int64_t& eos) {
  const std::vector<uint32_t> plain = tok.encode("a", {.add_special_tokens = false});
  const std::vector<uint32_t> full = tok.encode("a", {.add_special_tokens = true});
  add_bos = add_eos = false;
  bos = cfg.bos_token_id;
  eos = cfg.eos_token_ids.empty() ? -1 : cfg.eos_token_ids.front();
  if (full.size() > plain.size()) {
    if (full.front() != plain.front()) {
      add_bos = true;
      bos = full.front();
    }
    if (full.back() != plain.back()) {
      add_eos = true;
      if (eos < 0) eos = full.back();
    }
  }
}

void set_special_ids(io::GgufWriter& w, const model::ModelConfig& cfg, int64_t bos, int64_t eos, bool add_bos,
                     bool add_eos) {
  if (bos >= 0 && bos < cfg.vocab_size)
    w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(bos)));
  if (eos >= 0 && eos < cfg.vocab_size)
    w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(eos)));
  if (auto pad = cfg.raw.find("pad_token_id"); pad != cfg.raw.end() && pad->is_number_integer()) {
    const auto p = pad->get<int64_t>();
    if (p >= 0 && p < cfg.vocab_size)
      w.set("tokenizer.ggml.padding_token_id", GgufValue::u32(static_cast<uint32_t>(p)));
  }
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(add_bos));
  w.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(add_eos));
}

// A SentencePiece-style tokenizer as llama.cpp's "llama" vocabulary: tokens, token types (byte tokens 6, the unk
// token 2), and scores that order the merges as tokenizer.json does. llama.cpp's SPM tokenizer repeatedly joins the
// adjacent pair whose joined text is a token of the highest score; merge i's result scores -(i + 1) (its first
// merge), every other token 0, so it joins in the merges' order.
void add_spm_metadata(io::GgufWriter& w, const json& tj, const std::string& tj_path, const tokenizer::Tokenizer& tok,
                      const model::ModelConfig& cfg, bool space_prefix) {
  const json& model = tj.value("model", json::object());
  const auto n = static_cast<size_t>(cfg.vocab_size);
  if (tok.vocab_size() > n)
    throw Error(tj_path + ": " + std::to_string(tok.vocab_size()) + " tokens, more than the model's vocab_size " +
                std::to_string(n));
  std::map<std::string, float> merge_score;
  int64_t rank = 0;
  for (const json& m : model.value("merges", json::array())) {
    std::string joined;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw Error(tj_path + ": model.merges: entry " + m.dump() + " is not \"a b\"");
      joined = s.substr(0, sp) + s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      joined = m[0].get<std::string>() + m[1].get<std::string>();
    } else {
      throw Error(tj_path + ": model.merges: entry " + m.dump() + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    merge_score.emplace(joined, -static_cast<float>(++rank));
  }
  std::set<uint32_t> added;
  for (const json& a : tj.value("added_tokens", json::array()))
    if (auto id = tok.token_to_id(a.value("content", ""))) added.insert(*id);
  const std::string unk = model.value("unk_token", json()).is_string() ? model["unk_token"].get<std::string>() : "";
  std::vector<std::string> tokens(n);
  std::vector<int64_t> types(n);
  std::vector<double> scores(n, 0.0);
  int64_t unk_id = -1;
  for (size_t id = 0; id < n; ++id) {
    const auto u = static_cast<uint32_t>(id);
    std::optional<std::string> t = tok.id_to_token(u);
    if (!t) {
      tokens[id] = "[PAD" + std::to_string(id) + "]";
      types[id] = kUnused;
      continue;
    }
    tokens[id] = *t;
    if (!unk.empty() && *t == unk) {
      types[id] = kUnknown;
      unk_id = static_cast<int64_t>(id);
    } else if (added.count(u)) {
      types[id] = tok.is_special(u) ? kControl : kUserDefined;
    } else if (tokenizer::byte_token_value(*t) >= 0) {
      types[id] = kByte;
    } else {
      types[id] = kNormal;
      if (auto it = merge_score.find(*t); it != merge_score.end()) scores[id] = it->second;
    }
  }
  bool add_bos = false, add_eos = false;
  int64_t bos = -1, eos = -1;
  template_bos_eos(tok, cfg, add_bos, add_eos, bos, eos);
  w.set("tokenizer.ggml.model", GgufValue::string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  w.set("tokenizer.ggml.scores", GgufValue::float_array(GgufType::F32, std::move(scores)));
  w.set("tokenizer.ggml.token_type", GgufValue::int_array(GgufType::I32, std::move(types)));
  if (unk_id >= 0) w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(static_cast<uint32_t>(unk_id)));
  set_special_ids(w, cfg, bos, eos, add_bos, add_eos);
  w.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(space_prefix));
}

}  // namespace

std::string gguf_pre_name(const json& pre_tokenizer) {
  std::vector<std::string> sig;
  signature(pre_tokenizer, sig);
  for (const PreName& p : kPreNames) {
    std::vector<std::string> ref;
    signature(json::parse(tokenizer::BpeTrainer::pre_tokenizer_json(p.pattern)), ref);
    if (ref == sig) return p.gguf;
  }
  return "";
}

std::string add_tokenizer_metadata(io::GgufWriter& w, const std::string& model_dir, const model::ModelConfig& cfg,
                                   const std::string& pre_override) {
  const std::string tj_path = (fs::path(model_dir) / "tokenizer.json").string();
  if (!fs::exists(tj_path))
    throw Error(tj_path + ": missing; GGUF files carry their tokenizer, so export needs the model's tokenizer.json");
  const json tj = read_json(tj_path);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(tj_path);
  const json& model = tj.value("model", json::object());
  if (model.value("type", "BPE") != "BPE") throw Error(tj_path + ": model.type: only BPE can be exported to GGUF");
  bool space_prefix = false;
  if (spm_style(tj, space_prefix)) {
    if (!pre_override.empty())
      throw Error("--pre " + pre_override + ": " + tj_path +
                  " is a SentencePiece-style tokenizer (llama.cpp's \"llama\" vocabulary has no pre-tokenizer name)");
    add_spm_metadata(w, tj, tj_path, tok, cfg, space_prefix);
    add_chat_template(w, model_dir);
    return "llama (spm)";
  }
  if (model.value("byte_fallback", false))
    throw Error(tj_path +
                ": model.byte_fallback: llama.cpp's gpt2 vocabulary has no byte fallback, and the file is not a "
                "SentencePiece-style tokenizer (\"▁\" for spaces by its normalizer or a Metaspace pre-tokenizer)");
  const json& norm = tj.contains("normalizer") ? tj["normalizer"] : json();
  if (!norm.is_null() && norm.value("type", "") != "NFC")
    throw Error(tj_path + ": normalizer " + norm.value("type", "?") +
                ": llama.cpp's gpt2 vocabulary applies no normalizer (only null or NFC is exported)");

  std::string pre = pre_override;
  if (!pre.empty() && pattern_for_pre(pre).empty())
    throw Error("--pre " + pre + ": not a pre-tokenizer lmforge knows the regexes of (" + known_names() + ")");
  if (pre.empty()) {
    pre = gguf_pre_name(tj.value("pre_tokenizer", json()));
    if (pre.empty())
      throw Error(tj_path + ": pre_tokenizer matches none of the pre-tokenizers llama.cpp knows by name (" +
                  known_names() + "); pass --pre NAME to choose one");
  }

  const auto n = static_cast<size_t>(cfg.vocab_size);
  if (tok.vocab_size() > n)
    throw Error(tj_path + ": " + std::to_string(tok.vocab_size()) + " tokens, more than the model's vocab_size " +
                std::to_string(n));
  std::set<uint32_t> added;
  for (const json& a : tj.value("added_tokens", json::array())) {
    if (auto id = tok.token_to_id(a.value("content", ""))) added.insert(*id);
  }
  std::vector<std::string> tokens(n);
  std::vector<int64_t> types(n);
  for (size_t id = 0; id < n; ++id) {
    std::optional<std::string> t = tok.id_to_token(static_cast<uint32_t>(id));
    if (!t) {  // ids past the tokenizer (a padded embedding): llama.cpp's converter names them [PADn]
      tokens[id] = "[PAD" + std::to_string(id) + "]";
      types[id] = kUnused;
    } else {
      tokens[id] = *t;
      types[id] = added.count(static_cast<uint32_t>(id))
                      ? (tok.is_special(static_cast<uint32_t>(id)) ? kControl : kUserDefined)
                      : kNormal;
    }
  }
  std::vector<std::string> merges;
  for (const json& m : model.value("merges", json::array())) {
    if (m.is_string()) {
      merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      throw Error(tj_path + ": model.merges: entry " + m.dump() + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }

  bool add_bos = false, add_eos = false;
  int64_t bos = -1, eos = -1;
  template_bos_eos(tok, cfg, add_bos, add_eos, bos, eos);

  w.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
  w.set("tokenizer.ggml.pre", GgufValue::string(pre));
  w.set("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  w.set("tokenizer.ggml.token_type", GgufValue::int_array(GgufType::I32, std::move(types)));
  w.set("tokenizer.ggml.merges", GgufValue::string_array(std::move(merges)));
  set_special_ids(w, cfg, bos, eos, add_bos, add_eos);
  add_chat_template(w, model_dir);
  return pre;
}

namespace {

// The merges of a SentencePiece vocabulary, as HF's converter (SentencePieceExtractor) derives them from the scores:
// every split of a normal token into two tokens of the vocabulary, ordered by the joined token's score (highest
// first; equal scores in id order), then by the two halves' ids. BPE over these merges joins pieces in the order
// llama.cpp's SPM tokenizer does (the adjacent pair whose joined text has the highest score first).
json spm_merges(const io::GgufFile& f, const std::vector<std::string>& tokens, const std::vector<int64_t>& types) {
  const io::GgufValue& sv = f.at("tokenizer.ggml.scores");
  if (sv.type != GgufType::ARRAY || (sv.elem != GgufType::F32 && sv.elem != GgufType::F64) ||
      sv.floats.size() != tokens.size())
    throw Error(f.path() + ": tokenizer.ggml.scores must be a float array as long as tokenizer.ggml.tokens");
  std::unordered_map<std::string_view, int64_t> id_of;
  for (size_t id = 0; id < tokens.size(); ++id)
    if (types[id] != kUnused) id_of.emplace(tokens[id], static_cast<int64_t>(id));
  struct M {
    double score;
    int64_t t, a, b;
    uint32_t split;
  };
  std::vector<M> ms;
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (types[id] != kNormal) continue;
    const std::string& t = tokens[id];
    for (size_t i = 1; i < t.size(); ++i) {
      if ((static_cast<unsigned char>(t[i]) & 0xC0) == 0x80) continue;  // inside a UTF-8 sequence
      auto a = id_of.find(std::string_view(t).substr(0, i));
      if (a == id_of.end()) continue;
      auto b = id_of.find(std::string_view(t).substr(i));
      if (b == id_of.end()) continue;
      ms.push_back({sv.floats[id], static_cast<int64_t>(id), a->second, b->second, static_cast<uint32_t>(i)});
    }
  }
  std::stable_sort(ms.begin(), ms.end(), [](const M& x, const M& y) {
    if (x.score != y.score) return x.score > y.score;
    if (x.t != y.t) return x.t < y.t;
    if (x.a != y.a) return x.a < y.a;
    return x.b < y.b;
  });
  json merges = json::array();
  for (const M& m : ms) {
    const std::string& t = tokens[static_cast<size_t>(m.t)];
    merges.push_back(json::array({t.substr(0, m.split), t.substr(m.split)}));
  }
  return merges;
}

// Llama-2's tokenizer.json layout for a SentencePiece vocabulary: "▁" for spaces (prepended when
// tokenizer.ggml.add_space_prefix, llama.cpp's default, says so), byte fallback, and the matching decoder.
json spm_tokenizer_json(const io::GgufFile& f, const json& added, const json& post, const json& vocab,
                        const json& merges, const std::string& unk) {
  const bool prefix = !f.find("tokenizer.ggml.add_space_prefix") || f.get_bool("tokenizer.ggml.add_space_prefix");
  json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMetaspace}};
  json normalizer =
      prefix ? json{{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", kMetaspace}}, replace}}}
             : replace;
  json decoders = {{{"type", "Replace"}, {"pattern", {{"String", kMetaspace}}}, {"content", " "}},
                   {{"type", "ByteFallback"}},
                   {{"type", "Fuse"}}};
  if (prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", normalizer},
          {"pre_tokenizer", nullptr},
          {"post_processor", post},
          {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", unk.empty() ? json() : json(unk)},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merges}}}};
}

}  // namespace

bool write_tokenizer_from_gguf(const io::GgufFile& f, const std::string& out_dir, int64_t context_length) {
  const io::GgufValue* model = f.find("tokenizer.ggml.model");
  if (!model) return false;
  const std::string& file = f.path();
  const std::string kind = f.get_string("tokenizer.ggml.model");
  if (kind != "gpt2" && kind != "llama")
    throw Error(file + ": tokenizer.ggml.model \"" + model->s +
                "\": only \"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece BPE) can be imported");
  const bool spm = kind == "llama";
  const std::string pre = f.find("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "default";
  const std::string pattern = spm ? "" : pattern_for_pre(pre);
  if (!spm && pattern.empty())
    throw Error(file + ": tokenizer.ggml.pre \"" + pre + "\" is not one lmforge can rebuild (" + known_names() + ")");
  const io::GgufValue& tokens = f.at("tokenizer.ggml.tokens");
  if (tokens.type != GgufType::ARRAY || tokens.elem != GgufType::STRING)
    throw Error(file + ": tokenizer.ggml.tokens must be an array of strings");
  std::vector<int64_t> types(tokens.strings.size(), kNormal);
  if (const io::GgufValue* tt = f.find("tokenizer.ggml.token_type")) {
    if (tt->type != GgufType::ARRAY || !is_integer_type(tt->elem) || tt->ints.size() != tokens.strings.size())
      throw Error(file + ": tokenizer.ggml.token_type must be an integer array as long as tokenizer.ggml.tokens");
    types = tt->ints;
  }
  json merges = json::array();
  if (spm) {
    merges = spm_merges(f, tokens.strings, types);
  } else if (const io::GgufValue* m = f.find("tokenizer.ggml.merges")) {
    if (m->type != GgufType::ARRAY || m->elem != GgufType::STRING)
      throw Error(file + ": tokenizer.ggml.merges must be an array of strings");
    for (const std::string& s : m->strings) merges.push_back(s);
  }

  json vocab = json::object();
  json added = json::array();
  for (size_t id = 0; id < tokens.strings.size(); ++id) {
    const std::string& t = tokens.strings[id];
    if (types[id] == kUnused) continue;
    if (vocab.contains(t)) throw Error(file + ": tokenizer.ggml.tokens: token \"" + t + "\" appears twice");
    vocab[t] = id;
    if (types[id] == kControl || types[id] == kUserDefined || (spm && types[id] == kUnknown))
      added.push_back({{"id", id},
                       {"content", t},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", types[id] != kUserDefined}});
  }
  auto token_id = [&](const char* key) -> int64_t {
    if (!f.find(key)) return -1;
    const int64_t id = f.get_int(key);
    if (id < 0 || static_cast<size_t>(id) >= tokens.strings.size())
      throw Error(file + ": " + key + " = " + std::to_string(id) + " is not a token id");
    return id;
  };
  const int64_t bos = token_id("tokenizer.ggml.bos_token_id"), eos = token_id("tokenizer.ggml.eos_token_id");
  // llama.cpp's defaults when the keys are absent: BOS for SentencePiece vocabularies, none for gpt2 ones.
  const bool add_bos =
      f.find("tokenizer.ggml.add_bos_token") ? f.get_bool("tokenizer.ggml.add_bos_token") : spm && bos >= 0;
  const bool add_eos = f.find("tokenizer.ggml.add_eos_token") && f.get_bool("tokenizer.ggml.add_eos_token");
  if (add_bos && bos < 0) throw Error(file + ": tokenizer.ggml.add_bos_token is true but there is no bos_token_id");
  if (add_eos && eos < 0) throw Error(file + ": tokenizer.ggml.add_eos_token is true but there is no eos_token_id");

  json post =
      spm ? json()
          : json{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  if (add_bos || add_eos) {
    json single = json::array(), pair = json::array(), special = json::object();
    auto special_item = [&](int64_t id) {
      const std::string& t = tokens.strings[static_cast<size_t>(id)];
      special[t] = {{"id", t}, {"ids", {id}}, {"tokens", {t}}};
      return json{{"SpecialToken", {{"id", t}, {"type_id", 0}}}};
    };
    if (add_bos) single.push_back(special_item(bos));
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (add_eos) single.push_back(special_item(eos));
    pair = single;
    if (add_bos) pair.push_back(special_item(bos));
    pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
    if (add_eos) pair.push_back(special_item(eos));
    post = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", special}};
  }
  int64_t unk = -1;
  for (size_t id = 0; id < types.size() && unk < 0; ++id)
    if (types[id] == kUnknown) unk = static_cast<int64_t>(id);
  if (spm && f.find("tokenizer.ggml.unknown_token_id")) unk = token_id("tokenizer.ggml.unknown_token_id");
  json tj =
      spm ? spm_tokenizer_json(f, added, post, vocab, merges, unk >= 0 ? tokens.strings[static_cast<size_t>(unk)] : "")
          : json{{"version", "1.0"},
                 {"truncation", nullptr},
                 {"padding", nullptr},
                 {"added_tokens", added},
                 {"normalizer", nullptr},
                 {"pre_tokenizer", json::parse(tokenizer::BpeTrainer::pre_tokenizer_json(pattern))},
                 {"post_processor", post},
                 {"decoder",
                  {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
                 {"model",
                  {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   // llama.cpp takes a whole pre-token that is in the vocabulary as one token for llama-bpe (as
                   // Llama-3's tokenizer.json says with ignore_merges), and runs the merges for the others.
                   {"ignore_merges", pattern == "llama3"},
                   {"vocab", vocab},
                   {"merges", merges}}}};
  (void)pattern;
  const std::string text = tj.dump(2);
  // Checked before anything is written: a tokenizer we cannot load again is an error, not a file.
  (void)tokenizer::Tokenizer::from_json(text, file + " (rebuilt tokenizer.json)");
  io::write_file_atomic((fs::path(out_dir) / "tokenizer.json").string(), text + "\n");

  json tc = {{"tokenizer_class", "PreTrainedTokenizerFast"},
             {"add_bos_token", add_bos},
             {"add_eos_token", add_eos},
             {"model_max_length", context_length}};
  if (bos >= 0) tc["bos_token"] = tokens.strings[static_cast<size_t>(bos)];
  if (eos >= 0) tc["eos_token"] = tokens.strings[static_cast<size_t>(eos)];
  if (f.find("tokenizer.chat_template")) tc["chat_template"] = f.get_string("tokenizer.chat_template");
  io::write_file_atomic((fs::path(out_dir) / "tokenizer_config.json").string(), tc.dump(2) + "\n");
  return true;
}

}  // namespace lmforge::exporter
