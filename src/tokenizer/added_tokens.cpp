#include "tokenizer/added_tokens.h"

#include <algorithm>
#include <cstring>

#include "tokenizer/unicode.h"

namespace lmforge::tokenizer {

namespace {

// Rust regex's \w and \s on the character before or after a match (HF uses ^\w, \w$, ^\s*, \s*$).
bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = unicode::prev_cp_start(s, s.size());
  return unicode::is_word_char(unicode::next_cp(s, i));
}
bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = 0;
  return unicode::is_word_char(unicode::next_cp(s, i));
}
size_t trailing_space_start(std::string_view s) {
  size_t e = s.size();
  while (e > 0) {
    size_t b = unicode::prev_cp_start(s, e), j = b;
    if (!unicode::is_whitespace(unicode::next_cp(s, j))) break;
    e = b;
  }
  return e;
}
size_t leading_space_len(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!unicode::is_whitespace(unicode::next_cp(s, j))) break;
    i = j;
  }
  return i;
}

}  // namespace

void AddedTokenMatcher::build(std::vector<std::string> patterns, std::vector<const AddedToken*> tokens) {
  patterns_ = std::move(patterns);
  tokens_ = std::move(tokens);
  by_prefix_.assign(patterns_.empty() ? 0 : 65536, {});
  single_.assign(patterns_.empty() ? 0 : 256, {});
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (uint32_t i = 0; i < patterns_.size(); ++i) {
    const std::string& p = patterns_[i];
    if (p.empty()) continue;  // HF never matches an empty token
    auto b0 = static_cast<unsigned char>(p[0]);
    first_byte_[b0] = true;
    if (p.size() == 1) {
      single_[b0].push_back(i);
    } else {
      by_prefix_[b0 << 8 | static_cast<unsigned char>(p[1])].push_back(i);
    }
  }
  auto longest_first = [this](uint32_t a, uint32_t b) {
    return patterns_[a].size() != patterns_[b].size() ? patterns_[a].size() > patterns_[b].size() : a < b;
  };
  for (auto& v : by_prefix_) std::sort(v.begin(), v.end(), longest_first);
}

void AddedTokenMatcher::split(std::string_view s, std::vector<Split>& out) const {
  out.clear();
  if (s.empty()) {
    out.push_back({0, 0, -1});
    return;
  }
  size_t start_offset = 0;  // end of the last token taken
  size_t pos = 0;           // where the next search starts (aho-corasick's non-overlapping iteration)
  const auto* u = reinterpret_cast<const unsigned char*>(s.data());
  while (pos < s.size()) {
    if (!first_byte_[u[pos]]) {
      ++pos;
      continue;
    }
    int64_t hit = -1;
    if (pos + 1 < s.size()) {
      for (uint32_t k : by_prefix_[u[pos] << 8 | u[pos + 1]]) {
        const std::string& p = patterns_[k];
        if (p.size() <= s.size() - pos && std::memcmp(p.data(), s.data() + pos, p.size()) == 0) {
          hit = k;
          break;
        }
      }
    }
    if (hit < 0 && !single_[u[pos]].empty()) hit = single_[u[pos]].front();
    if (hit < 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + patterns_[hit].size();
    pos = stop;
    const AddedToken& t = *tokens_[hit];
    if (t.single_word) {
      bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
      bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) start = std::max(trailing_space_start(s.substr(0, start)), start_offset);
    if (t.rstrip) stop += leading_space_len(s.substr(stop));
    if (start > start_offset) out.push_back({static_cast<uint32_t>(start_offset), static_cast<uint32_t>(start), -1});
    out.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(stop), t.id});
    start_offset = stop;
  }
  if (start_offset != s.size())
    out.push_back({static_cast<uint32_t>(start_offset), static_cast<uint32_t>(s.size()), -1});
}

}  // namespace lmforge::tokenizer
