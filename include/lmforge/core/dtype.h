// Element types. Quantized types are GGUF-compatible blocks: a tensor's last dimension is split into blocks of
// block_size() values stored as type_size() bytes each.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lmforge {

// U8 and I8 hold raw codes of the engine's own weight formats (see weight_matrix.h).
// Q4_K / Q5_K / Q6_K are GGUF's k-quant super-blocks of 256 values (layouts in quant.h and the kernels' qgemm.h).
enum class DType : uint8_t { F32, F64, BF16, F16, I32, Q8_0, Q4_0, U8, I8, Q4_K, Q6_K, Q5_K };

constexpr int64_t kQ8BlockSize = 32;
constexpr int64_t kQ4BlockSize = 32;

// GGUF block_q8_0: one f16 scale, 32 signed 8-bit codes. value = d * q.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQ8BlockSize];
};
static_assert(sizeof(BlockQ8_0) == 34);

// GGUF block_q4_0: one f16 scale, 32 4-bit codes packed two per byte (element j in the low nibble of byte j,
// element j+16 in the high nibble). value = d * (q - 8).
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQ4BlockSize / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// Values per storage block (1 for plain types).
constexpr int64_t block_size(DType t) {
  switch (t) {
    case DType::Q8_0:
      return kQ8BlockSize;
    case DType::Q4_0:
      return kQ4BlockSize;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return 256;
    default:
      return 1;
  }
}

// Bytes per storage block.
constexpr size_t type_size(DType t) {
  switch (t) {
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F64:
      return 8;
    case DType::U8:
    case DType::I8:
      return 1;
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::Q8_0:
      return sizeof(BlockQ8_0);
    case DType::Q4_0:
      return sizeof(BlockQ4_0);
    case DType::Q4_K:
      return 144;
    case DType::Q5_K:
      return 176;
    case DType::Q6_K:
      return 210;
  }
  return 0;
}

constexpr bool is_quantized(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}
constexpr bool is_floating(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}

std::string_view dtype_name(DType t);
// Parses "f32", "bf16", "q8_0", ... ; throws lmforge::Error naming the string otherwise.
DType parse_dtype(std::string_view name);

}  // namespace lmforge
