// Added and special tokens: found in the text before pre-tokenization, as HF's AddedVocabulary does.
// Internal to the tokenizer layer.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lmforge::tokenizer {

struct AddedToken {
  uint32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// Finds token occurrences leftmost-longest (aho-corasick's LeftmostLongest), then applies the token's
// single_word, lstrip and rstrip rules.
class AddedTokenMatcher {
 public:
  // `patterns[i]` is the text to look for (the normalized content for normalized tokens), `tokens[i]` its token.
  void build(std::vector<std::string> patterns, std::vector<const AddedToken*> tokens);
  bool empty() const { return patterns_.empty(); }

  struct Split {
    uint32_t start, end;
    int64_t id;  // -1: ordinary text
  };
  // Splits `s` into ordinary text and tokens; an empty input gives one empty ordinary split.
  void split(std::string_view s, std::vector<Split>& out) const;

 private:
  std::vector<std::string> patterns_;
  std::vector<const AddedToken*> tokens_;
  // Patterns by their first two bytes (single-byte patterns under 256 + byte), longest first.
  std::vector<std::vector<uint32_t>> by_prefix_;
  std::vector<std::vector<uint32_t>> single_;
  bool first_byte_[256] = {};
};

}  // namespace lmforge::tokenizer
