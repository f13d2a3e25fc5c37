// libFuzzer target: any byte string either reads as an importance matrix (llama.cpp's GGUF or legacy .dat form)
// whose values can all be computed, or throws lmforge::Error. Build: make fuzz (clang); seeds: fuzz/seeds/imatrix.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lmforge/core/error.h"
#include "lmforge/quant/imatrix.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const lmforge::quant::Imatrix m =
        lmforge::quant::parse_imatrix(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    size_t values = 0;
    for (const auto& [name, e] : m.entries) values += m.values(name).size();
    (void)values;
  } catch (const lmforge::Error&) {
    // a clean error is the expected outcome for most inputs
  }
  return 0;
}
