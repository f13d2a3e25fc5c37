// ggml block formats -> f32 (src/io/ggml_dequant.cpp): hand-built blocks checked against values worked out from
// ggml-common.h's layouts, then bit-for-bit agreement with ggml's own dequantize_row_* (the prebuilt libggml-base.so
// of node-llama-cpp, loaded at run time when installed) on blocks its own quantizer made and on random bytes.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "lmforge/core/error.h"
#include "lmforge/core/half.h"
#include "lmforge/core/tensor.h"
#include "lmforge/core/weight_matrix.h"
#include "lmforge/io/gguf.h"

namespace lmforge::io {
namespace {

constexpr uint16_t kOne = 0x3C00, kHalf = 0x3800, kTwo = 0x4000, kQuarter = 0x3400;

void put16(std::vector<unsigned char>& b, size_t at, uint16_t v) {
  std::memcpy(b.data() + at, &v, 2);
}

std::vector<float> deq(uint32_t type, const std::vector<unsigned char>& b, int64_t n) {
  std::vector<float> y(n);
  ggml_dequantize(type, b.data(), y.data(), n);
  return y;
}

TEST(GgmlDequant, LegacyBlocksByHand) {
  // q4_1: d 0.5, m 2; byte j holds (element j, element j + 16) = (j % 16, 15 - j % 16).
  std::vector<unsigned char> b(20);
  put16(b, 0, kHalf);
  put16(b, 2, kTwo);
  for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<unsigned char>(j | (15 - j) << 4);
  std::vector<float> y = deq(3, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * j + 2) << j;
    EXPECT_EQ(y[j + 16], 0.5f * (15 - j) + 2) << j;
  }
  // q5_0: d 2; low nibbles 3, the fifth bit from qh set for elements 1 and 17 only: (3|16)-16 = 3, 3-16 = -13.
  b.assign(22, 0);
  put16(b, 0, kTwo);
  const uint32_t qh = (1u << 1) | (1u << 17);
  std::memcpy(b.data() + 2, &qh, 4);
  for (int j = 0; j < 16; ++j) b[6 + j] = 0x33;
  y = deq(6, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j == 1 || j == 17) ? 6.0f : -26.0f) << j;
  // q5_1: d 0.25, m -1 (0xBC00); same bits: 19 or 3.
  b.assign(24, 0);
  put16(b, 0, kQuarter);
  put16(b, 2, 0xBC00);
  std::memcpy(b.data() + 4, &qh, 4);
  for (int j = 0; j < 16; ++j) b[8 + j] = 0x33;
  y = deq(7, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j == 1 || j == 17) ? 19 * 0.25f - 1 : 3 * 0.25f - 1) << j;
  // iq4_nl: d 1, code j -> the code book's entry.
  b.assign(18, 0);
  put16(b, 0, kOne);
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<unsigned char>(j | j << 4);
  y = deq(20, b, 32);
  const float book[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  for (int j = 0; j < 16; ++j) EXPECT_EQ(y[j], book[j]) << j;
}

