// Pre-tokenizers: Split, Digits, ByteLevel and Sequence, splitting pieces exactly as HF tokenizers'
// NormalizedString::split does (the match list covers the piece; the behavior decides what is kept and merged).
#include <string>

#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

namespace lmforge::tokenizer {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

using nlohmann::json;

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Span {
  uint32_t start, end;
  bool is_match;
};

// Applies `behavior` to the match list of one piece (offsets relative to base) and appends the kept pieces.
void apply_behavior(const std::vector<Span>& spans, Behavior behavior, uint32_t base, std::vector<Piece>& out) {
  auto push = [&](uint32_t s, uint32_t e) {
    if (e > s) out.push_back({base + s, e - s});
  };
  switch (behavior) {
    case Behavior::kIsolated:
      for (const Span& sp : spans) push(sp.start, sp.end);
      return;
    case Behavior::kRemoved:
      for (const Span& sp : spans)
        if (!sp.is_match) push(sp.start, sp.end);
      return;
    case Behavior::kContiguous:
    case Behavior::kMergedWithPrevious: {
      std::vector<std::pair<uint32_t, uint32_t>> acc;
      bool previous_match = false;
      for (const Span& sp : spans) {
        bool merge = behavior == Behavior::kContiguous ? sp.is_match == previous_match : sp.is_match && !previous_match;
        if (merge && !acc.empty()) {
          acc.back().second = sp.end;
        } else {
          acc.emplace_back(sp.start, sp.end);
        }
        previous_match = sp.is_match;
      }
      for (auto [s, e] : acc) push(s, e);
      return;
    }
    case Behavior::kMergedWithNext: {
      std::vector<std::pair<uint32_t, uint32_t>> acc;
      bool previous_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& sp = spans[k];
        if (sp.is_match && !previous_match && !acc.empty()) {
          acc.back().first = sp.start;
        } else {
          acc.emplace_back(sp.start, sp.end);
        }
        previous_match = sp.is_match;
      }
      for (size_t k = acc.size(); k-- > 0;) push(acc[k].first, acc[k].second);
      return;
    }
  }
}

// The match list of HF's Pattern::find_matches: matches and the gaps between them, covering the whole piece.
void regex_spans(const Regex& re, std::string_view s, bool invert, std::vector<Span>& spans,
                 std::vector<std::pair<uint32_t, uint32_t>>& scratch) {
  spans.clear();
  if (s.empty()) {
    spans.push_back({0, 0, invert});
    return;
  }
  re.find_all(s, scratch);
  uint32_t prev = 0;
  for (auto [b, e] : scratch) {
    if (b != prev) spans.push_back({prev, b, invert});
    spans.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != s.size()) spans.push_back({prev, static_cast<uint32_t>(s.size()), invert});
}

class Split : public PreTokenizer {
 public:
  Split(const std::string& pattern, bool literal, Behavior b, bool invert, const Where& w)
      : re_(pattern, literal, w.str()), behavior_(b), invert_(invert) {}
  void split(std::string& buf, const std::vector<Piece>& in, std::vector<Piece>& out, bool) const override {
    std::vector<Span> spans;
    std::vector<std::pair<uint32_t, uint32_t>> scratch;
    for (const Piece& p : in) {
      regex_spans(re_, std::string_view(buf).substr(p.off, p.len), invert_, spans, scratch);
      apply_behavior(spans, behavior_, p.off, out);
    }
  }
  std::string describe() const override { return "Split"; }

 private:
  Regex re_;
  Behavior behavior_;
  bool invert_;
};

