#include "lmforge/data/stats.h"

#include <algorithm>

#include "tokenizer/unicode.h"

namespace lmforge::data {

void CorpusStats::add(std::string_view text, int64_t tokens, const Hash128& hash, int64_t cjk_letters,
                      int64_t latin_letters, int64_t letters, double duplicate_line_fraction, double mean_word_length) {
  ++docs_;
  bytes_ += static_cast<int64_t>(text.size());
  int64_t chars = 0;
  for (unsigned char c : text) chars += (c & 0xC0) != 0x80;
  chars_ += chars;
  char_lengths_.push_back(chars);
  if (tokens >= 0) {
    have_tokens_ = true;
    tokens_ += tokens;
    token_lengths_.push_back(tokens);
  }
  letters_ += letters;
  cjk_ += cjk_letters;
  latin_ += latin_letters;
  if (!seen_.insert(hash)) ++dups_;
  dup_line_sum_ += duplicate_line_fraction;
  word_len_sum_ += mean_word_length;
}

namespace {
nlohmann::json distribution(std::vector<int64_t> v) {
  if (v.empty()) return nullptr;
  std::sort(v.begin(), v.end());
  auto q = [&](double p) { return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5)]; };
  double sum = 0;
  for (int64_t x : v) sum += static_cast<double>(x);
  return {{"min", v.front()},
          {"p10", q(0.1)},
          {"p50", q(0.5)},
          {"p90", q(0.9)},
          {"p99", q(0.99)},
          {"max", v.back()},
          {"mean", sum / static_cast<double>(v.size())}};
}
}  // namespace

nlohmann::json CorpusStats::to_json() const {
  const double d = docs_ ? static_cast<double>(docs_) : 1.0;
  const double l = letters_ ? static_cast<double>(letters_) : 1.0;
  nlohmann::json j = {
      {"documents", docs_},
      {"bytes", bytes_},
      {"chars", chars_},
      {"chars_per_document", distribution(char_lengths_)},
      {"exact_duplicates", dups_},
      {"letter_share", {{"cjk", static_cast<double>(cjk_) / l}, {"latin", static_cast<double>(latin_) / l}}},
      {"mean_duplicate_line_fraction", dup_line_sum_ / d},
      {"mean_word_length", word_len_sum_ / d}};
  if (have_tokens_) {
    j["tokens"] = tokens_;
    j["tokens_per_document"] = distribution(token_lengths_);
    j["bytes_per_token"] = tokens_ ? static_cast<double>(bytes_) / static_cast<double>(tokens_) : 0.0;
  }
  return j;
}

}  // namespace lmforge::data
