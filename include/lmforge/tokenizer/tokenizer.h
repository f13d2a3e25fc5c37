// BPE tokenizers in Hugging Face's tokenizer.json format: load one (byte-level: DeepSeek-V3's, Llama-3's, Qwen2's,
// GPT-2's, or one lmforge trained; SentencePiece-style with byte fallback: Llama-2's, Mistral's, TinyLlama's), encode
// text to exactly the ids HF `tokenizers` gives, decode ids back to text.
//
// Supported components (anything else is refused with an error naming the file and the JSON field):
//   normalizer     NFC, NFD, NFKC, NFKD, Lowercase, Replace, Prepend, Strip, Sequence, null
//   pre_tokenizer  ByteLevel (add_prefix_space, use_regex), Split (String or Regex pattern, all five behaviors,
//                  invert), Digits (individual_digits), Metaspace (replacement, prepend_scheme, split), Sequence, null
//   model          BPE (vocab, merges as "a b" or ["a","b"], ignore_merges, byte_fallback, unk_token, fuse_unk)
//   added_tokens   matched before pre-tokenization, leftmost-longest, honouring lstrip/rstrip/normalized/single_word
//   post_processor ByteLevel, TemplateProcessing, Sequence, null
//   decoder        ByteLevel; Replace, ByteFallback, Fuse, Strip, Metaspace and a Sequence of them; null
// Encoding is thread-safe: one Tokenizer may be used from many threads at once.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmforge::tokenizer {

enum class InvalidUtf8 {
  kError,    // encode throws lmforge::Error naming the byte offset
  kReplace,  // each invalid sequence becomes U+FFFD first (as Rust's from_utf8_lossy)
};

struct EncodeOptions {
  bool add_special_tokens = true;  // apply the post-processor's template (BOS/EOS)
  InvalidUtf8 invalid_utf8 = InvalidUtf8::kError;
};

// The byte a byte-fallback token "<0xXX>" stands for (exactly six characters, two hex digits, as HF's
// ByteFallback decoder reads them), or -1 for any other token.
int byte_token_value(std::string_view token);

// Replaces each invalid UTF-8 sequence with U+FFFD, as Rust's String::from_utf8_lossy does.
std::string repair_utf8(std::string_view s);

class Tokenizer {
 public:
  // Parses a tokenizer.json file; errors name `path` and the field at fault.
  static Tokenizer from_file(const std::string& path);
  // Parses tokenizer.json text; `name` stands for the file in error messages.
  static Tokenizer from_json(std::string_view json_text, const std::string& name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<uint32_t> encode(std::string_view text, const EncodeOptions& opt = {}) const;
  // Appends the ids of `text` to `out`.
  void encode_into(std::string_view text, std::vector<uint32_t>& out, const EncodeOptions& opt = {}) const;
  // Encodes every text, split over the process thread pool; the result is the same as encoding one at a time.
  std::vector<std::vector<uint32_t>> encode_batch(const std::vector<std::string_view>& texts,
                                                  const EncodeOptions& opt = {}) const;

  // The text of `ids`; invalid UTF-8 that token boundaries create is replaced with U+FFFD (as HF does).
  // Throws lmforge::Error for an id the tokenizer does not have.
  std::string decode(std::span<const uint32_t> ids, bool skip_special_tokens = false) const;
  // The raw bytes of `ids` as they continue a text, without the UTF-8 repair (streaming callers join pieces
  // themselves): byte-fallback tokens give their byte, and what a decoder strips at the start of a whole text
  // (Strip after Fuse, Metaspace's first-token prefix) is kept, so decoding ids one by one and joining the pieces
  // gives the text with its spaces.
  std::string decode_bytes(std::span<const uint32_t> ids, bool skip_special_tokens = false) const;

  // One more than the largest id (model vocabulary and added tokens).
  size_t vocab_size() const;
  std::optional<uint32_t> token_to_id(std::string_view token) const;  // token as written in tokenizer.json
  std::optional<std::string> id_to_token(uint32_t id) const;
  bool is_special(uint32_t id) const;
  // A JSON object describing the tokenizer (components, sizes, special tokens) for `lmforge tokenizer info`.
  std::string describe_json() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lmforge::tokenizer