class Digits : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  void split(std::string& buf, const std::vector<Piece>& in, std::vector<Piece>& out, bool) const override {
    std::vector<Span> spans;
    for (const Piece& p : in) {
      // HF's char predicate pattern: each numeric character is a match of its own.
      spans.clear();
      std::string_view s = std::string_view(buf).substr(p.off, p.len);
      size_t i = 0;
      uint32_t last = 0;
      while (i < s.size()) {
        size_t start = i;
        char32_t cp = unicode::next_cp(s, i);
        if (unicode::is_numeric(cp)) {
          if (last != start) spans.push_back({last, static_cast<uint32_t>(start), false});
          spans.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(i), true});
          last = static_cast<uint32_t>(i);
        }
      }
      if (last != s.size()) spans.push_back({last, static_cast<uint32_t>(s.size()), false});
      if (s.empty()) spans.push_back({0, 0, false});
      apply_behavior(spans, individual_ ? Behavior::kIsolated : Behavior::kContiguous, p.off, out);
    }
  }
  std::string describe() const override { return individual_ ? "Digits(individual)" : "Digits"; }

 private:
  bool individual_;
};

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, const Where& w)
      : add_prefix_space_(add_prefix_space),
        re_(use_regex ? std::make_unique<Regex>(kGpt2Pattern, false, w.str()) : nullptr) {}
  void split(std::string& buf, const std::vector<Piece>& in, std::vector<Piece>& out, bool) const override {
    std::vector<Span> spans;
    std::vector<std::pair<uint32_t, uint32_t>> scratch;
    for (Piece p : in) {
      if (add_prefix_space_ && (p.len == 0 || buf[p.off] != ' ')) {
        std::string moved(1, ' ');
        moved.append(buf, p.off, p.len);
        p = {static_cast<uint32_t>(buf.size()), static_cast<uint32_t>(moved.size())};
        buf += moved;
      }
      if (!re_) {
        if (p.len) out.push_back(p);
        continue;
      }
      regex_spans(*re_, std::string_view(buf).substr(p.off, p.len), false, spans, scratch);
      apply_behavior(spans, Behavior::kIsolated, p.off, out);
    }
  }
  std::string describe() const override {
    return std::string("ByteLevel(add_prefix_space=") + (add_prefix_space_ ? "true" : "false") +
           ", use_regex=" + (re_ ? "true" : "false") + ")";
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;
};

// SentencePiece-style: spaces become the replacement character (U+2581 by default), one is prepended (always, or
// only at the start of the input: "first"), and with split the text breaks before each replacement character
// (MergedWithNext), as HF's Metaspace pre-tokenizer does.
class Metaspace : public PreTokenizer {
 public:
  enum class Scheme { kAlways, kFirst, kNever };
  Metaspace(std::string rep, Scheme scheme, bool split) : rep_(std::move(rep)), scheme_(scheme), split_(split) {}
  void split(std::string& buf, const std::vector<Piece>& in, std::vector<Piece>& out, bool at_start) const override {
    std::vector<Span> spans;
    for (const Piece& p : in) {
      std::string t;
      const std::string_view s = std::string_view(buf).substr(p.off, p.len);
      const bool prepend = (scheme_ == Scheme::kAlways || (scheme_ == Scheme::kFirst && at_start && p.off == 0)) &&
                           s.substr(0, 1) != " " && s.substr(0, rep_.size()) != rep_;
      if (prepend) t = rep_;
      for (char c : s) {
        if (c == ' ') {
          t += rep_;
        } else {
          t += c;
        }
      }
      const Piece q{static_cast<uint32_t>(buf.size()), static_cast<uint32_t>(t.size())};
      buf += t;
      if (!split_) {
        if (q.len) out.push_back(q);
        continue;
      }
      spans.clear();
      uint32_t last = 0;
      for (size_t i = t.find(rep_); i != std::string::npos; i = t.find(rep_, i + rep_.size())) {
        if (i != last) spans.push_back({last, static_cast<uint32_t>(i), false});
        spans.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(i + rep_.size()), true});
        last = static_cast<uint32_t>(i + rep_.size());
      }
      if (last != t.size()) spans.push_back({last, static_cast<uint32_t>(t.size()), false});
      apply_behavior(spans, Behavior::kMergedWithNext, q.off, out);
    }
  }
  std::string describe() const override {
    return std::string("Metaspace(prepend_scheme=") +
           (scheme_ == Scheme::kAlways  ? "always"
            : scheme_ == Scheme::kFirst ? "first"
                                        : "never") +
           ", split=" + (split_ ? "true" : "false") + ")";
  }

 private:
  std::string rep_;
  Scheme scheme_;
  bool split_;
};

