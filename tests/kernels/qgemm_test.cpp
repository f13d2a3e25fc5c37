// Quantized products (src/kernels/cpu/qgemm.cpp) against double-precision references built from the dequantized
// weight. Three checks per format and shape:
//   1. decode path (n below the format's switch to sgemm: 64 rows for q8_0 / q4_0, 32 for int8 / g128, 16 for
//      the 16-bit formats) against dequantized W times the 8-bit-quantized activations the kernel itself uses:
//      the same numbers, only the float summation order differs -> 1e-5 relative (norm of difference / norm);
//   2. any path against dequantized W times the exact f32 activations: the activation rounding (at most half a
//      step, amax/254, per value) bounds this; measured ~0.3% for Gaussian data -> 1e-2;
//   3. the AVX2 and portable paths agree to 1e-5 (both implement the same arithmetic).
#include "lmforge/kernels/qgemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>

#include "lmforge/core/error.h"
#include "lmforge/core/weight_matrix.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge {
namespace {

using kernels::cpu::QImpl;

std::vector<float> gaussian(int64_t n, uint32_t seed, float sd) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

double rel_err(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

// The activations as the kernel sees them: one scale amax/127 per `span` values (32; 128 for the g128 formats),
// round to nearest.
std::vector<float> quantize_activations(const std::vector<float>& x, size_t span = 32) {
  std::vector<float> q(x.size());
  for (size_t b = 0; b < x.size(); b += span) {
    float amax = 0;
    for (size_t j = 0; j < span; ++j) amax = std::max(amax, std::fabs(x[b + j]));
    const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
    for (size_t j = 0; j < span; ++j) q[b + j] = d * std::nearbyint(x[b + j] * id);
  }
  return q;
}

std::vector<double> reference(const Tensor& dq, const std::vector<float>& x, int64_t n, int64_t rows, int64_t cols) {
  std::vector<double> y(static_cast<size_t>(n * rows));
  const float* w = dq.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t k = 0; k < cols; ++k) s += double(x[i * cols + k]) * w[r * cols + k];
      y[i * rows + r] = s;
    }
  return y;
}

const WeightFormat kFormats[] = {
    WeightFormat::F32,     WeightFormat::F16,          WeightFormat::BF16, WeightFormat::Q8_0, WeightFormat::Q4_0,
    WeightFormat::Q4_G128, WeightFormat::Q4_G128_ASYM, WeightFormat::INT8, WeightFormat::Q4_K, WeightFormat::Q6_K};

