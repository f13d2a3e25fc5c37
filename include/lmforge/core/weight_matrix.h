// Weight matrices in every storage format the inference engine runs (f32, f16, bf16, GGUF's q8_0 / q4_0 and
// k-quants q4_K / q6_K, 4-bit with groups of 128, int8 per output channel), and their products with f32 activations.
//
// This is the one place where the engine multiplies by a weight: the decoder's projections, the experts and the
// LM head all call weight_matmul, so a new format or a faster kernel is an edit here and in src/kernels/cpu/,
// never across the model code.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmforge {

enum class WeightFormat : uint8_t {
  F32,
  F16,
  BF16,
  Q8_0,          // GGUF block_q8_0 (32 values, f16 scale)
  Q4_0,          // GGUF block_q4_0 (32 values, f16 scale, codes - 8)
  Q4_G128,       // 4-bit, groups of 128 along a row, symmetric: value = scale * (q - 8)
  Q4_G128_ASYM,  // 4-bit, groups of 128, asymmetric: value = scale * (q - zero)
  INT8,          // int8 per output channel (row): value = scale[row] * q
  Q4_K,          // GGUF block_q4_K (256 values: f16 d and dmin, 6-bit scale and min per 32, 4-bit codes)
  Q6_K,          // GGUF block_q6_K (256 values: f16 d, int8 scale per 16, 6-bit codes - 32)
  Q5_K,          // GGUF block_q5_K (q4_K's layout with a fifth bit per code)
};

// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_g128", "q4_g128_asym", "int8", "q4_K", "q5_K", "q6_K" (parsing also
// takes "q4_k" / "q5_k" / "q6_k").
std::string_view weight_format_name(WeightFormat f);
// Throws lmforge::Error naming the string and listing the formats.
WeightFormat parse_weight_format(std::string_view name);
// q4_K, q5_K or q6_K (GGUF's k-quant super-blocks of 256 values).
bool is_k_quant(WeightFormat f);
// The dtype of a weight's codes tensor: f32 / f16 / bf16 / q8_0 / q4_0 (a [rows, cols] tensor of that dtype), i8
// (int8), u8 (the g128 formats' nibbles, the k-quants' block bytes).
DType weight_codes_dtype(WeightFormat f);
// Values per block along a row (1, 32, 128 or 256); cols must be a multiple of it.
int64_t weight_format_block(WeightFormat f);

// A [rows, cols] matrix: rows = output features, cols = input features (nn.Linear.weight's layout).
// Immutable once built; copies share the bytes.
class WeightMatrix {
 public:
  WeightMatrix() = default;

  // Round-to-nearest from an f32 (or f16/bf16) [rows, cols] tensor. `importance` (cols values, or null): how much each
  // input column matters, llama.cpp's importance matrix (the mean square of that input); q4_0 and the k-quants then
  // minimise the importance-weighted error, as llama-quantize --imatrix does (the same bytes). The other formats
  // ignore it (ggml's q8_0 does too; the g128 formats have GPTQ and AWQ for calibration).
  static WeightMatrix quantize(const Tensor& w, WeightFormat format, const float* importance = nullptr);
  // Whether quantize() uses an importance vector for format f (q4_0, q4_K, q5_K, q6_K).
  static bool uses_importance(WeightFormat f);
  // From already-quantized parts: the format's codes and (where it has them) per-group scales and zero points.
  // The layout of each part is documented in weight_matrix.cpp; sizes are checked and bad ones are an Error
  // naming `what` (e.g. the tensor name and file).
  static WeightMatrix from_parts(WeightFormat format, int64_t rows, int64_t cols, Tensor codes, Tensor scales,
                                 Tensor zeros, const std::string& what);

  bool defined() const { return rows_ > 0; }
  WeightFormat format() const { return format_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  // Bytes read by one full product (codes + scales + zeros): the decode bandwidth figure.
  size_t nbytes() const;
  const Tensor& codes() const { return codes_; }
  const Tensor& scales() const { return scales_; }
  const Tensor& zeros() const { return zeros_; }

  // The rows of `parts`, in order, as one matrix (same format and cols; an Error otherwise): products that share
  // an input (q/k/v, gate/up) then stream their weights in one pass.
  static WeightMatrix concat_rows(const std::vector<WeightMatrix>& parts);

  // The decode layout (kernels::cpu::interleave_rows4): q8_0 / q4_0 rows in groups of four, interleaved block by
  // block, so a tile of four rows streams one sequence of bytes. A new matrix with the same size, products and
  // dequantized values; other formats come back as they are. The engine uses it; concat_rows and writing a file
  // need the GGUF layout back (file_layout()).
  WeightMatrix interleave_rows4() const { return with_layout(true); }
  WeightMatrix file_layout() const { return with_layout(false); }
  bool interleaved() const { return interleaved_; }

  // f32 [rows, cols].
  Tensor dequantize() const;
  // Rows [r0, r1) as f32 into out (row-major, (r1 - r0) * cols floats).
  void dequantize_rows(int64_t r0, int64_t r1, float* out) const;

 private:
  WeightFormat format_ = WeightFormat::F32;
  int64_t rows_ = 0, cols_ = 0;
  Tensor codes_, scales_, zeros_;
  bool interleaved_ = false;
  WeightMatrix with_layout(bool interleaved) const;  // a copy in that layout (itself when already in it)
};

// y[n, rows] = x[n, cols] · Wᵀ, or y += ... with accumulate. x and y are contiguous f32 with row strides cols and
// rows. Splits over the process thread pool; n = 1 is the decode path (bandwidth-bound), n > 1 prefill.
void weight_matmul(const WeightMatrix& w, const float* x, int64_t n, float* y, bool accumulate = false);

namespace kernels::cpu {
struct QWeight;
}
// The kernels' raw view of a weight in any format (the bytes stay owned by w).
kernels::cpu::QWeight qweight_view(const WeightMatrix& w);

}  // namespace lmforge
