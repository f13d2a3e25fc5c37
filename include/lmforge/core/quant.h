// GGUF-compatible block quantization (q8_0, q4_0, and the k-quants q4_K, q5_K, q6_K): reference row conversions.
// Bit-exact with ggml's reference quantize_row_*_ref (what llama-quantize runs without an importance matrix), so GGUF
// import and export copy bytes and a file quantized here equals one quantized by llama.cpp from the same f32 values.
#pragma once
#include <cstdint>

#include "lmforge/core/dtype.h"

namespace lmforge {

// n must be a multiple of the block size (32).
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n);
void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n);
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n);

// k-quants: n a multiple of 256; y receives n / 256 blocks of kQ4KBytes / kQ6KBytes bytes.
constexpr int64_t kKBlockSize = 256;
constexpr size_t kQ4KBytes = 144;  // block_q4_K: f16 d, f16 dmin, u8 scales[12], u8 qs[128]
constexpr size_t kQ5KBytes = 176;  // block_q5_K: f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]
constexpr size_t kQ6KBytes = 210;  // block_q6_K: u8 ql[128], u8 qh[64], i8 scales[16], f16 d
//
// `importance`, where given, holds n values: how much each column of the row matters (llama.cpp's importance matrix:
// the mean square of the inputs that column multiplies). The quantizers then minimise the importance-weighted error,
// as ggml's quantize_row_*_impl do for llama-quantize --imatrix (the same bytes); null: the reference above.
void quantize_row_q4_K(const float* x, uint8_t* y, int64_t n, const float* importance = nullptr);
void quantize_row_q5_K(const float* x, uint8_t* y, int64_t n, const float* importance = nullptr);
void quantize_row_q6_K(const float* x, uint8_t* y, int64_t n, const float* importance = nullptr);
// q4_0 with importance (ggml's quantize_row_q4_0_impl): one row per call, since each block's weights use the whole
// row's mean square; null: quantize_row_q4_0 above.
void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n, const float* importance);

}  // namespace lmforge
