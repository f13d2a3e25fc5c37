// PCRE2 (UTF + UCP, JIT-compiled) regexes that match as HF tokenizers' Oniguruma patterns do. Two differences are
// translated away before compiling: Oniguruma's \s is Unicode White_Space (PCRE2's lacks U+0085) and its \w is
// letters, marks, decimal digits and connector punctuation (PCRE2's takes every number and no marks).
// Matches are found as rust-onig's find_iter does: leftmost-first alternation, and an empty match right after the
// previous match is skipped by advancing one character.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmforge::tokenizer {

// The Oniguruma pattern rewritten for PCRE2 (exposed for tests).
std::string translate_onig_pattern(const std::string& pattern);

class Regex {
 public:
  // `literal` treats the pattern as plain text (HF's {"String": ...} patterns). Throws lmforge::Error naming `where`
  // and PCRE2's message when the pattern does not compile.
  Regex(const std::string& pattern, bool literal, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte ranges [start, end) of the successive non-overlapping matches in `s` (valid UTF-8), left to right.
  void find_all(std::string_view s, std::vector<std::pair<uint32_t, uint32_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8
  bool jit_ = false;
};

}  // namespace lmforge::tokenizer
