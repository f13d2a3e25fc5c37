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

  // Decoder steps other than ByteLevel (which byte_level_decoder stands for), in order.
  struct DecodeStep {
    enum Kind { kReplace, kByteFallback, kFuse, kStrip, kMetaspace } kind;
    std::string pattern, content;        // Replace (literal pattern), Strip (content), Metaspace (replacement)
    std::shared_ptr<const Regex> regex;  // Replace with a Regex pattern
    size_t start = 0, stop = 0;          // Strip
    bool prepend = true;                 // Metaspace: prepend_scheme is not "never"
  };
  std::vector<DecodeStep> decode_steps;

  void parse(const json& root, const std::string& file);
  void parse_added_tokens(const json& list, const Where& w);
  void parse_post_processor(const json& j, const Where& w);
  void parse_decoder(const json& j, const Where& w);
  void add_decode_step(const json& j, const Where& w);
  void encode_pretokenize(std::string_view s, std::vector<uint32_t>& out, bool at_start) const;
  void encode_segment(std::string_view seg, std::vector<uint32_t>& out, bool at_start) const;
  // Runs decode_steps over the tokens. `text`: HF's decode (invalid byte runs become U+FFFD, the start of the text
  // is stripped as the decoder says); otherwise the bytes of the tokens as a continuation of a text (byte tokens
  // raw, no start-of-text stripping), for streaming.
  std::string run_decode_steps(std::vector<std::string> tokens, bool text) const;
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

  parse_decoder(root.value("decoder", json()), w.at("decoder"));

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

void Tokenizer::Impl::parse_decoder(const json& dec, const Where& w) {
  if (dec.is_null()) return;
  if (!dec.is_object()) fail(w, "must be an object or null");
  const std::string type = string_field(dec, "type", w);
  if (type == "ByteLevel") {
    byte_level_decoder = true;
    decoder_desc = "ByteLevel";
    return;
  }
  if (type == "Sequence") {
    const json& list = field(dec, "decoders", w);
    if (!list.is_array()) fail(w.at("decoders"), "must be an array");
    for (size_t i = 0; i < list.size(); ++i) {
      const Where wi = w.at("decoders").index(i);
      if (!list[i].is_object()) fail(wi, "must be an object");
      if (string_field(list[i], "type", wi) == "Sequence") fail(wi.at("type"), "nested Sequence is not supported");
      add_decode_step(list[i], wi);
    }
  } else {
    add_decode_step(dec, w);
  }
  decoder_desc.clear();
  for (const DecodeStep& d : decode_steps) {
    static const char* const names[] = {"Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"};
    if (!decoder_desc.empty()) decoder_desc += '+';
    decoder_desc += names[d.kind];
  }
}

