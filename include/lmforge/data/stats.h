// `lmforge data stats`: what a corpus holds (sizes, length distribution in characters and tokens, script mix,
// exact duplicates, Gopher quality measures), as JSON.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "lmforge/data/dedup.h"

namespace lmforge::data {

class CorpusStats {
 public:
  // One document; `tokens` is -1 without a tokenizer. Call in input order (single-threaded).
  void add(std::string_view text, int64_t tokens, const Hash128& hash, int64_t cjk_letters, int64_t latin_letters,
           int64_t letters, double duplicate_line_fraction, double mean_word_length);
  nlohmann::json to_json() const;

 private:
  int64_t docs_ = 0, bytes_ = 0, chars_ = 0, tokens_ = 0, letters_ = 0, cjk_ = 0, latin_ = 0, dups_ = 0;
  bool have_tokens_ = false;
  double dup_line_sum_ = 0, word_len_sum_ = 0;
  std::vector<int64_t> char_lengths_, token_lengths_;
  ExactDeduper seen_;
};

}  // namespace lmforge::data
