#include "lmforge/core/tensor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "lmforge/core/half.h"
#include "lmforge/core/ops.h"
#include "lmforge/core/quant.h"

namespace lmforge {
namespace {

TEST(Tensor, FactoriesAndItem) {
  Tensor z = Tensor::zeros({2, 3});
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.str(), "f32[2, 3]");
  for (float v : z.to_float_vector()) EXPECT_EQ(v, 0.0f);
  Tensor f = Tensor::full({4}, 2.5, DType::F64);
  EXPECT_EQ(f.to_double_vector(), std::vector<double>(4, 2.5));
  EXPECT_EQ(Tensor::full({1}, 7, DType::I32).item(), 7.0);
  EXPECT_THROW(Tensor::from_vector(std::vector<float>{1, 2, 3}, {2, 2}), Error);
}

TEST(Tensor, ViewsShareStorage) {
  std::vector<float> v(24);
  for (int i = 0; i < 24; ++i) v[i] = static_cast<float>(i);
  Tensor t = Tensor::from_vector(v, {2, 3, 4});
  Tensor tr = t.transpose(1, 2);  // [2, 4, 3]
  EXPECT_EQ(tr.storage(), t.storage());
  EXPECT_FALSE(tr.is_contiguous());
  Tensor c = tr.contiguous();
  EXPECT_NE(c.storage(), t.storage());
  EXPECT_EQ(c.to_float_vector()[1], 4.0f);  // element [0, 0, 1] of the transpose is t[0, 1, 0]
  Tensor s = t.slice(2, 1, 3);              // [2, 3, 2]
  EXPECT_EQ(s.storage(), t.storage());
  EXPECT_EQ(s.to_float_vector(), (std::vector<float>{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22}));
  Tensor sel = t.select(0, 1);
  EXPECT_EQ(sel.shape(), (Shape{3, 4}));
  EXPECT_EQ(sel.to_float_vector()[0], 12.0f);
  EXPECT_EQ(t.view({6, -1}).shape(), (Shape{6, 4}));
  EXPECT_EQ(t.view({6, -1}).storage(), t.storage());
  EXPECT_EQ(tr.reshape({8, 3}).to_float_vector(), c.to_float_vector());
  EXPECT_EQ(t.unsqueeze(1).shape(), (Shape{2, 1, 3, 4}));
}

TEST(Tensor, ErrorsNameTheShapes) {
  Tensor t = Tensor::zeros({2, 3});
  try {
    t.transpose(0, 1).view({6});
    FAIL() << "view of a non-contiguous tensor must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[3, 2]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.view({4}), Error);
  EXPECT_THROW(t.slice(1, 2, 4), Error);
  EXPECT_THROW(t.size(2), Error);
  EXPECT_THROW(Tensor::zeros({3, 30}, DType::Q8_0), Error);  // 30 is not a multiple of the block
  EXPECT_THROW(t.data<double>(), Error);
  try {
    ops::matmul(Var(Tensor::zeros({2, 3})), Var(Tensor::zeros({4, 5})));
    FAIL() << "mismatched matmul must throw";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("f32[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("f32[4, 5]"), std::string::npos) << m;
  }
  EXPECT_THROW(ops::add(Var(Tensor::zeros({2, 3})), Var(Tensor::zeros({2}))), Error);
  EXPECT_THROW(ops::rmsnorm(Var(Tensor::zeros({2, 3})), Var(Tensor::zeros({4})), 1e-5), Error);
  EXPECT_THROW(ops::embedding(Var(Tensor::zeros({5, 2})), Tensor::from_ints({5}, {1})), Error);
  EXPECT_THROW(ops::cross_entropy(Var(Tensor::zeros({2, 5})), Tensor::from_ints({1, 7}, {2})), Error);
  EXPECT_THROW(ops::attention(Var(Tensor::zeros({1, 4, 3, 8})), Var(Tensor::zeros({1, 4, 2, 8})),
                              Var(Tensor::zeros({1, 4, 2, 8}))),
               Error);  // 3 query heads over 2 kv heads
  EXPECT_THROW(ops::topk(Var(Tensor::zeros({2, 3})), 4), Error);
}

TEST(Storage, HugePageScopeAlignsLargeBlocksToHugePages) {
  const uintptr_t huge = uintptr_t(2) << 20;
  EXPECT_FALSE(HugePageScope::active());
  {
    const HugePageScope outer;
    EXPECT_TRUE(HugePageScope::active());
    {
      const HugePageScope inner;  // nests
      EXPECT_TRUE(HugePageScope::active());
    }
    EXPECT_TRUE(HugePageScope::active());
    // Odd sizes of 2 MiB and more: 2 MiB-aligned, every byte usable, freed and taken again like any block.
    for (int64_t n : {int64_t(1) << 19, (int64_t(3) << 20) + 7, int64_t(15) << 17, int64_t(7) << 18}) {
      Tensor t = Tensor::full({n}, 1.5f);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % huge, 0u) << n << " floats";
      EXPECT_EQ(t.data<float>()[n - 1], 1.5f);
      // Sized to the request, not its size class, and freed to the system rather than to the block cache.
      const size_t cached = Storage::cached_bytes(), live = Storage::live_bytes();
      t = Tensor();
      EXPECT_EQ(Storage::cached_bytes(), cached);
      const size_t bytes = static_cast<size_t>(n) * 4, whole = (bytes + huge / 4) / huge * huge;
      EXPECT_EQ(live - Storage::live_bytes(), std::max<size_t>(whole, (bytes + 4095) / 4096 * 4096)) << n << " floats";
    }
    Tensor small = Tensor::full({1000}, 2.0f);  // under 2 MiB: an ordinary block
    EXPECT_EQ(reinterpret_cast<uintptr_t>(small.raw_data()) % 64, 0u);
  }
  EXPECT_FALSE(HugePageScope::active());
}

TEST(Half, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(Half, F16RoundsToNearestEvenLikeHardware) {
  // Row conversion (F16C where present) and the scalar path agree on random and edge values.
  std::mt19937 rng(1);
  std::vector<float> xs = {0.0f,
                           -0.0f,
                           65504.0f,
                           65519.0f,
                           65520.0f,
                           1e-8f,
                           5.96e-8f,
                           2.98e-8f,
                           2.99e-8f,
                           6.1e-5f,
                           1.0f + 1.0f / 2048,
                           1.0f + 3.0f / 2048,
                           std::numeric_limits<float>::infinity()};
  std::uniform_real_distribution<float> u(-70000, 70000);
  std::uniform_real_distribution<float> small(-1e-4f, 1e-4f);
  for (int i = 0; i < 5000; ++i) xs.push_back(i % 2 ? u(rng) : small(rng));
  std::vector<uint16_t> row(xs.size());
  f32_to_f16_row(xs.data(), row.data(), static_cast<int64_t>(xs.size()));
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_EQ(row[i], f32_to_f16(xs[i])) << xs[i];
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);  // tie -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds up to inf
}

TEST(Half, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  uint32_t u = 0x3f808000;  // exactly halfway between 0x3f80 and 0x3f81 -> even (0x3f80)
  float f;
  std::memcpy(&f, &u, 4);
  EXPECT_EQ(f32_to_bf16(f), 0x3f80);
  u = 0x3f818000;  // halfway between 0x3f81 and 0x3f82 -> 0x3f82
  std::memcpy(&f, &u, 4);
  EXPECT_EQ(f32_to_bf16(f), 0x3f82);
  EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
  Tensor t = Tensor::from_vector({1.0f, -2.0f, 3.14159f}, {3}, DType::BF16);
  EXPECT_EQ(t.dtype(), DType::BF16);
  EXPECT_EQ(t.to_float_vector(), (std::vector<float>{1.0f, -2.0f, 3.140625f}));
}

TEST(Quant, Q8_0LayoutAndError) {
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = std::sin(0.3f * i) * (i < 32 ? 1.0f : 100.0f);
  Tensor q = Tensor::from_vector(x, {2, 32}, DType::Q8_0);
  EXPECT_EQ(q.nbytes(), 2 * sizeof(BlockQ8_0));
  const auto* b = static_cast<const BlockQ8_0*>(q.raw_data());
  // The largest magnitude in each block maps to +-127 and the scale is amax / 127 in f16.
  float amax = 0;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  EXPECT_EQ(b[0].d, f32_to_f16(amax / 127.0f));
  int maxq = 0;
  for (int i = 0; i < 32; ++i) maxq = std::max(maxq, std::abs(static_cast<int>(b[0].qs[i])));
  EXPECT_EQ(maxq, 127);
  std::vector<float> y = q.to_float_vector();
  for (int blk = 0; blk < 2; ++blk) {
    const float d = f16_to_f32(b[blk].d);
    for (int i = 0; i < 32; ++i) EXPECT_NEAR(y[blk * 32 + i], x[blk * 32 + i], 0.5f * d + 1e-3f * d * 127);
  }
}

TEST(Quant, Q4_0NibbleOrderMatchesGguf) {
  BlockQ4_0 blk{};
  blk.d = f32_to_f16(0.5f);
  for (int j = 0; j < 16; ++j) blk.qs[j] = static_cast<uint8_t>((j & 0xf) | ((15 - j) << 4));
  float y[32];
  dequantize_row_q4_0(&blk, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * (j - 8));              // low nibbles: elements 0..15
    EXPECT_EQ(y[j + 16], 0.5f * ((15 - j) - 8));  // high nibbles: elements 16..31
  }
  // Round trip: the largest-magnitude value maps to code 0 (value -8 * d with d = max / -8).
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = 0.1f * (i - 10);
  BlockQ4_0 q;
  quantize_row_q4_0(x.data(), &q, 32);
  float back[32];
  dequantize_row_q4_0(&q, back, 32);
  const float d = std::fabs(f16_to_f32(q.d));
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(back[i], x[i], 0.5f * d + 1e-6f);
  EXPECT_NEAR(back[31], x[31], 1e-3 * std::fabs(x[31]));  // the extreme is exact up to the f16 scale
}

TEST(Tensor, ConversionsBetweenAllFloatTypes) {
  std::vector<float> v(64);
  for (int i = 0; i < 64; ++i) v[i] = 0.25f * static_cast<float>(i - 32);
  Tensor t = Tensor::from_vector(v, {2, 32});
  for (DType d : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0}) {
    Tensor c = t.to(d);
    EXPECT_EQ(c.dtype(), d);
    std::vector<float> back = c.to_float_vector();
    const double tol = d == DType::Q4_0 ? 0.6 : d == DType::Q8_0 ? 0.04 : 0.0;
    for (int i = 0; i < 64; ++i) EXPECT_NEAR(back[i], v[i], tol) << dtype_name(d);
  }
  Tensor ints = Tensor::from_ints({1, -2, 3}, {3});
  EXPECT_EQ(ints.to(DType::F32).to_float_vector(), (std::vector<float>{1, -2, 3}));
  EXPECT_EQ(ints.to(DType::F64).to(DType::I32).to_int_vector(), (std::vector<int32_t>{1, -2, 3}));
  // Transposed source converts element-wise.
  Tensor tt = t.view({8, 8}).transpose(0, 1).to(DType::F16);
  EXPECT_EQ(tt.to_float_vector()[1], v[8]);
  EXPECT_EQ(parse_dtype("q4_0"), DType::Q4_0);
  EXPECT_THROW(parse_dtype("q5_k"), Error);
}

TEST(Tensor, Bf16InputsComputeInF32) {
  Var a(Tensor::from_vector({1, 2, 3, 4}, {2, 2}, DType::BF16));
  Var b(Tensor::from_vector({1, 0, 0, 1}, {2, 2}, DType::BF16));
  Var c = ops::matmul(a, b);
  EXPECT_EQ(c.dtype(), DType::F32);
  EXPECT_EQ(c.value().to_float_vector(), (std::vector<float>{1, 2, 3, 4}));
}

}  // namespace
}  // namespace lmforge
