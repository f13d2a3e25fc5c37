#include "lmforge/data/filter.h"

#include <unicode/uchar.h>
#include <unicode/uscript.h>

#include <algorithm>
#include <fstream>
#include <unordered_set>

#include "lmforge/core/error.h"
#include "lmforge/data/corpus.h"
#include "lmforge/data/domain.h"
#include "lmforge/tokenizer/tokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace lmforge::data {

namespace uni = tokenizer::unicode;

void FilterOptions::set_gopher_quality() {
  max_symbol_word_ratio = 0.1;
  max_duplicate_line_fraction = 0.3;
  max_duplicate_ngram_fraction = 0.15;
  min_mean_word_length = 3;
  max_mean_word_length = 10;
  min_stop_words = 2;
}

struct DocumentFilter::Blocks {
  std::vector<std::unique_ptr<tokenizer::Regex>> res;
};

std::vector<std::string> read_block_list(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open block list");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    out.push_back(line);
  }
  return out;
}

DocumentFilter::DocumentFilter(FilterOptions opt, const tokenizer::Tokenizer* tok)
    : opt_(std::move(opt)), tok_(tok), blocks_(std::make_unique<Blocks>()) {
  LMF_CHECK(opt_.min_chars >= 0 && opt_.max_chars >= 0, "filter: --min-chars/--max-chars must not be negative");
  LMF_CHECK(opt_.max_chars == 0 || opt_.max_chars >= opt_.min_chars, "filter: --max-chars is below --min-chars");
  LMF_CHECK(opt_.min_tokens >= 0 && opt_.max_tokens >= 0, "filter: --min-tokens/--max-tokens must not be negative");
  LMF_CHECK(opt_.max_tokens == 0 || opt_.max_tokens >= opt_.min_tokens, "filter: --max-tokens is below --min-tokens");
  LMF_CHECK(tok_ || (opt_.min_tokens == 0 && opt_.max_tokens == 0),
            "filter: --min-tokens/--max-tokens need --tokenizer");
  LMF_CHECK(opt_.min_script_share >= 0 && opt_.min_script_share <= 1,
            "filter: --min-script-share must be in [0, 1], got ", opt_.min_script_share);
  if (!opt_.script.empty()) {
    std::string s = opt_.script;
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    if (s == "cjk") {
      script_code_ = -2;
    } else {
      script_code_ = u_getPropertyValueEnum(UCHAR_SCRIPT, s.c_str());
      LMF_CHECK(script_code_ >= 0, "filter: --script '", opt_.script,
                "' is not cjk or a Unicode script name (han, latin, cyrillic, arabic, ...)");
    }
  } else {
    LMF_CHECK(opt_.min_script_share == 0, "filter: --min-script-share needs --script");
  }
  for (size_t i = 0; i < opt_.block_patterns.size(); ++i)
    blocks_->res.push_back(std::make_unique<tokenizer::Regex>(opt_.block_patterns[i], false,
                                                              "block-list pattern " + std::to_string(i + 1)));
}

DocumentFilter::~DocumentFilter() = default;