TEST(Qgemm, EachFormatMatchesDequantizedReference) {
  ThreadCountScope threads(2);
  // 45 rows: tiles of 4 plus a remainder, in one chunk; 203 rows: chunks of several sizes over both threads, each
  // cut into the kernel's four streams with rows left over; 768 columns: six 128-groups, three k-quant
  // super-blocks.
  for (const int64_t rows : {45, 203}) {
    SCOPED_TRACE("rows=" + std::to_string(rows));
    const int64_t cols = 768;
    const std::vector<float> wv = gaussian(rows * cols, 1, 0.02f);
    // Asymmetric weights (a per-row offset) so the zero points of q4_g128_asym are not all 8.
    std::vector<float> wa = wv;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < cols; ++k) wa[r * cols + k] += 0.01f * static_cast<float>(r % 5);
    for (WeightFormat f : kFormats) {
      SCOPED_TRACE(std::string(weight_format_name(f)));
      const bool integer = f != WeightFormat::F32 && f != WeightFormat::F16 && f != WeightFormat::BF16;
      // The g128 formats quantize the activations with one scale per 128 values (their decode tile sums a group in
      // integers): the outlier below coarsens four times as many values as in a block of 32. Measured 1.05% at n = 2
      // (0.3-0.5% for the other formats) -> 2e-2 for their decode path.
      const bool g128 = f == WeightFormat::Q4_G128 || f == WeightFormat::Q4_G128_ASYM;
      // The k-quants: one activation scale per 256 values (ggml's q8_K), the outlier coarsening a whole super-block.
      const bool k256 = f == WeightFormat::Q4_K || f == WeightFormat::Q5_K || f == WeightFormat::Q6_K;
      const WeightMatrix m =
          WeightMatrix::quantize(Tensor::from_vector(f == WeightFormat::Q4_G128_ASYM ? wa : wv, {rows, cols}), f);
      const Tensor dq = m.dequantize();
      const int64_t switch_rows = kernels::cpu::qgemm_sgemm_rows(qweight_view(m).format);
      EXPECT_EQ(switch_rows, f == WeightFormat::F32                                                   ? 48
                             : f == WeightFormat::Q8_0 || f == WeightFormat::Q4_0 || k256 || !integer ? 64
                                                                                                      : 32);
      for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{5}, int64_t{16}, int64_t{33}, switch_rows - 1, switch_rows}) {
        SCOPED_TRACE("n=" + std::to_string(n));
        std::vector<float> x = gaussian(n * cols, 7 + static_cast<uint32_t>(n), 1.0f);
        x[3] = 6.0f;  // an outlier, as real activations have
        const std::vector<double> exact = reference(dq, x, n, rows, cols);
        std::vector<float> y_generic;
        for (QImpl impl : {QImpl::Generic, QImpl::Avx2}) {
          if (!kernels::cpu::qgemm_available(impl)) continue;
          SCOPED_TRACE(impl == QImpl::Avx2 ? "avx2" : "generic");
          // The k-quants stay on their tiles at every row count with AVX2 (no switch to sgemm).
          const bool tiles = n < kernels::cpu::qgemm_sgemm_rows(qweight_view(m), impl);
          std::vector<float> xq = x;
          if (integer && tiles) {
            for (int64_t i = 0; i < n; ++i) {
              std::vector<float> row(x.begin() + i * cols, x.begin() + (i + 1) * cols);
              row = quantize_activations(row, k256 ? 256 : g128 ? 128 : 32);
              std::copy(row.begin(), row.end(), xq.begin() + i * cols);
            }
          }
          const std::vector<double> same = reference(dq, xq, n, rows, cols);
          std::vector<float> y(static_cast<size_t>(n * rows), 0.0f);
          kernels::cpu::qgemm(qweight_view(m), x.data(), n, y.data(), false, impl);
          EXPECT_LE(rel_err(y, same), 1e-5);
          EXPECT_LE(rel_err(y, exact), (g128 || k256) && tiles ? 2e-2 : 1e-2);
          if (impl == QImpl::Generic) {
            y_generic = y;
          } else if (!y_generic.empty() && tiles == (n < switch_rows)) {  // both on the same path
            std::vector<double> g(y_generic.begin(), y_generic.end());
            EXPECT_LE(rel_err(y, g), 1e-5);
          }
          // accumulate adds to what is there
          kernels::cpu::qgemm(qweight_view(m), x.data(), n, y.data(), true, impl);
          std::vector<double> twice = same;
          for (double& v : twice) v *= 2;
          EXPECT_LE(rel_err(y, twice), 1e-5);
        }
      }
    }
  }
}

// int8 has no block constraint: a row length that is not a multiple of 32 still multiplies correctly.
TEST(Qgemm, Int8RaggedRows) {
  const int64_t rows = 9, cols = 70;
  const WeightMatrix m =
      WeightMatrix::quantize(Tensor::from_vector(gaussian(rows * cols, 5, 0.02f), {rows, cols}), WeightFormat::INT8);
  const std::vector<float> x = gaussian(cols, 6, 1.0f);
  std::vector<float> y(static_cast<size_t>(rows));
  weight_matmul(m, x.data(), 1, y.data());
  EXPECT_LE(rel_err(y, reference(m.dequantize(), x, 1, rows, cols)), 1e-5);
}

// A zero activation block and a zero weight group must give exact zeros, not NaN (scale 0, inverse guarded).
TEST(Qgemm, ZeroBlocksGiveZero) {
  const int64_t rows = 8, cols = 256;
  std::vector<float> w(static_cast<size_t>(rows * cols), 0.0f);
  const std::vector<float> x(static_cast<size_t>(70 * cols), 0.0f);
  for (WeightFormat f : kFormats) {
    const WeightMatrix q = WeightMatrix::quantize(Tensor::from_vector(w, {rows, cols}), f);
    for (const WeightMatrix& m : {q, q.interleave_rows4()}) {
      // one row (decode), a few (the batched tiles), 70 (prefill: sgemm panels, or the VNNI walk)
      for (int64_t n : {1, 3, 70}) {
        for (QImpl impl : {QImpl::Generic, QImpl::Avx2, QImpl::Vnni}) {
          if (!kernels::cpu::qgemm_available(impl)) continue;
          std::vector<float> y(static_cast<size_t>(n * rows), 1.0f);
          kernels::cpu::qgemm(qweight_view(m), x.data(), n, y.data(), false, impl);
          for (float v : y) EXPECT_EQ(v, 0.0f) << weight_format_name(f) << " n " << n;
        }
      }
    }
  }
}

