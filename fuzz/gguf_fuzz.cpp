// libFuzzer target: any byte string either parses into metadata and tensors that can all be read, or throws
// lmforge::Error. Build: make fuzz (clang); seeds: small GGUF files from `lmforge export gguf` (see the Makefile).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lmforge/core/error.h"
#include "lmforge/io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = lmforge::io::GgufFile::from_bytes(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    size_t strings = 0;
    for (const auto& [key, value] : file.metadata()) strings += value.s.size() + value.array_size();
    (void)strings;
    for (const auto& ti : file.tensors()) {
      // Every byte of every tensor is inside the buffer: touch the first and last.
      if (ti.nbytes > 0) {
        const unsigned char* p = file.tensor_data(ti.name);
        volatile unsigned char x = p[0] ^ p[ti.nbytes - 1];
        (void)x;
      }
      try {
        lmforge::Tensor t = file.get(ti.name);
        if (t.numel() > 0 && t.numel() < (1 << 20)) (void)t.to_double_vector();
      } catch (const lmforge::Error&) {
        // a ggml type lmforge cannot convert: a clean error is the expected outcome
      }
      // The importer's path: every block type it reads (k-quants, iq4) dequantized to f32.
      if (ti.nbytes < (1u << 22)) {
        try {
          lmforge::Tensor t = file.get_f32(ti.name);
          (void)t;
          // One expert's rows of a stack, as the importer reads them: the middle third of the rows.
          const int64_t cols = ti.shape.empty() ? 1 : ti.shape.back();
          const int64_t rows = cols > 0 ? t.numel() / cols : 0;
          lmforge::Tensor part = file.get_f32_rows(ti.name, rows / 3, rows / 3);
          (void)part;
          file.drop_pages(ti.name, rows / 3, rows / 3);
        } catch (const lmforge::Error&) {
        }
      }
    }
  } catch (const lmforge::Error&) {
  }
  return 0;
}
