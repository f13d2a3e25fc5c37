// `lmforge data clean`: text repair that keeps every document (only documents left empty are dropped).
// Steps, in order: HTML markup stripped (tags removed, <script>/<style>/comments dropped with their contents,
// block tags become line breaks, entities decoded), Unicode normalisation (NFC or NFKC), control characters
// removed (C0/C1 except tab and newline, plus U+FEFF, U+FFFE/U+FFFF), whitespace normalised (Unicode spaces to
// ' ', runs collapsed, lines trimmed, at most one blank line in a row), PII masked (emails, IPv4 addresses,
// phone numbers of 8 or more digits).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace lmforge::data {

enum class NormalForm { kNone, kNfc, kNfkc };

struct CleanOptions {
  NormalForm normal_form = NormalForm::kNfc;
  bool strip_control = true;
  bool strip_html = false;
  bool normalize_whitespace = true;
  bool mask_pii = false;
  std::string email_mask = "<EMAIL>", phone_mask = "<PHONE>", ip_mask = "<IP>";
};

// What one clean_text call changed (for the stage report's counters).
struct CleanCounts {
  int64_t html_tags = 0, control_chars = 0, emails = 0, phones = 0, ips = 0;
  bool normalized = false;  // normalisation changed the text
};

// Thread-safe after construction (the compiled PII regexes are shared read-only).
class TextCleaner {
 public:
  explicit TextCleaner(CleanOptions opt);
  ~TextCleaner();
  // `text` must be valid UTF-8.
  std::string clean(std::string_view text, CleanCounts* counts = nullptr) const;

 private:
  CleanOptions opt_;
  struct Pii;
  std::unique_ptr<Pii> pii_;
};

// The single steps (exposed for tests).
std::string strip_html(std::string_view s, int64_t* tags = nullptr);
std::string strip_control_chars(std::string_view s, int64_t* removed = nullptr);
std::string normalize_whitespace(std::string_view s);

}  // namespace lmforge::data
