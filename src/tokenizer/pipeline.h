// The stages between text and ids, each built from its tokenizer.json object. Internal to the tokenizer layer.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/regex.h"

namespace lmforge::tokenizer {

// Names the file and JSON path of a component for error messages ("tokenizer.json: pre_tokenizer.pretokenizers[2]").
struct Where {
  std::string file;
  std::string path;
  Where at(const std::string& child) const { return {file, path.empty() ? child : path + "." + child}; }
  Where index(size_t i) const { return {file, path + "[" + std::to_string(i) + "]"}; }
  std::string str() const { return path.empty() ? file : file + ": " + path; }
};
[[noreturn]] void fail(const Where& w, const std::string& what);

// JSON field access that names the field when it is missing or of the wrong type.
const nlohmann::json& field(const nlohmann::json& j, const char* name, const Where& w);
std::string string_field(const nlohmann::json& j, const char* name, const Where& w);
bool bool_field(const nlohmann::json& j, const char* name, bool fallback, const Where& w);

// A stretch of the work buffer being pre-tokenized: bytes [off, off + len).
struct Piece {
  uint32_t off = 0;
  uint32_t len = 0;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string apply(std::string s) const = 0;
  virtual std::string describe() const = 0;
};
// nullptr for JSON null.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const Where& w);

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits every piece of `in` into pieces appended to `out`; empty pieces are dropped. May append text to `buf`
  // (a prefix space) and point pieces there. `at_start`: buf[0] is the start of the input text (not of a stretch
  // after an added token), which Metaspace's prepend_scheme "first" asks.
  virtual void split(std::string& buf, const std::vector<Piece>& in, std::vector<Piece>& out, bool at_start) const = 0;
  virtual std::string describe() const = 0;
};
struct PreTokenizerChain {
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  bool byte_level = false;  // a ByteLevel step is present: the model sees bytes, not characters
  bool empty() const { return steps.empty(); }
};
// Flattens Sequence; ByteLevel must be the last step (its byte-to-character mapping is applied by the model).
PreTokenizerChain make_pre_tokenizer(const nlohmann::json& j, const Where& w);

// Metaspace's replacement character (pre-tokenizer and decoder), checked to be one character; U+2581 by default.
std::string metaspace_replacement(const nlohmann::json& j, const Where& w);

// The GPT-2 pre-tokenization pattern, used by ByteLevel with use_regex.
extern const char* const kGpt2Pattern;

}  // namespace lmforge::tokenizer
