#include "tokenizer/unicode.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>

#include <mutex>
#include <vector>

#include "lmforge/core/error.h"

namespace lmforge::tokenizer::unicode {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not valid (overlong, surrogate, truncated, > U+10FFFF).
size_t valid_seq_len(const unsigned char* p, size_t n) {
  unsigned char c = p[0];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  if (c < 0xE0) return (n >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && p[1] < 0xA0) return 0;
    if (c == 0xED && p[1] >= 0xA0) return 0;
    return 3;
  }
  if (c < 0xF5) {
    if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
    if (c == 0xF0 && p[1] < 0x90) return 0;
    if (c == 0xF4 && p[1] >= 0x90) return 0;
    return 4;
  }
  return 0;
}

// Length of the maximal prefix of an invalid sequence (Unicode's "maximal subpart"; at least 1 byte).
size_t invalid_len(const unsigned char* p, size_t n) {
  unsigned char c = p[0];
  size_t need = c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c < 0xF5 ? 4 : 1;
  if (need == 1) return 1;
  size_t i = 1;
  for (; i < need && i < n; ++i) {
    unsigned char lo = 0x80, hi = 0xBF;
    if (i == 1) {
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (p[i] < lo || p[i] > hi) break;
  }
  return i;
}

std::u16string to_u16(std::string_view s) {
  std::u16string out(s.size(), u'\0');
  int32_t len = 0;
  UErrorCode err = U_ZERO_ERROR;
  u_strFromUTF8(reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &len, s.data(),
                static_cast<int32_t>(s.size()), &err);
  LMF_CHECK(U_SUCCESS(err), "tokenizer: UTF-8 to UTF-16 conversion failed: ", u_errorName(err));
  out.resize(len);
  return out;
}

std::string to_u8(const UChar* s, int32_t n) {
  std::string out(static_cast<size_t>(n) * 3, '\0');
  int32_t len = 0;
  UErrorCode err = U_ZERO_ERROR;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &len, s, n, &err);
  LMF_CHECK(U_SUCCESS(err), "tokenizer: UTF-16 to UTF-8 conversion failed: ", u_errorName(err));
  out.resize(len);
  return out;
}

const UNormalizer2* instance(Form form) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (form) {
    case Form::kNfc:
      n = unorm2_getNFCInstance(&err);
      break;
    case Form::kNfd:
      n = unorm2_getNFDInstance(&err);
      break;
    case Form::kNfkc:
      n = unorm2_getNFKCInstance(&err);
      break;
    case Form::kNfkd:
      n = unorm2_getNFKDInstance(&err);
      break;
  }
  LMF_CHECK(U_SUCCESS(err) && n, "tokenizer: ICU normalizer unavailable: ", u_errorName(err));
  return n;
}

}  // namespace

size_t valid_utf8_prefix(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    size_t l = valid_seq_len(p + i, n - i);
    if (l == 0) return i;
    i += l;
  }
  return n;
}

std::string repair_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    size_t l = valid_seq_len(p + i, n - i);
    if (l) {
      out.append(s.data() + i, l);
      i += l;
    } else {
      out += "\xEF\xBF\xBD";
      i += invalid_len(p + i, n - i);
    }
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_whitespace(char32_t cp) {
  return u_isUWhiteSpace(static_cast<UChar32>(cp));
}

bool is_numeric(char32_t cp) {
  int8_t t = u_charType(static_cast<UChar32>(cp));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_alphanumeric(char32_t cp) {
  return u_isUAlphabetic(static_cast<UChar32>(cp)) || is_numeric(cp);
}

bool is_word_char(char32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  auto c = static_cast<UChar32>(cp);
  int8_t t = u_charType(c);
  return u_isUAlphabetic(c) || t == U_DECIMAL_DIGIT_NUMBER || t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK ||
         t == U_COMBINING_SPACING_MARK || t == U_CONNECTOR_PUNCTUATION || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL);
}

std::string normalize(std::string_view s, Form form) {
  bool ascii = true;
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return std::string(s);  // ASCII is invariant under all four forms
  const UNormalizer2* n = instance(form);
  std::u16string u = to_u16(s);
  UErrorCode err = U_ZERO_ERROR;
  int32_t span =
      unorm2_spanQuickCheckYes(n, reinterpret_cast<const UChar*>(u.data()), static_cast<int32_t>(u.size()), &err);
  if (U_SUCCESS(err) && span == static_cast<int32_t>(u.size())) return std::string(s);
  std::vector<UChar> out(u.size() * 4 + 16);
  err = U_ZERO_ERROR;
  int32_t len = unorm2_normalize(n, reinterpret_cast<const UChar*>(u.data()), static_cast<int32_t>(u.size()),
                                 out.data(), static_cast<int32_t>(out.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    out.resize(len);
    err = U_ZERO_ERROR;
    len = unorm2_normalize(n, reinterpret_cast<const UChar*>(u.data()), static_cast<int32_t>(u.size()), out.data(),
                           static_cast<int32_t>(out.size()), &err);
  }
  LMF_CHECK(U_SUCCESS(err), "tokenizer: ICU normalization failed: ", u_errorName(err));
  return to_u8(out.data(), len);
}

std::string lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    char32_t cp = next_cp(s, i);
    if (cp < 0x80) {
      out += static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
      continue;
    }
    // One code point at a time: no final-sigma or locale context, like char::to_lowercase.
    std::u16string u = to_u16(s.substr(start, i - start));
    UChar buf[16];
    UErrorCode err = U_ZERO_ERROR;
    int32_t len =
        u_strToLower(buf, 16, reinterpret_cast<const UChar*>(u.data()), static_cast<int32_t>(u.size()), "", &err);
    if (U_SUCCESS(err)) {
      out += to_u8(buf, len);
    } else {
      out.append(s.substr(start, i - start));
    }
  }
  return out;
}

const std::array<char32_t, 256>& byte_to_cp() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

int cp_to_byte(char32_t cp) {
  static const std::vector<int> inverse = [] {
    std::vector<int> inv(512, -1);
    const auto& t = byte_to_cp();
    for (int b = 0; b < 256; ++b) inv[t[b]] = b;
    return inv;
  }();
  return cp < inverse.size() ? inverse[cp] : -1;
}

}  // namespace lmforge::tokenizer::unicode
