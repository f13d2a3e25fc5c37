#include "lmforge/data/clean.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <utility>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace lmforge::data {

namespace uni = tokenizer::unicode;

namespace {

bool iequal_prefix(std::string_view s, size_t i, std::string_view word) {
  if (i + word.size() > s.size()) return false;
  for (size_t k = 0; k < word.size(); ++k)
    if (std::tolower(static_cast<unsigned char>(s[i + k])) != word[k]) return false;
  return true;
}

// Tags after which the text reads as a new line.
bool is_block_tag(std::string_view name) {
  static const char* blocks[] = {"p",       "br",      "div",    "li",     "ul",    "ol", "tr", "td",  "th",
                                 "table",   "h1",      "h2",     "h3",     "h4",    "h5", "h6", "pre", "blockquote",
                                 "section", "article", "header", "footer", "title", "hr", "dd", "dt"};
  for (const char* b : blocks)
    if (name == b) return true;
  return false;
}

// Decodes the entity at s[i] == '&'; returns its length, 0 when it is not one we know.
size_t decode_entity(std::string_view s, size_t i, std::string& out) {
  static const std::pair<const char*, char32_t> named[] = {
      {"amp", '&'},      {"lt", '<'},       {"gt", '>'},        {"quot", '"'},  {"apos", '\''}, {"nbsp", 0xA0},
      {"mdash", 0x2014}, {"ndash", 0x2013}, {"hellip", 0x2026}, {"copy", 0xA9}, {"reg", 0xAE}};
  const size_t semi = s.find(';', i + 1);
  if (semi == std::string_view::npos || semi - i > 12) return 0;
  std::string_view body = s.substr(i + 1, semi - i - 1);
  char32_t cp = 0;
  if (!body.empty() && body[0] == '#') {
    const bool hex = body.size() > 1 && (body[1] == 'x' || body[1] == 'X');
    std::string_view digits = body.substr(hex ? 2 : 1);
    if (digits.empty()) return 0;
    uint64_t v = 0;
    for (char c : digits) {
      int d = std::isdigit(static_cast<unsigned char>(c))           ? c - '0'
              : hex && std::isxdigit(static_cast<unsigned char>(c)) ? std::tolower(c) - 'a' + 10
                                                                    : -1;
      if (d < 0) return 0;
      v = v * (hex ? 16 : 10) + static_cast<uint64_t>(d);
      if (v > 0x10FFFF) return 0;
    }
    if (v == 0 || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    cp = static_cast<char32_t>(v);
  } else {
    for (const auto& [name, c] : named)
      if (body == name) cp = c;
    if (cp == 0) return 0;
  }
  uni::append_utf8(out, cp);
  return semi - i + 1;
}

}  // namespace

std::string strip_html(std::string_view s, int64_t* tags) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '&') {
      const size_t n = decode_entity(s, i, out);
      if (n) {
        i += n;
        continue;
      }
      out += c;
      ++i;
      continue;
    }
    if (c != '<' || i + 1 >= s.size()) {
      out += c;
      ++i;
      continue;
    }
    const char next = s[i + 1];
    if (s.compare(i, 4, "<!--") == 0) {
      const size_t end = s.find("-->", i + 4);
      i = end == std::string_view::npos ? s.size() : end + 3;
      if (tags) ++*tags;
      continue;
    }
    if (!(std::isalpha(static_cast<unsigned char>(next)) || next == '/' || next == '!' || next == '?')) {
      out += c;  // "a < b" is text, not a tag
      ++i;
      continue;
    }
    const size_t close = s.find('>', i + 1);
    if (close == std::string_view::npos) {
      out += c;
      ++i;
      continue;
    }
    size_t n0 = i + 1 + (next == '/' ? 1 : 0), n1 = n0;
    while (n1 < close && std::isalnum(static_cast<unsigned char>(s[n1]))) ++n1;
    std::string name(s.substr(n0, n1 - n0));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (tags) ++*tags;
    i = close + 1;
    if (next != '/' && (name == "script" || name == "style")) {
      // Drop the contents up to the matching end tag.
      size_t j = i;
      while (j < s.size() && !(s[j] == '<' && iequal_prefix(s, j, "</" + name))) ++j;
      const size_t end = s.find('>', j);
      i = end == std::string_view::npos ? s.size() : end + 1;
      continue;
    }
    if (is_block_tag(name))
      out += '\n';
    else if (!out.empty() && out.back() != ' ' && out.back() != '\n')
      out += ' ';
  }
  return out;
}