void Tokenizer::Impl::add_decode_step(const json& j, const Where& w) {
  const std::string type = string_field(j, "type", w);
  DecodeStep d{};
  if (type == "Replace") {
    d.kind = DecodeStep::kReplace;
    const json& p = field(j, "pattern", w);
    d.content = string_field(j, "content", w);
    if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      d.pattern = p["String"].get<std::string>();
      if (d.pattern.empty()) fail(w.at("pattern"), "must not be empty");
    } else if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
      d.regex = std::make_shared<const Regex>(p["Regex"].get<std::string>(), false, w.at("pattern").str());
    } else {
      fail(w.at("pattern"), "must be {\"String\": ...} or {\"Regex\": ...}");
    }
  } else if (type == "ByteFallback") {
    d.kind = DecodeStep::kByteFallback;
  } else if (type == "Fuse") {
    d.kind = DecodeStep::kFuse;
  } else if (type == "Strip") {
    d.kind = DecodeStep::kStrip;
    d.content = string_field(j, "content", w);
    size_t i = 0;
    if (d.content.empty() || (unicode::next_cp(d.content, i), i != d.content.size()))
      fail(w.at("content"), "must be a single character");
    for (const char* k : {"start", "stop"}) {
      const json& v = field(j, k, w);
      if (!v.is_number_unsigned() || v.get<uint64_t>() > (1u << 20)) fail(w.at(k), "must be a small unsigned integer");
      (std::string(k) == "start" ? d.start : d.stop) = v.get<size_t>();
    }
  } else if (type == "Metaspace") {
    d.kind = DecodeStep::kMetaspace;
    d.content = metaspace_replacement(j, w);
    if (j.contains("prepend_scheme")) {
      const std::string sch = string_field(j, "prepend_scheme", w);
      if (sch != "always" && sch != "first" && sch != "never")
        fail(w.at("prepend_scheme"), "unknown prepend_scheme \"" + sch + "\" (always, first or never)");
      d.prepend = sch != "never";
    } else {
      d.prepend = bool_field(j, "add_prefix_space", true, w);
    }
  } else {
    fail(w.at("type"), "unsupported decoder \"" + type +
                           "\" (supported: ByteLevel; Replace, ByteFallback, Fuse, Strip, Metaspace and a Sequence "
                           "of them)");
  }
  decode_steps.push_back(std::move(d));
}

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t last = 0;
  for (size_t i = s.find(from); i != std::string::npos; i = s.find(from, last)) {
    out.append(s, last, i - last);
    out += to;
    last = i + from.size();
  }
  if (last == 0) return;
  out.append(s, last, std::string::npos);
  s.swap(out);
}

}  // namespace

