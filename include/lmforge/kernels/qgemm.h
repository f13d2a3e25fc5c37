// Products of f32 activations with weights stored in 16-bit or quantized formats: y[n, rows] = x[n, cols] · Wᵀ.
//
// The layouts are WeightMatrix's (src/core/weight_matrix.cpp documents them); this layer sees raw bytes only.
// For the integer formats (q8_0, q4_0, q4_g128, q4_g128_asym, int8) the activations are first quantized to 8-bit
// blocks of 32 with an f32 scale, as ggml does for its q8_0 / q4_0 dot products (one scale per 128 values for the
// g128 formats, as ggml's K-quants use 256), so the inner loop is an integer dot product (AVX2 maddubs) with one
// float multiply-add per block (per group for g128). That adds an activation rounding error of at most half a step
// (amax / 254 over the scale's span) per value; f16 and bf16 weights multiply f32 activations directly.
#pragma once
#include <cstdint>

namespace lmforge::kernels::cpu {

// Q4_K / Q5_K / Q6_K: GGUF's k-quant super-blocks of 256 values (block_q4_K, 144 bytes: f16 d, f16 dmin, 12 bytes of
// packed 6-bit scales and mins, 128 bytes of nibbles; block_q6_K, 210 bytes: 128 bytes of low nibbles, 64 of high
// 2-bit pairs, 16 int8 scales, f16 d; block_q5_K, 176 bytes: q4_K's with 32 bytes of fifth bits after the scales),
// row after row as in the file. Their activations are quantized with one scale
// per 256 values (ggml's q8_K), and each super-block is summed in integers and scaled once.
enum class QFormat : uint8_t { F16, BF16, Q8_0, Q4_0, Q4_G128, Q4_G128_ASYM, INT8, F32, Q4_K, Q6_K, Q5_K };

struct QWeight {
  QFormat format = QFormat::Q8_0;
  int64_t rows = 0, cols = 0;  // cols a multiple of the format's block (32; 128 for g128; 256 for the k-quants)
  const void* codes = nullptr;
  const void* scales = nullptr;  // f16 [rows, cols/128] (g128), f32 [rows] (int8); unused otherwise
  const void* zeros = nullptr;   // u8 [rows, cols/128] (q4_g128_asym only)
  // q8_0 / q4_0 only: the decode layout of interleave_rows4 instead of GGUF's row after row.
  bool rows4 = false;
};

// The decode layout of q8_0 / q4_0 weights: rows [0, rows / 4 * 4) in groups of four, interleaved block by block.
// Block b of group g holds the four rows' f16 scales (8 bytes), then their codes (4 x 32 bytes for q8_0, 4 x 16 for
// q4_0), so group g starts where row 4g starts in the GGUF layout and has the same size; the last rows % 4 rows keep
// the GGUF layout. A tile of four rows then reads one sequential stream with its scales side by side, where the GGUF
// layout makes it four streams and four scattered scale loads: the q8_0 decode products ran 10-20% faster
// (docs/PERFORMANCE.md). Converts src (GGUF layout) into dst, or back with inverse; src and dst must not overlap.
// Other formats are an error.
void interleave_rows4(QFormat format, int64_t rows, int64_t cols, const void* src, void* dst, bool inverse = false);

// Auto: the best the CPU has. Avx2: the AVX2 tiles only. Vnni: AVX2 with the AVX-512 VNNI tiles for interleaved
// q8_0 / q4_0, the g128 formats and int8, and the f32 / f16 / bf16 tile at six activation rows a pass (the same
// results as Avx2's tiles, bit for bit).
enum class QImpl { Auto, Generic, Avx2, Vnni };

// Splits the rows over the thread pool. accumulate: y += instead of y =. With n >= qgemm_sgemm_rows(w, impl)
// activation rows, F32 weights go to sgemm (gemm<float>) and the others are dequantized into f32 panels for sgemm
// (exact f32 activations); below that, every format streams its rows through the tile kernels, each thread reading
// its rows as four streams in lockstep, prefetched ahead (decode is bound by how fast the weights arrive), with the
// activations rounded to 8 bits for the integer formats.
void qgemm(const QWeight& w, const float* x, int64_t n, float* y, bool accumulate, QImpl impl = QImpl::Auto);

// From how many activation rows qgemm switches to sgemm: 64 for q8_0 / q4_0 / f16 / bf16, 48 for f32, 32 for int8 and
// the g128 formats (measurements in qgemm.cpp).
int64_t qgemm_sgemm_rows(QFormat f);
// The same for one weight and implementation: interleaved q8_0 / q4_0, the g128 formats and int8 (rows of whole
// blocks) on the AVX-512 VNNI tiles never switch (their integer dots outrun the dequantized sgemm panels at every row
// count: prefill sees 8-bit activations there, as in decode and in llama.cpp); otherwise qgemm_sgemm_rows(w.format).
int64_t qgemm_sgemm_rows(const QWeight& w, QImpl impl = QImpl::Auto);

// Row r of the weight as f32 (cols values), in either layout.
void dequantize_row(const QWeight& w, int64_t r, float* out);

// True when `impl` can run here (Avx2 needs the CPU's AVX2/FMA/F16C, Vnni also AVX-512 F/BW/VL/VNNI).
bool qgemm_available(QImpl impl);

}  // namespace lmforge::kernels::cpu