// The four-row decode layout of q8_0 / q4_0 (interleave_rows4): the same products on both paths and every product
// size (tiles, a tail of rows % 4 in the GGUF layout, the dequantized prefill panels), bit for bit except the AVX2
// decode tiles, which keep other partial sums (float rounding: 1e-6 relative, and 1e-5 against the dequantized
// weight times the same 8-bit activations); the same dequantized rows; file_layout() gives the GGUF bytes back.
TEST(Qgemm, InterleavedRowsGiveIdenticalResults) {
  ThreadCountScope threads(2);
  for (WeightFormat f : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    for (int64_t rows : {1, 4, 7, 45, 130}) {
      const int64_t cols = rows == 130 ? 1024 : 96;
      SCOPED_TRACE(std::string(weight_format_name(f)) + " rows " + std::to_string(rows));
      const WeightMatrix m =
          WeightMatrix::quantize(Tensor::from_vector(gaussian(rows * cols, 11, 0.02f), {rows, cols}), f);
      const WeightMatrix p = m.interleave_rows4();
      ASSERT_TRUE(p.interleaved());
      EXPECT_EQ(p.nbytes(), m.nbytes());
      if (rows >= 4) {
        EXPECT_NE(std::memcmp(p.codes().raw_data(), m.codes().raw_data(), m.codes().nbytes()), 0);
      }
      const WeightMatrix back = p.file_layout();
      EXPECT_FALSE(back.interleaved());
      EXPECT_EQ(std::memcmp(back.codes().raw_data(), m.codes().raw_data(), m.codes().nbytes()), 0);
      EXPECT_EQ(p.dequantize().to_float_vector(), m.dequantize().to_float_vector());
      std::vector<float> a(static_cast<size_t>(2 * cols)), b(a.size());
      p.dequantize_rows(rows / 2, rows / 2 + 1, a.data());
      m.dequantize_rows(rows / 2, rows / 2 + 1, b.data());
      EXPECT_EQ(a, b);
      for (int64_t n : {1, 3, 16, 20, 64, 70}) {
        const bool tiles = n < kernels::cpu::qgemm_sgemm_rows(qweight_view(m).format);
        const std::vector<float> x = gaussian(n * cols, 13 + static_cast<uint32_t>(n), 1.0f);
        std::vector<float> xq = x;
        for (int64_t i = 0; tiles && i < n; ++i) {
          const std::vector<float> row = quantize_activations({x.begin() + i * cols, x.begin() + (i + 1) * cols});
          std::copy(row.begin(), row.end(), xq.begin() + i * cols);
        }
        const std::vector<double> same = reference(m.dequantize(), xq, n, rows, cols);
        for (QImpl impl : {QImpl::Generic, QImpl::Avx2}) {
          if (!kernels::cpu::qgemm_available(impl)) continue;
          SCOPED_TRACE("n " + std::to_string(n) + (impl == QImpl::Avx2 ? " avx2" : " generic"));
          std::vector<float> yp(static_cast<size_t>(n * rows)), ym(yp.size());
          kernels::cpu::qgemm(qweight_view(p), x.data(), n, yp.data(), false, impl);
          kernels::cpu::qgemm(qweight_view(m), x.data(), n, ym.data(), false, impl);
          EXPECT_LE(rel_err(yp, same), 1e-5);
          if (impl == QImpl::Avx2 && tiles) {
            EXPECT_LE(rel_err(yp, std::vector<double>(ym.begin(), ym.end())), 1e-6);
          } else {
            EXPECT_EQ(yp, ym);
          }
        }
      }
    }
  }
  // Other formats have no such layout; stacking needs the GGUF layout.
  const WeightMatrix i8 =
      WeightMatrix::quantize(Tensor::from_vector(gaussian(64, 1, 0.1f), {2, 32}), WeightFormat::INT8);
  EXPECT_FALSE(i8.interleave_rows4().interleaved());
  const WeightMatrix q =
      WeightMatrix::quantize(Tensor::from_vector(gaussian(256, 2, 0.1f), {8, 32}), WeightFormat::Q8_0);
  EXPECT_THROW(WeightMatrix::concat_rows({q.interleave_rows4(), q}), Error);
  // The kernel-level repack refuses what it cannot lay out, before touching dst.
  std::vector<uint8_t> src(4 * 34), dst(src.size(), 0xab);
  EXPECT_THROW(kernels::cpu::interleave_rows4(kernels::cpu::QFormat::INT8, 4, 32, src.data(), dst.data()),
               std::invalid_argument);
  EXPECT_THROW(kernels::cpu::interleave_rows4(kernels::cpu::QFormat::Q8_0, 4, 48, src.data(), dst.data()),
               std::invalid_argument);
  EXPECT_THROW(kernels::cpu::interleave_rows4(kernels::cpu::QFormat::Q4_0, -1, 32, src.data(), dst.data()),
               std::invalid_argument);
  EXPECT_EQ(dst, std::vector<uint8_t>(src.size(), 0xab));
}

