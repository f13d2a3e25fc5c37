#include "lmforge/core/weight_matrix.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lmforge/core/error.h"
#include "lmforge/kernels/qgemm.h"

namespace lmforge {
namespace {

Tensor random_weight(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (float& x : v) x = nd(rng);
  return Tensor::from_vector(v, {rows, cols});
}

double rel_err(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// Each format's round trip stays within its grid's error, and the product equals the dequantized f32 product.
TEST(WeightMatrix, RoundTripAndProductPerFormat) {
  const int64_t rows = 96, cols = 256;
  const Tensor w = random_weight(rows, cols, 1);
  const struct {
    WeightFormat f;
    double max_rel;
  } cases[] = {{WeightFormat::F32, 0},
               {WeightFormat::F16, 1e-3},
               {WeightFormat::BF16, 5e-3},
               {WeightFormat::Q8_0, 1e-2},
               {WeightFormat::Q4_0, 0.2},
               {WeightFormat::Q4_G128, 0.2},
               {WeightFormat::Q4_G128_ASYM, 0.2},
               {WeightFormat::INT8, 2e-2}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(weight_format_name(c.f)));
    const WeightMatrix m = WeightMatrix::quantize(w, c.f);
    EXPECT_EQ(m.rows(), rows);
    EXPECT_EQ(m.cols(), cols);
    const Tensor dq = m.dequantize();
    EXPECT_LE(rel_err(dq.data<float>(), w.data<float>(), rows * cols), c.max_rel);
    for (int64_t n : {1, 3, 17, 65}) {
      const Tensor x = random_weight(n, cols, 7);
      std::vector<float> y(static_cast<size_t>(n * rows)), ref(static_cast<size_t>(n * rows), 0.0f);
      weight_matmul(m, x.data<float>(), n, y.data());
      for (int64_t i = 0; i < n; ++i)
        for (int64_t r = 0; r < rows; ++r) {
          double s = 0;
          for (int64_t k = 0; k < cols; ++k)
            s += double(x.data<float>()[i * cols + k]) * dq.data<float>()[r * cols + k];
          ref[i * rows + r] = static_cast<float>(s);
        }
      // Integer formats quantize the activations to 8-bit blocks on the tile path (below qgemm_sgemm_rows; at every
      // row count for the g128 formats on AVX-512 VNNI, and for q8_0 / q4_0 in the interleaved layout): half a step
      // of amax/127 per value, about 0.3% of the product's norm for Gaussian data (tests/kernels/qgemm_test.cpp checks
      // that path exactly against quantized activations).
      const bool exact = c.f == WeightFormat::F32 || c.f == WeightFormat::F16 || c.f == WeightFormat::BF16 ||
                         n >= kernels::cpu::qgemm_sgemm_rows(qweight_view(m));
      const double tol = exact ? 1e-5 : 1e-2;
      EXPECT_LE(rel_err(y.data(), ref.data(), n * rows), tol);
      weight_matmul(m, x.data<float>(), n, y.data(), /*accumulate=*/true);
      for (float& v : ref) v *= 2;
      EXPECT_LE(rel_err(y.data(), ref.data(), n * rows), tol);
    }
    const WeightMatrix again =
        WeightMatrix::from_parts(c.f, rows, cols, m.codes(), m.scales(), m.zeros(), "test weight");
    EXPECT_EQ(again.nbytes(), m.nbytes());
  }
}

// Stacking rows (the engine's fused q/k/v and gate/up) keeps every row's bytes: the stacked matrix dequantizes to
// the parts' dequantized rows one after the other, in every format; a different format or width is an error.
TEST(WeightMatrix, ConcatRowsStacksEveryFormat) {
  for (const char* name : {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_g128", "q4_g128_asym", "int8"}) {
    SCOPED_TRACE(name);
    const WeightFormat f = parse_weight_format(name);
    const WeightMatrix a = WeightMatrix::quantize(random_weight(5, 256, 11), f),
                       b = WeightMatrix::quantize(random_weight(3, 256, 12), f);
    const WeightMatrix m = WeightMatrix::concat_rows({a, b});
    ASSERT_EQ(m.rows(), 8);
    ASSERT_EQ(m.cols(), 256);
    EXPECT_EQ(m.format(), f);
    EXPECT_EQ(m.nbytes(), a.nbytes() + b.nbytes());
    const std::vector<float> got = m.dequantize().to_float_vector(), da = a.dequantize().to_float_vector(),
                             db = b.dequantize().to_float_vector();
    std::vector<float> want = da;
    want.insert(want.end(), db.begin(), db.end());
    EXPECT_EQ(got, want);
  }
  const WeightMatrix q8 = WeightMatrix::quantize(random_weight(2, 64, 1), WeightFormat::Q8_0);
  EXPECT_THROW(WeightMatrix::concat_rows({q8, WeightMatrix::quantize(random_weight(2, 64, 1), WeightFormat::Q4_0)}),
               Error);
  EXPECT_THROW(WeightMatrix::concat_rows({q8, WeightMatrix::quantize(random_weight(2, 96, 1), WeightFormat::Q8_0)}),
               Error);
  EXPECT_THROW(WeightMatrix::concat_rows({}), Error);
}

TEST(WeightMatrix, BadPartsAndNamesAreErrors) {
  EXPECT_THROW(parse_weight_format("q3_k"), Error);
  EXPECT_EQ(parse_weight_format("q4_g128_asym"), WeightFormat::Q4_G128_ASYM);
  const Tensor w = random_weight(4, 100, 2);
  EXPECT_THROW(WeightMatrix::quantize(w, WeightFormat::Q8_0), Error);  // 100 is not a multiple of 32
  const WeightMatrix m = WeightMatrix::quantize(random_weight(4, 128, 3), WeightFormat::Q4_G128_ASYM);
  try {
    WeightMatrix::from_parts(WeightFormat::Q4_G128_ASYM, 4, 128, m.codes(), m.scales(), Tensor(), "layer.0.w");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer.0.w"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("zeros"), std::string::npos);
  }
  Tensor bad_zeros = Tensor::full({4, 1}, 16, DType::U8);
  EXPECT_THROW(WeightMatrix::from_parts(WeightFormat::Q4_G128_ASYM, 4, 128, m.codes(), m.scales(), bad_zeros, "w"),
               Error);
}

}  // namespace
}  // namespace lmforge
