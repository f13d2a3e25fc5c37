#include <string>

#include "lmforge/core/error.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

namespace lmforge::tokenizer {

void fail(const Where& w, const std::string& what) {
  throw Error(w.str() + ": " + what);
}

const nlohmann::json& field(const nlohmann::json& j, const char* name, const Where& w) {
  auto it = j.find(name);
  if (it == j.end()) fail(w.at(name), "missing");
  return *it;
}

std::string string_field(const nlohmann::json& j, const char* name, const Where& w) {
  const nlohmann::json& v = field(j, name, w);
  if (!v.is_string()) fail(w.at(name), "must be a string");
  return v.get<std::string>();
}

bool bool_field(const nlohmann::json& j, const char* name, bool fallback, const Where& w) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(w.at(name), "must be true or false");
  return it->get<bool>();
}

namespace {

using nlohmann::json;

class UnicodeForm : public Normalizer {
 public:
  UnicodeForm(unicode::Form f, std::string name) : form_(f), name_(std::move(name)) {}
  std::string apply(std::string s) const override { return unicode::normalize(s, form_); }
  std::string describe() const override { return name_; }

 private:
  unicode::Form form_;
  std::string name_;
};

class Lowercase : public Normalizer {
 public:
  std::string apply(std::string s) const override { return unicode::lowercase(s); }
  std::string describe() const override { return "Lowercase"; }
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string p) : prepend_(std::move(p)) {}
  std::string apply(std::string s) const override { return s.empty() ? s : prepend_ + s; }
  std::string describe() const override { return "Prepend"; }

 private:
  std::string prepend_;
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  std::string apply(std::string s) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        size_t i = unicode::prev_cp_start(s, e), j = i;
        if (!unicode::is_whitespace(unicode::next_cp(s, j))) break;
        e = i;
      }
    }
    return s.substr(b, e - b);
  }
  std::string describe() const override { return "Strip"; }

 private:
  bool left_, right_;
};

class Replace : public Normalizer {
 public:
  Replace(const std::string& pattern, bool literal, std::string content, const Where& w)
      : regex_(pattern, literal, w.str()), content_(std::move(content)) {}
  std::string apply(std::string s) const override {
    std::vector<std::pair<uint32_t, uint32_t>> m;
    regex_.find_all(s, m);
    if (m.empty()) return s;
    std::string out;
    size_t prev = 0;
    for (auto [b, e] : m) {
      out.append(s, prev, b - prev);
      out += content_;
      prev = e;
    }
    out.append(s, prev, std::string::npos);
    return out;
  }
  std::string describe() const override { return "Replace"; }

 private:
  Regex regex_;
  std::string content_;
};

class Sequence : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> steps;
  std::string apply(std::string s) const override {
    for (const auto& n : steps) s = n->apply(std::move(s));
    return s;
  }
  std::string describe() const override {
    std::string d = "Sequence[";
    for (size_t i = 0; i < steps.size(); ++i) d += (i ? "," : "") + steps[i]->describe();
    return d + "]";
  }
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const Where& w) {
  if (j.is_null()) return nullptr;
  if (!j.is_object()) fail(w, "must be an object or null");
  std::string type = string_field(j, "type", w);
  if (type == "NFC") return std::make_unique<UnicodeForm>(unicode::Form::kNfc, type);
  if (type == "NFD") return std::make_unique<UnicodeForm>(unicode::Form::kNfd, type);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(unicode::Form::kNfkc, type);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(unicode::Form::kNfkd, type);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") return std::make_unique<Prepend>(string_field(j, "prepend", w));
  if (type == "Strip") {
    bool l = bool_field(j, "strip_left", true, w), r = bool_field(j, "strip_right", true, w);
    return std::make_unique<Strip>(l, r);
  }
  if (type == "Replace") {
    const json& p = field(j, "pattern", w);
    std::string content = string_field(j, "content", w);
    if (p.is_object() && p.contains("String") && p["String"].is_string())
      return std::make_unique<Replace>(p["String"].get<std::string>(), true, content, w.at("pattern"));
    if (p.is_object() && p.contains("Regex") && p["Regex"].is_string())
      return std::make_unique<Replace>(p["Regex"].get<std::string>(), false, content, w.at("pattern"));
    fail(w.at("pattern"), "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  if (type == "Sequence") {
    const json& list = field(j, "normalizers", w);
    if (!list.is_array()) fail(w.at("normalizers"), "must be an array");
    auto seq = std::make_unique<Sequence>();
    for (size_t i = 0; i < list.size(); ++i) {
      auto n = make_normalizer(list[i], w.at("normalizers").index(i));
      if (n) seq->steps.push_back(std::move(n));
    }
    return seq;
  }
  fail(w.at("type"), "unsupported normalizer \"" + type +
                         "\" (supported: NFC, NFD, NFKC, NFKD, Lowercase, Replace, Prepend, Strip, Sequence)");
}

}  // namespace lmforge::tokenizer
