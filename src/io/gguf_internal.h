// Constants and helpers shared by the GGUF reader (gguf.cpp) and writer (gguf_writer.cpp). Private to src/io.
#pragma once
#include <cstddef>
#include <cstdint>

#include "lmforge/io/gguf.h"

namespace lmforge::io::gguf_detail {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint64_t kDefaultAlignment = 32;
inline constexpr size_t kMaxName = 63;  // ggml's GGML_MAX_NAME (64) includes the terminating NUL
inline constexpr uint32_t kMaxDims = 4;

inline bool is_int_type(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::BOOL:
      return true;
    default:
      return false;
  }
}

inline uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

}  // namespace lmforge::io::gguf_detail