TEST(GgmlDequant, KQuantBlocksByHand) {
  // q4_K {d, dmin, scales[12], qs[128]}: d 1, dmin 0.5. Sub-block 0: scale 3, min 2 (6-bit fields in bytes 0 and 4);
  // sub-block 5: scale 5 | 1 << 4 = 21 (low nibble of byte 9, top bits of byte 1), min 7 | 2 << 4 = 39.
  std::vector<unsigned char> b(144, 0);
  put16(b, 0, kOne);
  put16(b, 2, kHalf);
  b[4 + 0] = 3;
  b[4 + 4] = 2;
  b[4 + 9] = 5 | 7 << 4;
  b[4 + 1] = 1 << 6;                               // scale high bits of sub-block 5
  b[4 + 5] = 2 << 6;                               // min high bits of sub-block 5
  for (int l = 0; l < 128; ++l) b[16 + l] = 0x9A;  // low nibble 10, high 9
  std::vector<float> y = deq(12, b, 256);
  EXPECT_EQ(y[0], 3 * 10 - 0.5f * 2);        // sub-block 0: low nibbles of bytes 0..31
  EXPECT_EQ(y[5 * 32], 21 * 9 - 0.5f * 39);  // sub-block 5: high nibbles of bytes 64..95
  EXPECT_EQ(y[5 * 32 + 31], 21 * 9 - 0.5f * 39);
  EXPECT_EQ(y[32], 0.0f);  // sub-block 1: scale 0 (byte 1's low six bits), min 0 -- 0 * 9 - 0
  // q6_K {ql[128], qh[64], scales[16], d}: element 0 = d * scales[0] * ((ql[0] & 15 | (qh[0] & 3) << 4) - 32);
  // element 64 (third quarter of the first half): high nibble of ql[0], qh[0] bits 4-5, scales[4].
  b.assign(210, 0);
  b[0] = 0x57;           // low 7, high 5
  b[128] = 0x02 | 0x30;  // bits 0-1 = 2, bits 4-5 = 3
  b[192 + 0] = static_cast<unsigned char>(-3);
  b[192 + 4] = 4;
  put16(b, 208, kHalf);
  y = deq(14, b, 256);
  EXPECT_EQ(y[0], 0.5f * -3 * ((7 | 2 << 4) - 32));
  EXPECT_EQ(y[64], 0.5f * 4 * ((5 | 3 << 4) - 32));
  EXPECT_EQ(y[1], 0.5f * -3 * (0 - 32));
  // q3_K {hmask[32], qs[64], scales[12], d}: element 0 = d * (scale0 - 32) * ((qs[0] & 3) - (hmask[0] & 1 ? 0 : 4)).
  // scale0's low four bits are byte 96's low nibble, its top two bits byte 104's bits 0-1: 0x5 | 2 << 4 = 37.
  b.assign(110, 0);
  b[96] = 0x05;
  b[104] = 0x02;
  b[32] = 0x03;  // qs[0]: element 0's two bits 3
  b[0] = 0x01;   // hmask bit set: no -4
  put16(b, 108, kTwo);
  y = deq(11, b, 256);
  EXPECT_EQ(y[0], 2.0f * (37 - 32) * 3);
  EXPECT_EQ(y[1], 2.0f * (37 - 32) * -4);  // hmask clear, bits 0
  // q2_K {scales[16], qs[64], d, dmin}: element 0 = d * (scales[0] & 15) * (qs[0] & 3) - dmin * (scales[0] >> 4).
  b.assign(84, 0);
  b[0] = 0x36;   // scale 6, min 3
  b[16] = 0x02;  // qs[0]
  put16(b, 80, kHalf);
  put16(b, 82, kTwo);
  y = deq(10, b, 256);
  EXPECT_EQ(y[0], 0.5f * 6 * 2 - 2.0f * 3);
  EXPECT_EQ(y[1], 0.5f * 6 * 0 - 2.0f * 3);
  // q5_K: as q4_K plus a fifth bit per element from qh (bit 0 of qh[l] for sub-block 0).
  b.assign(176, 0);
  put16(b, 0, kOne);
  put16(b, 2, kHalf);
  b[4 + 0] = 3;
  b[4 + 4] = 2;
  b[16 + 0] = 0x01;
  b[48 + 0] = 0x0A;
  b[48 + 1] = 0x0A;
  y = deq(13, b, 256);
  EXPECT_EQ(y[0], 3 * (10 + 16) - 0.5f * 2);
  EXPECT_EQ(y[1], 3 * 10 - 0.5f * 2);
  // iq4_xs {d, scales_h, scales_l[4], qs[128]}: sub-block ib's scale = low nibble pair from scales_l, two high bits
  // from scales_h; dl = d * (ls - 32). Sub-block 1: scales_l[0] >> 4 = 3, scales_h bits 2-3 = 2 -> 35.
  b.assign(136, 0);
  put16(b, 0, kOne);
  put16(b, 2, 2 << 2);
  b[4] = 3 << 4;
  b[8 + 16] = 0x0F;  // sub-block 1, element 0: code 15 -> 113
  y = deq(23, b, 256);
  EXPECT_EQ(y[32], 3.0f * 113);
  EXPECT_EQ(y[0], -32.0f * -127);  // sub-block 0: ls 0, code 0
}