// Batched decode: the tiles read each weight tile once and dot it with every activation row (interleaved q8_0 up
// to four rows in one pass; q4_K / q6_K likewise, a weight row at a time); each row's product must be bit for bit the
// one-row product, at every batch size the
// tiles take (remainders of 4 and 2 included) and with rows outside the four streams. f16 / bf16 take two activation
// rows a pass (tile_float_rows), rows of any length (104: a tail after the 16-value steps).
TEST(Qgemm, BatchedRowsEqualRowByRowProducts) {
  ThreadCountScope threads(2);
  for (WeightFormat f :
       {WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::INT8, WeightFormat::F16, WeightFormat::BF16,
        WeightFormat::F32, WeightFormat::Q4_K, WeightFormat::Q5_K, WeightFormat::Q6_K}) {
    const bool blocks = f == WeightFormat::Q8_0 || f == WeightFormat::Q4_0;
    const bool k256 = f == WeightFormat::Q4_K || f == WeightFormat::Q5_K ||
                      f == WeightFormat::Q6_K;  // one weight row, 2-4 activation rows
    for (int64_t rows : {4, 45, 260}) {
      const int64_t cols = rows == 260 || k256 ? 512 : f == WeightFormat::F16 || f == WeightFormat::BF16 ? 104 : 96;
      const WeightMatrix m =
          WeightMatrix::quantize(Tensor::from_vector(gaussian(rows * cols, 21, 0.02f), {rows, cols}), f);
      std::vector<WeightMatrix> layouts = {m};
      if (blocks) layouts.push_back(m.interleave_rows4());
      for (const WeightMatrix& w : layouts) {
        const kernels::cpu::QWeight q = qweight_view(w);
        for (QImpl impl : {QImpl::Generic, QImpl::Avx2}) {
          if (!kernels::cpu::qgemm_available(impl)) continue;
          // (the k-quants past 64 rows too: products of up to 64 activation rows at a time)
          const int64_t limit = std::min<int64_t>(k256 ? 150 : 64, kernels::cpu::qgemm_sgemm_rows(q, impl));
          for (int64_t n = 2; n < limit; n += n < 11 ? 1 : 26) {
            SCOPED_TRACE(std::string(weight_format_name(f)) + (w.interleaved() ? " interleaved" : "") + " rows " +
                         std::to_string(rows) + " n " + std::to_string(n) + (impl == QImpl::Avx2 ? " avx2" : ""));
            const std::vector<float> x = gaussian(n * cols, 31 + static_cast<uint32_t>(n), 1.0f);
            std::vector<float> batched(static_cast<size_t>(n * rows)), one(batched.size());
            kernels::cpu::qgemm(q, x.data(), n, batched.data(), false, impl);
            for (int64_t i = 0; i < n; ++i)
              kernels::cpu::qgemm(q, x.data() + i * cols, 1, one.data() + i * rows, false, impl);
            ASSERT_EQ(batched, one);
          }
        }
      }
    }
  }
}

