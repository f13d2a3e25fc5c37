// Tokenizer: tokenizer.json loading and the encode/decode paths (HF tokenizers' TokenizerImpl, byte-level BPE only).
#include "lmforge/tokenizer/tokenizer.h"

#include <exception>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "lmforge/core/error.h"
#include "lmforge/kernels/thread_pool.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

namespace lmforge::tokenizer {

using nlohmann::json;

struct Tokenizer::Impl {
  std::string name;
  std::unique_ptr<Normalizer> normalizer;
  PreTokenizerChain pre;
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>> added_by_content;
  std::unordered_map<uint32_t, size_t> added_by_id;  // id -> index in `added`
  AddedTokenMatcher raw_matcher;                     // tokens with normalized=false, matched in the input text
  AddedTokenMatcher normalized_matcher;              // tokens with normalized=true, matched in normalized text
  std::vector<uint32_t> template_prefix, template_suffix;
  bool byte_level_decoder = false;
  std::string post_processor_desc = "null", decoder_desc = "null";

  void parse(const json& root, const std::string& file);
  void parse_added_tokens(const json& list, const Where& w);
  void parse_post_processor(const json& j, const Where& w);
  void encode_pretokenize(std::string_view s, std::vector<uint32_t>& out) const;
  void encode_segment(std::string_view seg, std::vector<uint32_t>& out) const;
};

namespace {

// The ids a template item "SpecialToken" stands for, from the processor's special_tokens table.
std::vector<uint32_t> special_ids(const json& item, const json& table, const Where& w) {
  std::string name = string_field(item, "id", w);
  if (!table.is_object() || !table.contains(name)) fail(w.at("id"), "\"" + name + "\" is not in special_tokens");
  const json& ids = field(table[name], "ids", w.at("special_tokens").at(name));
  if (!ids.is_array()) fail(w.at("special_tokens").at(name).at("ids"), "must be an array of ids");
  std::vector<uint32_t> out;
  for (const json& id : ids) {
    if (!id.is_number_unsigned()) fail(w.at("special_tokens").at(name).at("ids"), "must be an array of ids");
    out.push_back(id.get<uint32_t>());
  }
  return out;
}

// Deepest nesting of arrays and objects in JSON text. Components nest (Sequence of Sequence ...) and are built
// recursively, so a hostile file must not get to nest without bound.
size_t json_nesting(std::string_view s) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

constexpr size_t kMaxJsonNesting = 64;

}  // namespace

void Tokenizer::Impl::parse_post_processor(const json& j, const Where& w) {
  if (j.is_null()) return;
  if (!j.is_object()) fail(w, "must be an object or null");
  std::string type = string_field(j, "type", w);
  if (type == "ByteLevel") {
    post_processor_desc = post_processor_desc == "null" ? "ByteLevel" : post_processor_desc + "+ByteLevel";
    return;  // only trims offsets; ids are unchanged
  }
  if (type == "Sequence") {
    const json& list = field(j, "processors", w);
    if (!list.is_array()) fail(w.at("processors"), "must be an array");
    for (size_t i = 0; i < list.size(); ++i) parse_post_processor(list[i], w.at("processors").index(i));
    return;
  }
  if (type == "TemplateProcessing") {
    const json& single = field(j, "single", w);
    if (!single.is_array()) fail(w.at("single"), "must be an array");
    const json& table = j.contains("special_tokens") ? j["special_tokens"] : json::object();
    bool seen_a = false;
    for (size_t i = 0; i < single.size(); ++i) {
      Where iw = w.at("single").index(i);
      const json& item = single[i];
      if (item.contains("Sequence")) {
        std::string id = string_field(item["Sequence"], "id", iw.at("Sequence"));
        if (id != "A" || seen_a) fail(iw.at("Sequence"), "a single-sequence template must contain sequence A once");
        seen_a = true;
      } else if (item.contains("SpecialToken")) {
        auto ids = special_ids(item["SpecialToken"], table, w);
        auto& dst = seen_a ? template_suffix : template_prefix;
        dst.insert(dst.end(), ids.begin(), ids.end());
      } else {
        fail(iw, "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    if (!seen_a) fail(w.at("single"), "has no {\"Sequence\": {\"id\": \"A\"}}");
    post_processor_desc = post_processor_desc == "null" ? "TemplateProcessing" : post_processor_desc + "+Template";
    return;
  }
  fail(w.at("type"),
       "unsupported post-processor \"" + type + "\" (supported: TemplateProcessing, ByteLevel, Sequence)");
}

void Tokenizer::Impl::parse_added_tokens(const json& list, const Where& w) {
  if (list.is_null()) return;
  if (!list.is_array()) fail(w, "must be an array");
  bool has_added = false;
  uint32_t max_added = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    Where tw = w.index(i);
    const json& t = list[i];
    if (!t.is_object()) fail(tw, "must be an object");
    AddedToken a;
    const json& id = field(t, "id", tw);
    if (!id.is_number_unsigned() || id.get<uint64_t>() >= (uint64_t{1} << 31))
      fail(tw.at("id"), "must be an integer in [0, 2^31)");
    a.id = id.get<uint32_t>();
    a.content = string_field(t, "content", tw);
    if (unicode::valid_utf8_prefix(a.content) != a.content.size()) fail(tw.at("content"), "is not valid UTF-8");
    a.special = bool_field(t, "special", false, tw);
    a.single_word = bool_field(t, "single_word", false, tw);
    a.lstrip = bool_field(t, "lstrip", false, tw);
    a.rstrip = bool_field(t, "rstrip", false, tw);
    a.normalized = bool_field(t, "normalized", !a.special, tw);
    // HF's add_tokens ignores the written id: a token the model has takes the model's id, any other the next id
    // after the model's vocabulary and the tokens added so far. For a consistent file the ids are the same.
    if (a.content.empty() || added_by_content.count(a.content)) continue;
    auto in_model = model->vocab().find(a.content);
    if (in_model != model->vocab().end()) {
      a.id = in_model->second;
    } else {
      auto model_size = static_cast<uint32_t>(model->vocab().size());
      a.id = !has_added ? model_size : (max_added >= model_size || model_size == 0) ? max_added + 1 : model_size;
    }
    max_added = has_added ? std::max(max_added, a.id) : a.id;
    has_added = true;
    added_by_content[a.content] = a.id;
    added_by_id[a.id] = added.size();
    added.push_back(std::move(a));
  }
}

void Tokenizer::Impl::parse(const json& root, const std::string& file) {
  name = file;
  Where w{file, ""};
  if (!root.is_object()) fail(w, "top level must be a JSON object");
  for (const char* unsupported : {"truncation", "padding"}) {
    auto it = root.find(unsupported);
    if (it != root.end() && !it->is_null())
      fail(w.at(unsupported), "is not supported (must be null; truncate or pad after encoding)");
  }
  model = std::make_unique<BpeModel>(field(root, "model", w), w.at("model"));
  normalizer = make_normalizer(root.value("normalizer", json()), w.at("normalizer"));
  pre = make_pre_tokenizer(root.value("pre_tokenizer", json()), w.at("pre_tokenizer"));
  parse_added_tokens(root.value("added_tokens", json()), w.at("added_tokens"));
  parse_post_processor(root.value("post_processor", json()), w.at("post_processor"));

  const json dec = root.value("decoder", json());
  if (!dec.is_null()) {
    if (!dec.is_object()) fail(w.at("decoder"), "must be an object or null");
    std::string type = string_field(dec, "type", w.at("decoder"));
    if (type != "ByteLevel")
      fail(w.at("decoder").at("type"), "unsupported decoder \"" + type + "\" (supported: ByteLevel)");
    byte_level_decoder = true;
    decoder_desc = "ByteLevel";
  }

  std::vector<std::string> raw_patterns, norm_patterns;
  std::vector<const AddedToken*> raw_tokens, norm_tokens;
  for (const AddedToken& a : added) {
    if (a.normalized) {
      norm_patterns.push_back(normalizer ? normalizer->apply(a.content) : a.content);
      norm_tokens.push_back(&a);
    } else {
      raw_patterns.push_back(a.content);
      raw_tokens.push_back(&a);
    }
  }
  raw_matcher.build(std::move(raw_patterns), std::move(raw_tokens));
  normalized_matcher.build(std::move(norm_patterns), std::move(norm_tokens));
}

void Tokenizer::Impl::encode_pretokenize(std::string_view s, std::vector<uint32_t>& out) const {
  if (s.empty()) return;
  if (pre.empty()) {
    model->encode_piece(s, false, out);
    return;
  }
  std::string buf(s);
  std::vector<Piece> pieces{{0, static_cast<uint32_t>(s.size())}}, next;
  for (const auto& step : pre.steps) {
    next.clear();
    step->split(buf, pieces, next);
    pieces.swap(next);
  }
  std::string_view all = buf;
  for (const Piece& p : pieces) model->encode_piece(all.substr(p.off, p.len), pre.byte_level, out);
}

void Tokenizer::Impl::encode_segment(std::string_view seg, std::vector<uint32_t>& out) const {
  std::string normalized;
  if (normalizer) {
    normalized = normalizer->apply(std::string(seg));
    seg = normalized;
  }
  if (seg.empty()) return;
  if (normalized_matcher.empty()) {
    encode_pretokenize(seg, out);
    return;
  }
  std::vector<AddedTokenMatcher::Split> splits;
  normalized_matcher.split(seg, splits);
  for (const auto& sp : splits) {
    if (sp.id >= 0) {
      out.push_back(static_cast<uint32_t>(sp.id));
    } else {
      encode_pretokenize(seg.substr(sp.start, sp.end - sp.start), out);
    }
  }
}

std::string repair_utf8(std::string_view s) {
  return unicode::repair_utf8(s);
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& name) {
  LMF_CHECK(json_nesting(json_text) <= kMaxJsonNesting, name, ": JSON nested deeper than ", kMaxJsonNesting,
            " levels; a tokenizer.json needs far fewer");
  json root = json::parse(json_text, nullptr, false);
  if (root.is_discarded()) {
    // Parse again with exceptions for nlohmann's position message.
    try {
      root = json::parse(json_text);
    } catch (const json::exception& e) {
      throw Error(name + ": not valid JSON: " + e.what());
    }
  }
  auto impl = std::make_unique<Impl>();
  try {
    impl->parse(root, name);
  } catch (const json::exception& e) {
    throw Error(name + ": unexpected JSON value: " + e.what());
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LMF_CHECK(in, path, ": cannot open tokenizer file");
  std::ostringstream ss;
  ss << in.rdbuf();
  LMF_CHECK(!in.bad(), path, ": read error");
  return from_json(ss.str(), path);
}

void Tokenizer::encode_into(std::string_view text, std::vector<uint32_t>& out, const EncodeOptions& opt) const {
  // Pieces address the text with 32-bit offsets (half the memory traffic of size_t in the hot loops).
  LMF_CHECK(text.size() < (size_t{1} << 31), "input of ", text.size(),
            " bytes is too long to encode at once (limit 2 GiB)");
  std::string repaired;
  size_t valid = unicode::valid_utf8_prefix(text);
  if (valid != text.size()) {
    LMF_CHECK(opt.invalid_utf8 == InvalidUtf8::kReplace, "input is not valid UTF-8 at byte ", valid);
    repaired = unicode::repair_utf8(text);
    text = repaired;
  }
  if (opt.add_special_tokens) out.insert(out.end(), impl_->template_prefix.begin(), impl_->template_prefix.end());
  if (impl_->raw_matcher.empty()) {
    impl_->encode_segment(text, out);
  } else {
    std::vector<AddedTokenMatcher::Split> splits;
    impl_->raw_matcher.split(text, splits);
    for (const auto& sp : splits) {
      if (sp.id >= 0) {
        out.push_back(static_cast<uint32_t>(sp.id));
      } else {
        impl_->encode_segment(text.substr(sp.start, sp.end - sp.start), out);
      }
    }
  }
  if (opt.add_special_tokens) out.insert(out.end(), impl_->template_suffix.begin(), impl_->template_suffix.end());
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& opt) const {
  std::vector<uint32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_into(text, out, opt);
  return out;
}

std::vector<std::vector<uint32_t>> Tokenizer::encode_batch(const std::vector<std::string_view>& texts,
                                                           const EncodeOptions& opt) const {
  std::vector<std::vector<uint32_t>> out(texts.size());
  std::exception_ptr first_error;
  std::mutex error_mu;
  parallel_for(static_cast<int64_t>(texts.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        encode_into(texts[i], out[i], opt);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!first_error) first_error = std::current_exception();
      }
    }
  });
  if (first_error) std::rethrow_exception(first_error);
  return out;
}

std::string Tokenizer::decode_bytes(std::span<const uint32_t> ids, bool skip_special_tokens) const {
  std::string out;
  const Impl& m = *impl_;
  std::string bytes;
  for (size_t k = 0; k < ids.size(); ++k) {
    uint32_t id = ids[k];
    const std::string* tok = nullptr;
    auto a = m.added_by_id.find(id);
    if (a != m.added_by_id.end()) {
      const AddedToken& t = m.added[a->second];
      if (skip_special_tokens && t.special) continue;
      tok = &t.content;
    } else if (m.model->has_id(id)) {
      tok = &m.model->id_to_token(id);
    } else {
      throw Error(detail::concat("id ", id, " (position ", k, ") is not in the tokenizer (vocabulary size ",
                                 vocab_size(), ")"));
    }
    if (!m.byte_level_decoder) {
      if (!out.empty()) out += ' ';  // HF joins tokens with spaces when there is no decoder
      out += *tok;
      continue;
    }
    // ByteLevel decoder: every character maps back to a byte, or the token is kept as it is written.
    bytes.clear();
    bool all = true;
    std::string_view s = *tok;
    for (size_t i = 0; i < s.size();) {
      int b = unicode::cp_to_byte(unicode::next_cp(s, i));
      if (b < 0) {
        all = false;
        break;
      }
      bytes += static_cast<char>(b);
    }
    out += all ? bytes : *tok;
  }
  return out;
}

std::string Tokenizer::decode(std::span<const uint32_t> ids, bool skip_special_tokens) const {
  return unicode::repair_utf8(decode_bytes(ids, skip_special_tokens));
}

size_t Tokenizer::vocab_size() const {
  size_t n = impl_->model->id_bound();
  for (const AddedToken& a : impl_->added) n = std::max<size_t>(n, a.id + size_t{1});
  return n;
}

std::optional<uint32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto a = impl_->added_by_content.find(token);
  if (a != impl_->added_by_content.end()) return a->second;
  auto v = impl_->model->vocab().find(token);
  if (v != impl_->model->vocab().end()) return v->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::id_to_token(uint32_t id) const {
  auto a = impl_->added_by_id.find(id);
  if (a != impl_->added_by_id.end()) return impl_->added[a->second].content;
  if (impl_->model->has_id(id)) return impl_->model->id_to_token(id);
  return std::nullopt;
}

bool Tokenizer::is_special(uint32_t id) const {
  auto a = impl_->added_by_id.find(id);
  return a != impl_->added_by_id.end() && impl_->added[a->second].special;
}

std::string Tokenizer::describe_json() const {
  const Impl& m = *impl_;
  json j;
  j["file"] = m.name;
  j["vocab_size"] = vocab_size();
  j["model"] = {{"type", "BPE"},
                {"vocab", m.model->vocab().size()},
                {"merges", m.model->merge_count()},
                {"ignore_merges", m.model->ignore_merges()},
                {"byte_fallback", m.model->byte_fallback()}};
  j["normalizer"] = m.normalizer ? m.normalizer->describe() : "null";
  json pre = json::array();
  for (const auto& s : m.pre.steps) pre.push_back(s->describe());
  j["pre_tokenizer"] = pre;
  j["post_processor"] = m.post_processor_desc;
  j["decoder"] = m.decoder_desc;
  j["bos_eos_template"] = {{"prefix", m.template_prefix}, {"suffix", m.template_suffix}};
  size_t specials = 0;
  json shown = json::array();
  for (const AddedToken& a : m.added) {
    if (!a.special) continue;
    if (++specials <= 16) shown.push_back({{"id", a.id}, {"content", a.content}});
  }
  j["added_tokens"] = m.added.size();
  j["special_tokens"] = specials;
  j["special_tokens_first"] = shown;
  return j.dump();
}

}  // namespace lmforge::tokenizer