TEST(GgmlDequant, RefusesWhatItCannotRead) {
  std::vector<unsigned char> b(256, 0);
  std::vector<float> y(256);
  EXPECT_FALSE(ggml_can_dequantize(16));  // iq2_xxs
  EXPECT_THROW(ggml_dequantize(16, b.data(), y.data(), 256), Error);
  EXPECT_THROW(ggml_dequantize(12, b.data(), y.data(), 128), Error);  // half a q4_K block
  EXPECT_THROW(ggml_dequantize(999, b.data(), y.data(), 32), Error);
  try {
    ggml_dequantize(19, b.data(), y.data(), 256);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("type 19"), std::string::npos) << e.what();
  }
}

// ggml itself, loaded from node-llama-cpp's prebuilt CPU libraries.
struct Ggml {
  void* base = nullptr;
  using Quantize = size_t (*)(int, const float*, void*, int64_t, int64_t, int64_t, const float*);
  Quantize quantize = nullptr;
  Ggml() {
    const std::string dir = std::string(LMFORGE_SOURCE_DIR) +
                            "/tests/reference/llamacpp/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";
    if (!std::filesystem::exists(dir + "/libggml-base.so")) return;
    base = dlopen((dir + "/libggml-base.so").c_str(), RTLD_NOW | RTLD_LOCAL);
    if (base) quantize = reinterpret_cast<Quantize>(dlsym(base, "ggml_quantize_chunk"));
  }
  using Deq = void (*)(const void*, float*, int64_t);
  Deq dequantize(const std::string& type) const {
    return reinterpret_cast<Deq>(dlsym(base, ("dequantize_row_" + type).c_str()));
  }
};

TEST(GgmlDequant, BitForBitAsGgmlItself) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sanitizer build: the prebuilt ggml is not instrumented";
#endif
  static const Ggml g;
  if (!g.base || !g.quantize) GTEST_SKIP() << "no prebuilt ggml (LMFORGE_WITH_NODE=1 scripts/install-deps.sh)";
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t rows = 4, cols = 1024;
  std::vector<float> x(rows * cols);
  for (size_t i = 0; i < x.size(); ++i) x[i] = normal(rng) * (i % 97 == 0 ? 8.0f : 0.05f);  // some outliers
  int checked = 0;
  for (const char* name :
       {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K", "iq4_nl", "iq4_xs"}) {
    uint32_t id = 0;
    while (id < 64 && ggml_type_name(id) != name) ++id;
    int64_t block = 0;
    size_t size = 0;
    ASSERT_TRUE(ggml_type_traits(id, block, size)) << name;
    const auto ref = g.dequantize(name);
    ASSERT_NE(ref, nullptr) << name;
    const size_t nbytes = static_cast<size_t>(rows * cols / block) * size;
    // (1) blocks from ggml's own quantizer (q8_K has no quantize_chunk entry: random bytes only).
    std::vector<unsigned char> q(nbytes);
    if (std::string(name) != "q8_K") {
      ASSERT_EQ(g.quantize(static_cast<int>(id), x.data(), q.data(), 0, rows, cols, nullptr), nbytes) << name;
      std::vector<float> ours(rows * cols), theirs(rows * cols);
      ggml_dequantize(id, q.data(), ours.data(), rows * cols);
      ref(q.data(), theirs.data(), rows * cols);
      ASSERT_EQ(std::memcmp(ours.data(), theirs.data(), ours.size() * 4), 0) << name;
      double err = 0, norm = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        err += (ours[i] - x[i]) * (ours[i] - x[i]);
        norm += x[i] * x[i];
      }
      EXPECT_LT(std::sqrt(err / norm), 0.5) << name << ": the blocks do not reproduce the input";
    }
    // (2) random bytes, every f16 scale made finite so both sides compute numbers, not NaNs.
    std::uniform_int_distribution<int> byte(0, 255);
    for (unsigned char& c : q) c = static_cast<unsigned char>(byte(rng));
    for (size_t blk = 0; blk < nbytes / size; ++blk) {
      unsigned char* p = q.data() + blk * size;
      auto tame = [&](size_t at) { p[at + 1] &= 0xBB; };  // f16 high byte: |value| < 2, finite
      const std::string n = name;
      if (n == "q8_K") {
        const float d = normal(rng);
        std::memcpy(p, &d, 4);
      } else if (n == "q2_K") {
        tame(80), tame(82);
      } else if (n == "q3_K") {
        tame(108);
      } else if (n == "q6_K") {
        tame(208);
      } else {
        tame(0);
        if (n == "q4_1" || n == "q5_1" || n == "q4_K" || n == "q5_K") tame(2);
      }
    }
    std::vector<float> ours(rows * cols), theirs(rows * cols);
    ggml_dequantize(id, q.data(), ours.data(), rows * cols);
    ref(q.data(), theirs.data(), rows * cols);
    for (size_t i = 0; i < ours.size(); ++i) ASSERT_TRUE(std::isfinite(theirs[i])) << name << " " << i;
    ASSERT_EQ(std::memcmp(ours.data(), theirs.data(), ours.size() * 4), 0) << name << " (random bytes)";
    ++checked;
  }
  EXPECT_EQ(checked, 13);
}