// The AVX-512 VNNI tiles (interleaved q8_0 / q4_0, the g128 formats, int8) form the same integer dots as the AVX2 tiles
// and the same float steps, so each activation row's product is bit for bit the AVX2 one-row product: at every row
// count (the streamed tiles with their remainders of 4, 2 and 1, and from kVnniPrefillRows the blocked walk, whose
// spans of 32 blocks resume each row's accumulators: cols 1056 is 33 blocks, 1152 nine groups of 128; 300 rows run as
// products of 256 and 44), with accumulate, for rows outside the four streams and in the GGUF-layout tail (rows % 4),
// with 1 and 2 threads. Also: VNNI never hands these weights to the sgemm panels. f32 / f16 / bf16 (six activation
// rows a pass on the same CPUs, tile_float_rows_wide, with the remainders of 5 and 4) likewise below their switch to
// sgemm, on rows with a tail of 6 values.
TEST(Qgemm, VnniTilesEqualAvx2Tiles) {
  if (!kernels::cpu::qgemm_available(QImpl::Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  for (int threads : {1, 2}) {
    ThreadCountScope scope(threads);
    for (WeightFormat f : {WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4_G128, WeightFormat::Q4_G128_ASYM,
                           WeightFormat::INT8, WeightFormat::F32, WeightFormat::F16, WeightFormat::BF16}) {
      const bool g128 = f == WeightFormat::Q4_G128 || f == WeightFormat::Q4_G128_ASYM;
      // f32 / f16 / bf16: six activation rows a pass (tile_float_rows_wide) up to the switch to sgemm, rows of any
      // length.
      const bool floats = f == WeightFormat::F32 || f == WeightFormat::F16 || f == WeightFormat::BF16;
      for (int64_t rows : {4, 45, 262}) {
        for (int64_t cols : g128     ? std::vector<int64_t>{128, 1152}
                            : floats ? std::vector<int64_t>{70, 1056}
                                     : std::vector<int64_t>{96, 1056}) {
          if (threads == 1 && rows != 262) continue;
          std::vector<float> wv = gaussian(rows * cols, 41, 0.02f);
          for (int64_t r = 0; r < rows; ++r)  // per-row offsets: zero points other than 8 for the asymmetric format
            for (int64_t k = 0; k < cols; ++k) wv[r * cols + k] += 0.01f * static_cast<float>(r % 5);
          const WeightMatrix w = WeightMatrix::quantize(Tensor::from_vector(wv, {rows, cols}), f).interleave_rows4();
          const kernels::cpu::QWeight q = qweight_view(w);
          EXPECT_EQ(kernels::cpu::qgemm_sgemm_rows(q, QImpl::Vnni),
                    floats ? kernels::cpu::qgemm_sgemm_rows(q.format) : std::numeric_limits<int64_t>::max());
          EXPECT_EQ(kernels::cpu::qgemm_sgemm_rows(q, QImpl::Avx2), kernels::cpu::qgemm_sgemm_rows(q.format));
          for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 11, 16, 47, 63, 64, 65, 70, 131, 300}) {
            if (floats && n >= kernels::cpu::qgemm_sgemm_rows(q.format)) continue;
            SCOPED_TRACE(std::string(weight_format_name(f)) + " rows " + std::to_string(rows) + " cols " +
                         std::to_string(cols) + " n " + std::to_string(n) + " threads " + std::to_string(threads));
            const std::vector<float> x = gaussian(n * cols, 51 + static_cast<uint32_t>(n), 1.0f);
            std::vector<float> vnni(static_cast<size_t>(n * rows)), one(vnni.size());
            kernels::cpu::qgemm(q, x.data(), n, vnni.data(), false, QImpl::Vnni);
            for (int64_t i = 0; i < n; ++i)
              kernels::cpu::qgemm(q, x.data() + i * cols, 1, one.data() + i * rows, false, QImpl::Avx2);
            ASSERT_EQ(vnni, one);
            // accumulate: y + product, each element once
            std::vector<float> acc(vnni.size(), 0.5f);
            kernels::cpu::qgemm(q, x.data(), n, acc.data(), true, QImpl::Vnni);
            for (size_t i = 0; i < acc.size(); ++i) ASSERT_EQ(acc[i], 0.5f + one[i]) << i;
          }
        }
      }
    }
  }
}

