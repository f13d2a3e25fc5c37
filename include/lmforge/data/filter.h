// `lmforge data filter`: drops documents by length, script, quality heuristics and block-list regexes. Each check
// has its own drop reason in the stage report; cheap checks run first, token counting last.
//
// Quality heuristics are those of Gopher (Rae et al. 2021), each off unless set (--quality sets all five to
// Gopher's values): symbol-to-word ratio ('#' and ellipses per word, max 0.1), share of lines that repeat an
// earlier line (max 0.3), share of word characters inside a repeated word 5-gram (max 0.15), mean word length
// (3 to 10 characters), and English stop words present (at least 2 distinct of the, be, to, of, and, that, have,
// with). Words here are whitespace-separated, as Gopher counts them: text without spaces (Chinese) should not
// use the word-based checks.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lmforge::tokenizer {
class Tokenizer;
}

namespace lmforge::data {

class DomainScorer;

struct FilterOptions {
  int64_t min_chars = 0, max_chars = 0;    // code points; max 0 = no limit
  int64_t min_tokens = 0, max_tokens = 0;  // need a tokenizer; max 0 = no limit
  std::string script;                      // "cjk" (Han, kana, Hangul) or an ICU script name: han, latin, ...
  double min_script_share = 0;             // share of letters in `script`
  double max_symbol_word_ratio = -1;       // negative: off
  double max_duplicate_line_fraction = -1;
  double max_duplicate_ngram_fraction = -1;
  double min_mean_word_length = -1, max_mean_word_length = -1;
  int min_stop_words = 0;
  std::vector<std::string> stop_words = {"the", "be", "to", "of", "and", "that", "have", "with"};
  std::vector<std::string> block_patterns;     // PCRE2 regexes; a match anywhere drops the document
  std::shared_ptr<const DomainScorer> domain;  // TF-IDF domain filter (domain.h); null: off
  double min_domain_score = 0.3;
  void set_gopher_quality();
};

// The measurements the checks use (exposed for `data stats` and tests).
struct TextMetrics {
  int64_t chars = 0, letters = 0, script_letters = 0, cjk_letters = 0, latin_letters = 0, words = 0, lines = 0;
  double symbol_word_ratio = 0, duplicate_line_fraction = 0, duplicate_ngram_fraction = 0, mean_word_length = 0;
  int stop_words = 0;
};

// Thread-safe after construction.
class DocumentFilter {
 public:
  // `tok` (may be null) must outlive the filter; token limits without one are an error.
  DocumentFilter(FilterOptions opt, const tokenizer::Tokenizer* tok);
  ~DocumentFilter();
  // The drop reason, or "" to keep.
  std::string check(std::string_view text) const;
  TextMetrics measure(std::string_view text) const;

 private:
  FilterOptions opt_;
  const tokenizer::Tokenizer* tok_;
  int script_code_ = -1;  // ICU UScriptCode; -2 for "cjk"
  struct Blocks;
  std::unique_ptr<Blocks> blocks_;
};

// Reads a block list: one regex a line; blank lines and lines starting with '#' are skipped.
std::vector<std::string> read_block_list(const std::string& path);

}  // namespace lmforge::data