// Rows of the kinds quantizers get wrong first (12 x 1024 here): Gaussian with outliers, tiny and large values,
// one-sided rows (every min 0), a zero and a constant super-block, plain Gaussian.
std::vector<float> varied_rows(int64_t rows, int64_t cols) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      float v = normal(rng);
      switch (r % 6) {
        case 0:
          v *= (j % 97 == 0 ? 8.0f : 0.05f);
          break;  // outliers
        case 1:
          v *= 1e-6f;
          break;  // tiny
        case 2:
          v *= 300.0f;
          break;  // large
        case 3:
          v = std::fabs(v) * 0.1f;
          break;  // one-sided: every min 0
        case 4:
          v = j < 256 ? 0.0f : (j < 512 ? 0.25f : v * 0.02f);
          break;  // a zero and a constant super-block
        default:
          v *= 0.02f;
      }
      x[r * cols + j] = v;
    }
  return x;
}

// ggml_quantize_chunk (type `id`, with `importance` or without) and WeightMatrix::quantize (`format`) of x [rows,
// cols]: the same bytes, block for block. Returns ggml's bytes; *ours receives lmforge's matrix.
std::vector<unsigned char> expect_quantized_as_ggml(const Ggml& g, uint32_t id, WeightFormat format,
                                                    const std::vector<float>& x, int64_t rows, int64_t cols,
                                                    const float* importance, WeightMatrix* ours) {
  int64_t block = 0;
  size_t size = 0;
  EXPECT_TRUE(ggml_type_traits(id, block, size));
  if (block == 0) return {};
  std::vector<unsigned char> theirs(static_cast<size_t>(rows * cols / block) * size);
  EXPECT_EQ(g.quantize(static_cast<int>(id), x.data(), theirs.data(), 0, rows, cols, importance), theirs.size());
  *ours = WeightMatrix::quantize(Tensor::from_vector(x, {rows, cols}), format, importance);
  EXPECT_EQ(ours->codes().nbytes(), theirs.size());
  if (ours->codes().nbytes() != theirs.size()) return theirs;
  const auto* mine = static_cast<const unsigned char*>(ours->codes().raw_data());
  for (size_t b = 0; b < theirs.size() / size; ++b)
    if (std::memcmp(mine + b * size, theirs.data() + b * size, size) != 0) {
      ADD_FAILURE() << "block " << b << " (row " << b / (cols / block) << ") differs";
      break;
    }
  return theirs;
}

