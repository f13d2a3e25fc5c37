// libFuzzer target: any byte string either parses into tensors that can all be read, or throws lmforge::Error.
// Build: make fuzz (clang); run: build-fuzz/bin/fuzz_safetensors -max_total_time=60 fuzz/corpus/safetensors
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lmforge/core/error.h"
#include "lmforge/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file =
        lmforge::io::SafetensorsFile::from_bytes(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    for (const std::string& name : file.names()) {
      try {
        lmforge::Tensor t = file.get(name);
        if (t.numel() > 0) (void)t.to_double_vector();
      } catch (const lmforge::Error&) {
        // unsupported dtype: a clean error is the expected outcome
      }
    }
  } catch (const lmforge::Error&) {
  }
  return 0;
}