TextMetrics DocumentFilter::measure(std::string_view text) const {
  TextMetrics m;
  size_t i = 0;
  while (i < text.size()) {
    const char32_t cp = uni::next_cp(text, i);
    ++m.chars;
    if (!u_isalpha(static_cast<UChar32>(cp))) continue;
    ++m.letters;
    UErrorCode err = U_ZERO_ERROR;
    const UScriptCode sc = cp < 0x80 ? USCRIPT_LATIN : uscript_getScript(static_cast<UChar32>(cp), &err);
    const bool cjk = sc == USCRIPT_HAN || sc == USCRIPT_HIRAGANA || sc == USCRIPT_KATAKANA || sc == USCRIPT_HANGUL;
    m.cjk_letters += cjk;
    m.latin_letters += sc == USCRIPT_LATIN;
    if (script_code_ == -2 ? cjk : sc == script_code_) ++m.script_letters;
  }
  // Words: whitespace-separated; lines: non-empty lines.
  std::vector<std::string_view> words;
  size_t p = 0;
  while (p < text.size()) {
    while (p < text.size() && std::isspace(static_cast<unsigned char>(text[p]))) ++p;
    const size_t b = p;
    while (p < text.size() && !std::isspace(static_cast<unsigned char>(text[p]))) ++p;
    if (p > b) words.push_back(text.substr(b, p - b));
  }
  m.words = static_cast<int64_t>(words.size());
  int64_t symbols = 0, word_chars = 0;
  for (size_t k = 0; k + 2 < text.size(); ++k)
    if (text.compare(k, 3, "...") == 0 || text.compare(k, 3, "\xE2\x80\xA6") == 0) ++symbols, k += 2;
  symbols += static_cast<int64_t>(std::count(text.begin(), text.end(), '#'));
  std::unordered_set<std::string> stops;
  std::vector<int64_t> wlen(words.size());
  for (size_t k = 0; k < words.size(); ++k) {
    size_t q = 0;
    while (q < words[k].size()) {
      uni::next_cp(words[k], q);
      ++wlen[k];
    }
    word_chars += wlen[k];
    if (opt_.min_stop_words > 0 && words[k].size() <= 8) {
      std::string lw(words[k]);
      std::transform(lw.begin(), lw.end(), lw.begin(), [](unsigned char c) { return std::tolower(c); });
      while (!lw.empty() && std::ispunct(static_cast<unsigned char>(lw.back()))) lw.pop_back();
      for (const auto& s : opt_.stop_words)
        if (lw == s) stops.insert(lw);
    }
  }
  m.stop_words = static_cast<int>(stops.size());
  if (!words.empty()) {
    m.symbol_word_ratio = static_cast<double>(symbols) / static_cast<double>(words.size());
    m.mean_word_length = static_cast<double>(word_chars) / static_cast<double>(words.size());
  }
  // Repeated word 5-grams: characters of words covered by a 5-gram seen earlier in the document.
  if (words.size() >= 5 && word_chars > 0) {
    std::unordered_set<uint64_t> seen;
    std::vector<char> dup(words.size(), 0);
    for (size_t k = 0; k + 5 <= words.size(); ++k) {
      uint64_t h = 0;
      for (size_t j = k; j < k + 5; ++j) h = hash64(words[j], h);
      if (!seen.insert(h).second)
        std::fill(dup.begin() + static_cast<std::ptrdiff_t>(k), dup.begin() + static_cast<std::ptrdiff_t>(k + 5), 1);
    }
    int64_t dc = 0;
    for (size_t k = 0; k < words.size(); ++k) dc += dup[k] ? wlen[k] : 0;
    m.duplicate_ngram_fraction = static_cast<double>(dc) / static_cast<double>(word_chars);
  }
  std::unordered_set<std::string_view> lines;
  int64_t dup_lines = 0;
  size_t s = 0;
  while (s <= text.size()) {
    size_t e = text.find('\n', s);
    if (e == std::string_view::npos) e = text.size();
    std::string_view line = text.substr(s, e - s);
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
      ++m.lines;
      if (!lines.insert(line).second) ++dup_lines;
    }
    s = e + 1;
  }
  if (m.lines) m.duplicate_line_fraction = static_cast<double>(dup_lines) / static_cast<double>(m.lines);
  return m;
}

std::string DocumentFilter::check(std::string_view text) const {
  const TextMetrics m = measure(text);
  if (m.chars < opt_.min_chars) return "too_short_chars";
  if (opt_.max_chars && m.chars > opt_.max_chars) return "too_long_chars";
  if (script_code_ != -1 && (m.letters == 0 || static_cast<double>(m.script_letters) / static_cast<double>(m.letters) <
                                                   opt_.min_script_share))
    return "script_share";
  if (opt_.max_symbol_word_ratio >= 0 && m.symbol_word_ratio > opt_.max_symbol_word_ratio) return "symbol_ratio";
  if (opt_.max_duplicate_line_fraction >= 0 && m.duplicate_line_fraction > opt_.max_duplicate_line_fraction)
    return "duplicate_lines";
  if (opt_.max_duplicate_ngram_fraction >= 0 && m.duplicate_ngram_fraction > opt_.max_duplicate_ngram_fraction)
    return "duplicate_ngrams";
  if ((opt_.min_mean_word_length >= 0 && m.mean_word_length < opt_.min_mean_word_length) ||
      (opt_.max_mean_word_length >= 0 && m.mean_word_length > opt_.max_mean_word_length))
    return "mean_word_length";
  if (m.stop_words < opt_.min_stop_words) return "stop_words";
  if (opt_.domain && opt_.domain->score(text) < opt_.min_domain_score) return "domain_score";
  std::vector<std::pair<uint32_t, uint32_t>> hits;
  for (const auto& re : blocks_->res) {
    re->find_all(text, hits);
    if (!hits.empty()) return "blocklist";
  }
  if (tok_ && (opt_.min_tokens > 0 || opt_.max_tokens > 0)) {
    tokenizer::EncodeOptions eo;
    eo.add_special_tokens = false;
    eo.invalid_utf8 = tokenizer::InvalidUtf8::kReplace;
    const auto n = static_cast<int64_t>(tok_->encode(text, eo).size());
    if (n < opt_.min_tokens) return "too_few_tokens";
    if (opt_.max_tokens && n > opt_.max_tokens) return "too_many_tokens";
  }
  return "";
}

}  // namespace lmforge::data
