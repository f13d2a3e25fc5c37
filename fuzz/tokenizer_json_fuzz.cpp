// libFuzzer target: any byte string either loads as a tokenizer.json whose encode/decode then run cleanly, or
// throws lmforge::Error. Build: make fuzz (clang); seeds: tests/tokenizer/fixtures/mini_*.tokenizer.json.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "lmforge/core/error.h"
#include "lmforge/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using lmforge::tokenizer::EncodeOptions;
  using lmforge::tokenizer::InvalidUtf8;
  using lmforge::tokenizer::Tokenizer;
  try {
    Tokenizer tok = Tokenizer::from_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    EncodeOptions opt;
    opt.invalid_utf8 = InvalidUtf8::kReplace;
    for (std::string_view text : {"Hello, world! 123 你好 <bos> x\n\n  y", "\xff\xfe", "", "<sep><|endoftext|>"}) {
      auto ids = tok.encode(text, opt);
      (void)tok.decode(ids);
    }
    (void)tok.describe_json();
  } catch (const lmforge::Error&) {
  }
  return 0;
}