// lmforge's k-quant quantizers (WeightMatrix::quantize q4_K / q5_K / q6_K, src/core/kquant.cpp) against ggml's own
// (ggml_quantize_chunk without an importance matrix: what llama-quantize runs): the same bytes, block for block, on
// Gaussian rows with outliers, rows of tiny and of large values, constant and all-zero super-blocks and
// one-sided (all positive) rows; and the engine's dequantization of them equals ggml's, bit for bit.
TEST(GgmlDequant, KQuantizersBitForBitAsGgml) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sanitizer build: the prebuilt ggml is not instrumented";
#endif
  static const Ggml g;
  if (!g.base || !g.quantize) GTEST_SKIP() << "no prebuilt ggml (LMFORGE_WITH_NODE=1 scripts/install-deps.sh)";
  const int64_t rows = 12, cols = 1024;
  const std::vector<float> x = varied_rows(rows, cols);
  for (const auto& [name, id, format] :
       {std::tuple{"q4_K", 12u, WeightFormat::Q4_K}, std::tuple{"q5_K", 13u, WeightFormat::Q5_K},
        std::tuple{"q6_K", 14u, WeightFormat::Q6_K}}) {
    SCOPED_TRACE(name);
    WeightMatrix m;
    const std::vector<unsigned char> theirs = expect_quantized_as_ggml(g, id, format, x, rows, cols, nullptr, &m);
    if (::testing::Test::HasFailure()) return;
    const Tensor dq = m.dequantize();
    std::vector<float> ref(rows * cols);
    g.dequantize(name)(theirs.data(), ref.data(), rows * cols);
    ASSERT_EQ(std::memcmp(dq.data<float>(), ref.data(), ref.size() * 4), 0);
  }
}

// With an importance vector (llama-quantize --imatrix): WeightMatrix::quantize(w, format, importance) for q4_0 and
// the k-quants against ggml_quantize_chunk given the same importance (quantize_row_*_impl), byte for byte. The
// importance spans four decades, with columns of zero (never-seen inputs) and a whole zero sub-block.
TEST(GgmlDequant, ImportanceWeightedBitForBitAsGgml) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sanitizer build: the prebuilt ggml is not instrumented";
#endif
  static const Ggml g;
  if (!g.base || !g.quantize) GTEST_SKIP() << "no prebuilt ggml (LMFORGE_WITH_NODE=1 scripts/install-deps.sh)";
  const int64_t rows = 12, cols = 1024;
  const std::vector<float> x = varied_rows(rows, cols);
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> decades(-2.0f, 2.0f);
  std::vector<float> importance(cols);
  for (int64_t j = 0; j < cols; ++j)
    importance[j] = (j % 53 == 7 || (j >= 320 && j < 352)) ? 0.0f : std::pow(10.0f, decades(rng));
  for (const auto& [name, id, format] :
       {std::tuple{"q4_0", 2u, WeightFormat::Q4_0}, std::tuple{"q4_K", 12u, WeightFormat::Q4_K},
        std::tuple{"q5_K", 13u, WeightFormat::Q5_K}, std::tuple{"q6_K", 14u, WeightFormat::Q6_K}}) {
    SCOPED_TRACE(name);
    WeightMatrix m;
    const std::vector<unsigned char> theirs =
        expect_quantized_as_ggml(g, id, format, x, rows, cols, importance.data(), &m);
    if (::testing::Test::HasFailure()) return;
    // The importance changes the result (else this test would not tell the two paths apart).
    const WeightMatrix plain = WeightMatrix::quantize(Tensor::from_vector(x, {rows, cols}), format);
    EXPECT_NE(std::memcmp(plain.codes().raw_data(), m.codes().raw_data(), theirs.size()), 0);
  }
}

}  // namespace
}  // namespace lmforge::io