Behavior parse_behavior(const json& j, const Where& w) {
  std::string b = string_field(j, "behavior", w);
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  fail(w.at("behavior"),
       "unknown behavior \"" + b + "\" (Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

Metaspace::Scheme parse_prepend_scheme(const json& j, const Where& w) {
  // Files from tokenizers < 0.19 say add_prefix_space (true: always) instead.
  if (!j.contains("prepend_scheme"))
    return bool_field(j, "add_prefix_space", true, w) ? Metaspace::Scheme::kAlways : Metaspace::Scheme::kNever;
  const std::string s = string_field(j, "prepend_scheme", w);
  if (s == "always") return Metaspace::Scheme::kAlways;
  if (s == "first") return Metaspace::Scheme::kFirst;
  if (s == "never") return Metaspace::Scheme::kNever;
  fail(w.at("prepend_scheme"), "unknown prepend_scheme \"" + s + "\" (always, first or never)");
}

}  // namespace

std::string metaspace_replacement(const json& j, const Where& w) {
  const std::string r = j.contains("replacement") ? string_field(j, "replacement", w) : "\u2581";
  size_t i = 0;
  if (r.empty() || (unicode::next_cp(r, i), i != r.size())) fail(w.at("replacement"), "must be a single character");
  return r;
}

namespace {

void add_steps(const json& j, const Where& w, PreTokenizerChain& chain) {
  if (j.is_null()) return;
  if (!j.is_object()) fail(w, "must be an object or null");
  if (chain.byte_level) fail(w, "a pre-tokenizer after ByteLevel is not supported (ByteLevel must come last)");
  std::string type = string_field(j, "type", w);
  if (type == "Sequence") {
    const json& list = field(j, "pretokenizers", w);
    if (!list.is_array()) fail(w.at("pretokenizers"), "must be an array");
    for (size_t i = 0; i < list.size(); ++i) add_steps(list[i], w.at("pretokenizers").index(i), chain);
    return;
  }
  if (type == "Split") {
    const json& p = field(j, "pattern", w);
    bool invert = bool_field(j, "invert", false, w);
    Behavior b = parse_behavior(j, w);
    if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      chain.steps.push_back(std::make_unique<Split>(p["String"].get<std::string>(), true, b, invert, w.at("pattern")));
    } else if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
      chain.steps.push_back(std::make_unique<Split>(p["Regex"].get<std::string>(), false, b, invert, w.at("pattern")));
    } else {
      fail(w.at("pattern"), "must be {\"String\": ...} or {\"Regex\": ...}");
    }
    return;
  }
  if (type == "Digits") {
    chain.steps.push_back(std::make_unique<Digits>(bool_field(j, "individual_digits", false, w)));
    return;
  }
  if (type == "ByteLevel") {
    chain.steps.push_back(std::make_unique<ByteLevel>(bool_field(j, "add_prefix_space", true, w),
                                                      bool_field(j, "use_regex", true, w), w));
    chain.byte_level = true;
    return;
  }
  if (type == "Metaspace") {
    chain.steps.push_back(std::make_unique<Metaspace>(metaspace_replacement(j, w), parse_prepend_scheme(j, w),
                                                      bool_field(j, "split", true, w)));
    return;
  }
  fail(w.at("type"),
       "unsupported pre-tokenizer \"" + type + "\" (supported: ByteLevel, Split, Digits, Metaspace, Sequence)");
}

}  // namespace

PreTokenizerChain make_pre_tokenizer(const json& j, const Where& w) {
  PreTokenizerChain chain;
  add_steps(j, w, chain);
  return chain;
}

}  // namespace lmforge::tokenizer