// The prefill path (from qgemm_sgemm_rows activation rows) dequantizes panels of the weight and runs sgemm on them; the
// AVX2 dequantizer must give the portable one's values bit for bit (the same single rounding of d * code), so the two
// paths' products are identical: every format, both q8_0 / q4_0 layouts, row lengths with a tail (f16 / bf16 / int8
// need no multiple of 32 or 8), a row count with a tail of rows % 4.
TEST(Qgemm, PrefillPathsGiveIdenticalProducts) {
  if (!kernels::cpu::qgemm_available(QImpl::Avx2)) GTEST_SKIP() << "no AVX2";
  ThreadCountScope threads(2);
  for (WeightFormat f : kFormats) {
    const bool any_cols =
        f == WeightFormat::F32 || f == WeightFormat::F16 || f == WeightFormat::BF16 || f == WeightFormat::INT8;
    const bool k256 = f == WeightFormat::Q4_K || f == WeightFormat::Q5_K || f == WeightFormat::Q6_K;
    for (const int64_t cols : {int64_t{256}, int64_t{1280},
                               any_cols ? int64_t{70}
                               : k256   ? int64_t{512}
                                        : int64_t{384}}) {
      const int64_t rows = 71;
      const WeightMatrix m =
          WeightMatrix::quantize(Tensor::from_vector(gaussian(rows * cols, 21, 0.05f), {rows, cols}), f);
      for (const WeightMatrix& w : {m, m.interleave_rows4()}) {
        SCOPED_TRACE(std::string(weight_format_name(f)) + " cols " + std::to_string(cols) +
                     (w.interleaved() ? " interleaved" : ""));
        const int64_t n = kernels::cpu::qgemm_sgemm_rows(qweight_view(w).format) + 1;
        const std::vector<float> x = gaussian(n * cols, 22, 1.0f);
        std::vector<float> yg(static_cast<size_t>(n * rows)), ya(yg.size());
        kernels::cpu::qgemm(qweight_view(w), x.data(), n, yg.data(), false, QImpl::Generic);
        // The portable path's panels dequantize with the scalar code, m.dequantize() with the AVX2 code where the CPU
        // has it: the two agree (the sgemm of either within rounding of the double reference).
        EXPECT_LE(rel_err(yg, reference(m.dequantize(), x, n, rows, cols)), 1e-5);
        if (k256)
          continue;  // with AVX2 the k-quants stay on their integer tiles (EachFormatMatchesDequantizedReference)
        kernels::cpu::qgemm(qweight_view(w), x.data(), n, ya.data(), false, QImpl::Avx2);
        EXPECT_EQ(ya, yg);
        EXPECT_LE(rel_err(ya, reference(m.dequantize(), x, n, rows, cols)), 1e-5);
      }
    }
  }
}

// The decode-sized product is split over threads by rows, the prefill product into panels by the thread count; the
// result does not depend on the thread count.
TEST(Qgemm, ThreadCountDoesNotChangeResult) {
  const int64_t rows = 300, cols = 1024;
  const WeightMatrix m =
      WeightMatrix::quantize(Tensor::from_vector(gaussian(rows * cols, 3, 0.02f), {rows, cols}), WeightFormat::Q4_0);
  const std::vector<float> x = gaussian(cols, 4, 1.0f);
  std::vector<float> y1(static_cast<size_t>(rows)), y2(static_cast<size_t>(rows));
  {
    ThreadCountScope t(1);
    weight_matmul(m, x.data(), 1, y1.data());
  }
  {
    ThreadCountScope t(2);
    weight_matmul(m, x.data(), 1, y2.data());
  }
  EXPECT_EQ(y1, y2);
  // Prefill: dequantized panels of the same rows at any thread count, so the same sgemm calls.
  const int64_t n = 70;  // q4_0 switches to sgemm at 64 rows
  const std::vector<float> xs = gaussian(n * cols, 5, 1.0f);
  std::vector<float> p1(static_cast<size_t>(n * rows));
  {
    ThreadCountScope t(1);
    weight_matmul(m, xs.data(), n, p1.data());
  }
  for (int threads : {2, 4}) {
    ThreadCountScope t(threads);
    std::vector<float> p(p1.size());
    weight_matmul(m, xs.data(), n, p.data());
    EXPECT_EQ(p, p1) << threads << " threads";
  }
}

}  // namespace
}  // namespace lmforge
