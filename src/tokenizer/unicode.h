// UTF-8 helpers and the Unicode facts the tokenizer needs (ICU underneath): validation and repair, code point
// classes as Rust's `char` methods define them (HF tokenizers is written in Rust), normalization forms, and the
// GPT-2 byte-to-character map of byte-level BPE.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace lmforge::tokenizer::unicode {

// Length in bytes of the valid UTF-8 prefix of `s` (s.size() when all of it is valid).
size_t valid_utf8_prefix(std::string_view s);
// Replaces each maximal invalid subsequence with U+FFFD, as Rust's String::from_utf8_lossy does.
std::string repair_utf8(std::string_view s);

// Decodes the code point at s[i] (s must be valid UTF-8) and advances i.
inline char32_t next_cp(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  unsigned char c = p[i];
  if (c < 0x80) {
    ++i;
    return c;
  }
  if (c < 0xE0) {
    char32_t cp = ((c & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
    i += 2;
    return cp;
  }
  if (c < 0xF0) {
    char32_t cp = ((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
    i += 3;
    return cp;
  }
  char32_t cp = ((c & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) | (p[i + 3] & 0x3Fu);
  i += 4;
  return cp;
}
// Start of the code point that ends at s[i-1] (i > 0).
inline size_t prev_cp_start(std::string_view s, size_t i) {
  do {
    --i;
  } while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80);
  return i;
}
inline size_t cp_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
void append_utf8(std::string& out, char32_t cp);

bool is_whitespace(char32_t cp);    // Rust char::is_whitespace (White_Space property)
bool is_alphanumeric(char32_t cp);  // Rust char::is_alphanumeric (Alphabetic or Nd/Nl/No)
bool is_numeric(char32_t cp);       // Rust char::is_numeric (Nd, Nl, No)
bool is_word_char(char32_t cp);     // regex-syntax's \w: alphanumeric, marks, connector punctuation, joiners

enum class Form { kNfc, kNfd, kNfkc, kNfkd };
std::string normalize(std::string_view s, Form form);
// Lower-cases each code point on its own (full mappings, no context), as Rust's char::to_lowercase.
std::string lowercase(std::string_view s);

// GPT-2's byte-level alphabet: byte b is written as the code point byte_to_cp()[b].
const std::array<char32_t, 256>& byte_to_cp();
// Inverse of byte_to_cp: -1 when cp is not in the alphabet.
int cp_to_byte(char32_t cp);

}  // namespace lmforge::tokenizer::unicode