std::string Tokenizer::Impl::run_decode_steps(std::vector<std::string> tokens, bool text) const {
  std::vector<std::string> next;
  bool fused = false;
  std::vector<std::pair<uint32_t, uint32_t>> matches;
  for (const DecodeStep& d : decode_steps) {
    switch (d.kind) {
      case DecodeStep::kReplace:
        for (std::string& t : tokens) {
          if (!d.regex) {
            replace_all(t, d.pattern, d.content);
            continue;
          }
          if (unicode::valid_utf8_prefix(t) != t.size()) continue;  // raw bytes from ByteFallback: no pattern
          d.regex->find_all(t, matches);
          if (matches.empty()) continue;
          std::string out;
          uint32_t last = 0;
          for (auto [b, e] : matches) {
            out.append(t, last, b - last);
            out += d.content;
            last = e;
          }
          out.append(t, last, std::string::npos);
          t.swap(out);
        }
        break;
      case DecodeStep::kByteFallback: {
        next.clear();
        std::string run;
        size_t run_tokens = 0;
        auto flush = [&] {
          if (run_tokens == 0) return;
          if (!text || unicode::valid_utf8_prefix(run) == run.size()) {
            next.push_back(run);
          } else {
            for (size_t k = 0; k < run_tokens; ++k) next.emplace_back("\xEF\xBF\xBD");  // U+FFFD per byte
          }
          run.clear();
          run_tokens = 0;
        };
        for (std::string& t : tokens) {
          const int b = byte_token_value(t);
          if (b >= 0) {
            run += static_cast<char>(b);
            ++run_tokens;
          } else {
            flush();
            next.push_back(std::move(t));
          }
        }
        flush();
        tokens.swap(next);
        break;
      }
      case DecodeStep::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        fused = true;
        break;
      }
      case DecodeStep::kStrip:
        // After Fuse it strips the ends of the whole text: a continuation keeps them.
        if (!text && fused) break;
        for (std::string& t : tokens) {
          size_t b = 0, e = t.size();
          for (size_t k = 0; k < d.start && t.compare(b, d.content.size(), d.content) == 0; ++k) b += d.content.size();
          for (size_t k = 0; k < d.stop && e >= b + d.content.size() &&
                             t.compare(e - d.content.size(), d.content.size(), d.content) == 0;
               ++k)
            e -= d.content.size();
          t = t.substr(b, e - b);
        }
        break;
      case DecodeStep::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          // HF drops every replacement character of the first token when a prefix was prepended.
          replace_all(tokens[i], d.content, text && i == 0 && d.prepend ? std::string() : std::string(" "));
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

void Tokenizer::Impl::encode_pretokenize(std::string_view s, std::vector<uint32_t>& out, bool at_start) const {
  if (s.empty()) return;
  if (pre.empty()) {
    model->encode_piece(s, false, out);
    return;
  }
  std::string buf(s);
  std::vector<Piece> pieces{{0, static_cast<uint32_t>(s.size())}}, next;
  for (const auto& step : pre.steps) {
    next.clear();
    step->split(buf, pieces, next, at_start);
    pieces.swap(next);
  }
  std::string_view all = buf;
  for (const Piece& p : pieces) model->encode_piece(all.substr(p.off, p.len), pre.byte_level, out);
}

void Tokenizer::Impl::encode_segment(std::string_view seg, std::vector<uint32_t>& out, bool at_start) const {
  std::string normalized;
  if (normalizer) {
    normalized = normalizer->apply(std::string(seg));
    seg = normalized;
  }
  if (seg.empty()) return;
  if (normalized_matcher.empty()) {
    encode_pretokenize(seg, out, at_start);
    return;
  }
  std::vector<AddedTokenMatcher::Split> splits;
  normalized_matcher.split(seg, splits);
  for (const auto& sp : splits) {
    if (sp.id >= 0) {
      out.push_back(static_cast<uint32_t>(sp.id));
    } else {
      encode_pretokenize(seg.substr(sp.start, sp.end - sp.start), out, at_start && sp.start == 0);
    }
  }
}

int byte_token_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int v = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = t[i];
    const int d = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
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
    impl_->encode_segment(text, out, true);
  } else {
    std::vector<AddedTokenMatcher::Split> splits;
    impl_->raw_matcher.split(text, splits);
    for (const auto& sp : splits) {
      if (sp.id >= 0) {
        out.push_back(static_cast<uint32_t>(sp.id));
      } else {
        impl_->encode_segment(text.substr(sp.start, sp.end - sp.start), out, sp.start == 0);
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

namespace {

// The token strings of `ids` (added tokens by content), special ones left out when asked.
std::vector<const std::string*> token_strings(const Tokenizer& tok, const std::vector<AddedToken>& added,
                                              const std::unordered_map<uint32_t, size_t>& added_by_id,
                                              const BpeModel& model, std::span<const uint32_t> ids, bool skip) {
  std::vector<const std::string*> out;
  out.reserve(ids.size());
  for (size_t k = 0; k < ids.size(); ++k) {
    const uint32_t id = ids[k];
    auto a = added_by_id.find(id);
    if (a != added_by_id.end()) {
      const AddedToken& t = added[a->second];
      if (skip && t.special) continue;
      out.push_back(&t.content);
    } else if (model.has_id(id)) {
      out.push_back(&model.id_to_token(id));
    } else {
      throw Error(detail::concat("id ", id, " (position ", k, ") is not in the tokenizer (vocabulary size ",
                                 tok.vocab_size(), ")"));
    }
  }
  return out;
}

}  // namespace

std::string Tokenizer::decode_bytes(std::span<const uint32_t> ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  const std::vector<const std::string*> toks =
      token_strings(*this, m.added, m.added_by_id, *m.model, ids, skip_special_tokens);
  std::string out;
  if (!m.decode_steps.empty()) {
    std::vector<std::string> t;
    t.reserve(toks.size());
    for (const std::string* s : toks) t.push_back(*s);
    return m.run_decode_steps(std::move(t), false);
  }
  std::string bytes;
  for (const std::string* tok : toks) {
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
  const Impl& m = *impl_;
  if (m.decode_steps.empty()) return unicode::repair_utf8(decode_bytes(ids, skip_special_tokens));
  std::vector<std::string> t;
  for (const std::string* s : token_strings(*this, m.added, m.added_by_id, *m.model, ids, skip_special_tokens))
    t.push_back(*s);
  return unicode::repair_utf8(m.run_decode_steps(std::move(t), true));
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