std::string strip_control_chars(std::string_view s, int64_t* removed) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t start = i;
    const char32_t cp = uni::next_cp(s, i);
    const bool control = (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || (cp >= 0x7F && cp <= 0x9F) ||
                         cp == 0xFEFF || cp == 0xFFFE || cp == 0xFFFF;
    if (cp == '\r') {  // CR LF and lone CR both become LF
      if (i >= s.size() || s[i] != '\n') out += '\n';
      continue;
    }
    if (cp == 0x85) {  // NEL, a C1 control that means a line break
      out += '\n';
      continue;
    }
    if (control) {
      if (removed) ++*removed;
      continue;
    }
    out.append(s.substr(start, i - start));
  }
  return out;
}

std::string normalize_whitespace(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  int pending_newlines = 0;
  bool pending_space = false;
  size_t i = 0;
  while (i < s.size()) {
    const size_t start = i;
    const char32_t cp = uni::next_cp(s, i);
    if (cp == '\n' || cp == 0x2028 || cp == 0x2029 || cp == 0x85) {
      ++pending_newlines;
      pending_space = false;  // trailing spaces of a line go
      continue;
    }
    if (uni::is_whitespace(cp) || cp == 0x200B) {
      pending_space = true;
      continue;
    }
    if (!out.empty()) {
      if (pending_newlines)
        out.append(pending_newlines > 1 ? "\n\n" : "\n");
      else if (pending_space)
        out += ' ';
    }
    pending_newlines = 0;
    pending_space = false;
    out.append(s.substr(start, i - start));
  }
  return out;
}

struct TextCleaner::Pii {
  tokenizer::Regex email{R"([A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,})", false,
                         "PII e-mail pattern"};
  tokenizer::Regex ip{R"((?<![0-9.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3})"
                      R"((?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?![0-9]|\.[0-9]))",
                      false, "PII IPv4 pattern"};
  tokenizer::Regex phone{R"((?<![\w+])(?:\+[0-9]{1,3}[ .\-]?)?(?:\([0-9]{2,4}\)|[0-9]{2,4})[ .\-]?)"
                         R"([0-9]{3,4}[ .\-]?[0-9]{3,4}(?![\w]))",
                         false, "PII phone pattern"};

  static std::string replace(const tokenizer::Regex& re, std::string_view s, const std::string& mask, int64_t& n) {
    std::vector<std::pair<uint32_t, uint32_t>> m;
    re.find_all(s, m);
    if (m.empty()) return std::string(s);
    std::string out;
    size_t last = 0;
    for (auto [b, e] : m) {
      out.append(s.substr(last, b - last));
      out += mask;
      last = e;
      ++n;
    }
    out.append(s.substr(last));
    return out;
  }
};

TextCleaner::TextCleaner(CleanOptions opt) : opt_(std::move(opt)) {
  if (opt_.mask_pii) pii_ = std::make_unique<Pii>();
}
TextCleaner::~TextCleaner() = default;

std::string TextCleaner::clean(std::string_view text, CleanCounts* counts) const {
  CleanCounts local;
  CleanCounts& c = counts ? *counts : local;
  std::string s(text);
  if (opt_.strip_html) s = strip_html(s, &c.html_tags);
  if (opt_.normal_form != NormalForm::kNone) {
    std::string n = uni::normalize(s, opt_.normal_form == NormalForm::kNfc ? uni::Form::kNfc : uni::Form::kNfkc);
    c.normalized = n != s;
    s = std::move(n);
  }
  if (opt_.strip_control) s = strip_control_chars(s, &c.control_chars);
  if (opt_.normalize_whitespace) s = normalize_whitespace(s);
  if (pii_) {
    // E-mails first (their digits must not look like phones), then IPs (dotted quads are not phones).
    s = Pii::replace(pii_->email, s, opt_.email_mask, c.emails);
    s = Pii::replace(pii_->ip, s, opt_.ip_mask, c.ips);
    s = Pii::replace(pii_->phone, s, opt_.phone_mask, c.phones);
  }
  return s;
}

}  // namespace lmforge::data
