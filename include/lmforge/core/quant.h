// GGUF-compatible block quantization (q8_0, q4_0): reference row conversions. Bit-exact with ggml's reference
// quantize_row_q8_0_ref / quantize_row_q4_0_ref, so GGUF import and export copy bytes.
#pragma once
#include <cstdint>

#include "lmforge/core/dtype.h"

namespace lmforge {

// n must be a multiple of the block size (32).
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n);
void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n);
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n);

}  // namespace lmforge
