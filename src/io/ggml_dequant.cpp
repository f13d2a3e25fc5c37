// ggml's block formats -> f32, for reading GGUF files that llama.cpp's quantizer wrote (legacy q4_1 / q5_0 / q5_1,
// the k-quants q2_K..q6_K and q8_K, and the non-linear iq4_nl / iq4_xs). The layouts and the arithmetic follow
// ggml-common.h's block structs and ggml-quants.c's dequantize_row_* functions term by term (same operations in
// the same order, no fused multiply-adds: this file is built for the baseline x86-64 like ggml-base), so the values
// are bit for bit ggml's own; tests/io/ggml_dequant_test.cpp checks that against the library itself.
#include <cstdint>
#include <cstring>
#include <string>

#include "lmforge/core/error.h"
#include "lmforge/core/half.h"
#include "lmforge/io/gguf.h"
#include "lmforge/kernels/qgemm.h"

namespace lmforge::io {

namespace {

constexpr int64_t QK_K = 256;

float h(const unsigned char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return f16_to_f32(v);
}

// Non-linear 4-bit code book of iq4_nl / iq4_xs (ggml-common.h kvalues_iq4nl).
constexpr int8_t kIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

void deq_q4_1(const unsigned char* b, float* y) {  // {f16 d, f16 m, u8 qs[16]}
  const float d = h(b), m = h(b + 2);
  const unsigned char* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    const int x0 = qs[j] & 0x0F, x1 = qs[j] >> 4;
    y[j] = x0 * d + m;
    y[j + 16] = x1 * d + m;
  }
}

void deq_q5_0(const unsigned char* b, float* y) {  // {f16 d, u8 qh[4], u8 qs[16]}
  const float d = h(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const unsigned char* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
    const uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
    const int32_t x0 = ((qs[j] & 0x0F) | xh0) - 16;
    const int32_t x1 = ((qs[j] >> 4) | xh1) - 16;
    y[j] = x0 * d;
    y[j + 16] = x1 * d;
  }
}

void deq_q5_1(const unsigned char* b, float* y) {  // {f16 d, f16 m, u8 qh[4], u8 qs[16]}
  const float d = h(b), m = h(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const unsigned char* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
    const uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
    const int x0 = (qs[j] & 0x0F) | xh0;
    const int x1 = (qs[j] >> 4) | xh1;
    y[j] = x0 * d + m;
    y[j + 16] = x1 * d + m;
  }
}

void deq_q2_K(const unsigned char* b, float* y) {  // {u8 scales[16], u8 qs[64], f16 d, f16 dmin}
  const unsigned char* sc = b;
  const unsigned char* q = b + 16;
  const float d = h(b + 80), mn = h(b + 82);
  int is = 0;
  for (int n = 0; n < QK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      uint8_t s = sc[is++];
      float dl = d * (s & 0xF), ml = mn * (s >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<int8_t>((q[l] >> shift) & 3) - ml;
      s = sc[is++];
      dl = d * (s & 0xF);
      ml = mn * (s >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<int8_t>((q[l + 16] >> shift) & 3) - ml;
      shift += 2;
    }
    q += 32;
  }
}

void deq_q3_K(const unsigned char* b, float* y) {  // {u8 hmask[32], u8 qs[64], u8 scales[12], f16 d}
  constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  const unsigned char* hm = b;
  const unsigned char* q = b + 32;
  const float d_all = h(b + 108);
  uint32_t aux[4];
  std::memcpy(aux, b + 96, 12);
  const uint32_t tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  int8_t scales[16];
  std::memcpy(scales, aux, 16);
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < QK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      float dl = d_all * (scales[is++] - 32);
      for (int l = 0; l < 16; ++l)
        *y++ = dl * (static_cast<int8_t>((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
      dl = d_all * (scales[is++] - 32);
      for (int l = 0; l < 16; ++l)
        *y++ = dl * (static_cast<int8_t>((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
      shift += 2;
      m <<= 1;
    }
    q += 32;
  }
}

// q4_K, q5_K and q6_K are the engine's own formats: their dequantization is the kernels' (one copy of the layout).
void deq_k(kernels::cpu::QFormat f, const unsigned char* b, float* y) {
  kernels::cpu::QWeight w;
  w.format = f;
  w.rows = 1;
  w.cols = QK_K;
  w.codes = b;
  kernels::cpu::dequantize_row(w, 0, y);
}
void deq_q4_K(const unsigned char* b, float* y) {
  deq_k(kernels::cpu::QFormat::Q4_K, b, y);
}

void deq_q5_K(const unsigned char* b, float* y) {
  deq_k(kernels::cpu::QFormat::Q5_K, b, y);
}

void deq_q6_K(const unsigned char* b, float* y) {
  deq_k(kernels::cpu::QFormat::Q6_K, b, y);
}

void deq_q8_K(const unsigned char* b, float* y) {  // {f32 d, i8 qs[256], i16 bsums[16]}
  float d;
  std::memcpy(&d, b, 4);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 4);
  for (int j = 0; j < QK_K; ++j) y[j] = d * qs[j];
}

void deq_iq4_nl(const unsigned char* b, float* y) {  // {f16 d, u8 qs[16]}
  const float d = h(b);
  const unsigned char* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * kIq4nl[qs[j] & 0xf];
    y[j + 16] = d * kIq4nl[qs[j] >> 4];
  }
}

void deq_iq4_xs(const unsigned char* b, float* y) {  // {f16 d, u16 scales_h, u8 scales_l[4], u8 qs[128]}
  const float d = h(b);
  uint16_t scales_h;
  std::memcpy(&scales_h, b + 2, 2);
  const unsigned char* scales_l = b + 4;
  const unsigned char* qs = b + 8;
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const int ls = ((scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4);
    const float dl = d * (ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[j + 0] = dl * kIq4nl[qs[j] & 0xf];
      y[j + 16] = dl * kIq4nl[qs[j] >> 4];
    }
    y += 32;
    qs += 16;
  }
}

void deq_q8_0(const unsigned char* b, float* y) {  // {f16 d, i8 qs[32]}
  const float d = h(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = qs[j] * d;
}

void deq_q4_0(const unsigned char* b, float* y) {  // {f16 d, u8 qs[16]}
  const float d = h(b);
  const unsigned char* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    const int x0 = (qs[j] & 0x0F) - 8, x1 = (qs[j] >> 4) - 8;
    y[j] = x0 * d;
    y[j + 16] = x1 * d;
  }
}

using BlockFn = void (*)(const unsigned char*, float*);

BlockFn block_fn(uint32_t id) {
  switch (id) {
    case 2:
      return deq_q4_0;
    case 3:
      return deq_q4_1;
    case 6:
      return deq_q5_0;
    case 7:
      return deq_q5_1;
    case 8:
      return deq_q8_0;
    case 10:
      return deq_q2_K;
    case 11:
      return deq_q3_K;
    case 12:
      return deq_q4_K;
    case 13:
      return deq_q5_K;
    case 14:
      return deq_q6_K;
    case 15:
      return deq_q8_K;
    case 20:
      return deq_iq4_nl;
    case 23:
      return deq_iq4_xs;
    default:
      return nullptr;
  }
}

}  // namespace

bool ggml_can_dequantize(uint32_t id) {
  return id == 0 || id == 1 || id == 30 || block_fn(id) != nullptr;
}

void ggml_dequantize(uint32_t id, const unsigned char* src, float* dst, int64_t n) {
  int64_t block = 0;
  size_t size = 0;
  if (!ggml_can_dequantize(id) || !ggml_type_traits(id, block, size))
    throw Error("GGUF tensor type " + ggml_type_name(id) +
                " cannot be read (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, q8_K, "
                "iq4_nl and iq4_xs can)");
  if (n < 0 || n % block != 0)
    throw Error("ggml_dequantize: " + std::to_string(n) + " values is not a whole number of " + ggml_type_name(id) +
                " blocks of " + std::to_string(block));
  if (id == 0) {
    std::memcpy(dst, src, static_cast<size_t>(n) * 4);
    return;
  }
  if (id == 1 || id == 30) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, src + 2 * i, 2);
      dst[i] = id == 1 ? f16_to_f32(v) : bf16_to_f32(v);
    }
    return;
  }
  const BlockFn fn = block_fn(id);
  for (int64_t i = 0; i < n / block; ++i) fn(src + static_cast<size_t>(i) * size, dst + i * block);
}

}  // namespace lmforge::io
