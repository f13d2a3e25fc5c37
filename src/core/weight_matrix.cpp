// Weight formats and their products: portable reference paths. Layout of each format's parts (rows x cols):
//
//   f32 / f16 / bf16   codes [rows, cols] of that dtype; no scales or zeros.
//   q8_0 / q4_0        codes [rows, cols] of dtype Q8_0 / Q4_0 (GGUF blocks, scales inside the blocks).
//   q4_g128            codes u8 [rows, cols / 2]: per group of 128 values, byte j holds value j in its low nibble
//                      and value j + 64 in its high nibble (q4_0's arrangement, scaled up to 128);
//                      scales f16 [rows, cols / 128]; value = scale * (q - 8).
//   q4_g128_asym       codes as q4_g128; scales f16 [rows, cols / 128]; zeros u8 [rows, cols / 128] (0..15);
//                      value = scale * (q - zero).
//   int8               codes i8 [rows, cols]; scales f32 [rows]; value = scale[row] * q.
//   q4_K / q6_K        codes u8 [rows, cols / 256 * 144] / [rows, cols / 256 * 210]: GGUF block_q4_K / block_q6_K
//                      bytes, row after row (scales inside the blocks).
#include "lmforge/core/weight_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "lmforge/core/error.h"
#include "lmforge/core/half.h"
#include "lmforge/core/quant.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/qgemm.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge {

namespace {

constexpr int64_t kGroup = 128;

struct FormatInfo {
  WeightFormat format;
  const char* name;
  int64_t block;
};
constexpr FormatInfo kFormats[] = {
    {WeightFormat::F32, "f32", 1},
    {WeightFormat::F16, "f16", 1},
    {WeightFormat::BF16, "bf16", 1},
    {WeightFormat::Q8_0, "q8_0", kQ8BlockSize},
    {WeightFormat::Q4_0, "q4_0", kQ4BlockSize},
    {WeightFormat::Q4_G128, "q4_g128", kGroup},
    {WeightFormat::Q4_G128_ASYM, "q4_g128_asym", kGroup},
    {WeightFormat::INT8, "int8", 1},
    {WeightFormat::Q4_K, "q4_K", kKBlockSize},
    {WeightFormat::Q5_K, "q5_K", kKBlockSize},
    {WeightFormat::Q6_K, "q6_K", kKBlockSize},
};

// Bytes of one row of a k-quant weight.
int64_t k_row_bytes(WeightFormat f, int64_t cols) {
  return cols / kKBlockSize *
         static_cast<int64_t>(f == WeightFormat::Q4_K   ? kQ4KBytes
                              : f == WeightFormat::Q5_K ? kQ5KBytes
                                                        : kQ6KBytes);
}

const FormatInfo& info(WeightFormat f) {
  for (const FormatInfo& i : kFormats) {
    if (i.format == f) return i;
  }
  LMF_CHECK(false, "unknown weight format ", static_cast<int>(f));
  return kFormats[0];
}

void check_part(const Tensor& t, DType dtype, const Shape& shape, const char* part, WeightFormat f,
                const std::string& what) {
  LMF_CHECK(t.defined(), what, ": ", weight_format_name(f), " weight has no ", part);
  LMF_CHECK(t.dtype() == dtype && t.shape() == shape, what, ": ", weight_format_name(f), " ", part, " must be ",
            dtype_name(dtype), " ", shape_str(shape), ", got ", t.str());
}

// One row of a 4-bit group format into f32.
void dequant_row_g128(const uint8_t* codes, const uint16_t* scales, const uint8_t* zeros, float* out, int64_t cols) {
  for (int64_t g = 0; g < cols / kGroup; ++g) {
    const float d = f16_to_f32(scales[g]);
    const float z = zeros ? static_cast<float>(zeros[g]) : 8.0f;
    const uint8_t* c = codes + g * (kGroup / 2);
    float* o = out + g * kGroup;
    for (int64_t j = 0; j < kGroup / 2; ++j) {
      o[j] = d * (static_cast<float>(c[j] & 0x0f) - z);
      o[j + kGroup / 2] = d * (static_cast<float>(c[j] >> 4) - z);
    }
  }
}

}  // namespace

bool is_k_quant(WeightFormat f) {
  return f == WeightFormat::Q4_K || f == WeightFormat::Q5_K || f == WeightFormat::Q6_K;
}

DType weight_codes_dtype(WeightFormat f) {
  switch (f) {
    case WeightFormat::F16:
      return DType::F16;
    case WeightFormat::BF16:
      return DType::BF16;
    case WeightFormat::Q8_0:
      return DType::Q8_0;
    case WeightFormat::Q4_0:
      return DType::Q4_0;
    case WeightFormat::INT8:
      return DType::I8;
    case WeightFormat::F32:
      return DType::F32;
    default:  // the g128 formats' packed nibbles, the k-quants' block bytes
      return DType::U8;
  }
}

std::string_view weight_format_name(WeightFormat f) {
  return info(f).name;
}

int64_t weight_format_block(WeightFormat f) {
  return info(f).block;
}

WeightFormat parse_weight_format(std::string_view name) {
  for (const FormatInfo& i : kFormats) {
    if (name == i.name) return i.format;
  }
  if (name == "q4_k") return WeightFormat::Q4_K;  // llama.cpp's names are upper-case K; the lower case is common too
  if (name == "q5_k") return WeightFormat::Q5_K;
  if (name == "q6_k") return WeightFormat::Q6_K;
  throw Error("unknown weight format '" + std::string(name) +
              "' (expected f32, f16, bf16, q8_0, q4_0, q4_g128, q4_g128_asym, int8, q4_K, q5_K or q6_K)");
}

size_t WeightMatrix::nbytes() const {
  size_t n = 0;
  for (const Tensor* t : {&codes_, &scales_, &zeros_}) {
    if (t->defined()) n += t->nbytes();
  }
  return n;
}

bool WeightMatrix::uses_importance(WeightFormat f) {
  return f == WeightFormat::Q4_0 || is_k_quant(f);
}

WeightMatrix WeightMatrix::quantize(const Tensor& w, WeightFormat format, const float* importance) {
  LMF_CHECK(w.dim() == 2, "quantize: weight must be 2-D, got ", w.str());
  const int64_t rows = w.size(0), cols = w.size(1);
  LMF_CHECK(rows > 0 && cols > 0, "quantize: empty weight ", w.str());
  const int64_t block = weight_format_block(format);
  LMF_CHECK(cols % block == 0, "quantize: ", weight_format_name(format), " needs the input dimension (", cols,
            ") to be a multiple of ", block);
  const Tensor x = w.to(DType::F32).contiguous();
  const float* src = x.data<float>();
  WeightMatrix m;
  m.format_ = format;
  m.rows_ = rows;
  m.cols_ = cols;
  switch (format) {
    case WeightFormat::F32:
      m.codes_ = x.dtype() == w.dtype() && w.is_contiguous() ? w : x;
      break;
    case WeightFormat::F16:
    case WeightFormat::BF16:
    case WeightFormat::Q8_0:
      m.codes_ = x.to(weight_codes_dtype(format));
      break;
    case WeightFormat::Q4_0:
      if (!importance) {
        m.codes_ = x.to(weight_codes_dtype(format));
        break;
      }
      m.codes_ = Tensor::empty({rows, cols}, DType::Q4_0);
      parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
        auto* blocks = static_cast<BlockQ4_0*>(m.codes_.raw_data());
        for (int64_t r = r0; r < r1; ++r)
          quantize_row_q4_0(src + r * cols, blocks + r * (cols / kQ4BlockSize), cols, importance);
      });
      break;
    case WeightFormat::Q4_G128:
    case WeightFormat::Q4_G128_ASYM: {
      const bool asym = format == WeightFormat::Q4_G128_ASYM;
      const int64_t groups = cols / kGroup;
      m.codes_ = Tensor::empty({rows, cols / 2}, DType::U8);
      m.scales_ = Tensor::empty({rows, groups}, DType::F16);
      if (asym) m.zeros_ = Tensor::empty({rows, groups}, DType::U8);
      uint8_t* codes = m.codes_.data<uint8_t>();
      auto* scales = static_cast<uint16_t*>(m.scales_.raw_data());
      uint8_t* zeros = asym ? m.zeros_.data<uint8_t>() : nullptr;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t g = 0; g < groups; ++g) {
          const float* xg = src + r * cols + g * kGroup;
          float d = 0.0f, zero = 8.0f;
          if (asym) {
            float lo = 0.0f, hi = 0.0f;  // the grid always contains 0 exactly
            for (int64_t j = 0; j < kGroup; ++j) {
              lo = std::min(lo, xg[j]);
              hi = std::max(hi, xg[j]);
            }
            d = (hi - lo) / 15.0f;
            zero = d > 0.0f ? std::clamp(std::nearbyint(-lo / d), 0.0f, 15.0f) : 8.0f;
            zeros[r * groups + g] = static_cast<uint8_t>(zero);
          } else {
            // q4_0's choice: the value of largest magnitude maps to -8 exactly, which uses the whole grid.
            float amax = 0.0f, max = 0.0f;
            for (int64_t j = 0; j < kGroup; ++j) {
              if (std::fabs(xg[j]) > amax) {
                amax = std::fabs(xg[j]);
                max = xg[j];
              }
            }
            d = max / -8.0f;
          }
          const uint16_t dh = f32_to_f16(d);
          scales[r * groups + g] = dh;
          const float dq = f16_to_f32(dh);
          const float id = dq != 0.0f ? 1.0f / dq : 0.0f;
          uint8_t* c = codes + r * (cols / 2) + g * (kGroup / 2);
          for (int64_t j = 0; j < kGroup / 2; ++j) {
            const auto q = [&](float v) {
              return static_cast<uint8_t>(std::clamp(std::nearbyint(v * id + zero), 0.0f, 15.0f));
            };
            c[j] = static_cast<uint8_t>(q(xg[j]) | (q(xg[j + kGroup / 2]) << 4));
          }
        }
      }
      break;
    }
    case WeightFormat::Q4_K:
    case WeightFormat::Q5_K:
    case WeightFormat::Q6_K: {
      const int64_t bytes = k_row_bytes(format, cols);
      m.codes_ = Tensor::empty({rows, bytes}, DType::U8);
      uint8_t* codes = m.codes_.data<uint8_t>();
      parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          if (format == WeightFormat::Q4_K) {
            quantize_row_q4_K(src + r * cols, codes + r * bytes, cols, importance);
          } else if (format == WeightFormat::Q5_K) {
            quantize_row_q5_K(src + r * cols, codes + r * bytes, cols, importance);
          } else {
            quantize_row_q6_K(src + r * cols, codes + r * bytes, cols, importance);
          }
        }
      });
      break;
    }
    case WeightFormat::INT8: {
      m.codes_ = Tensor::empty({rows, cols}, DType::I8);
      m.scales_ = Tensor::empty({rows}, DType::F32);
      int8_t* codes = m.codes_.data<int8_t>();
      float* scales = m.scales_.data<float>();
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = src + r * cols;
        float amax = 0.0f;
        for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(xr[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        scales[r] = d;
        for (int64_t j = 0; j < cols; ++j)
          codes[r * cols + j] = static_cast<int8_t>(std::clamp(std::nearbyint(xr[j] * id), -127.0f, 127.0f));
      }
      break;
    }
  }
  return m;
}

WeightMatrix WeightMatrix::from_parts(WeightFormat format, int64_t rows, int64_t cols, Tensor codes, Tensor scales,
                                      Tensor zeros, const std::string& what) {
  LMF_CHECK(rows > 0 && cols > 0, what, ": weight has empty shape [", rows, ", ", cols, "]");
  const int64_t block = weight_format_block(format);
  LMF_CHECK(cols % block == 0, what, ": ", weight_format_name(format), " needs the input dimension (", cols,
            ") to be a multiple of ", block);
  switch (format) {
    case WeightFormat::F32:
    case WeightFormat::F16:
    case WeightFormat::BF16:
    case WeightFormat::Q8_0:
    case WeightFormat::Q4_0:
      check_part(codes, weight_codes_dtype(format), {rows, cols}, "codes", format, what);
      break;
    case WeightFormat::Q4_G128:
    case WeightFormat::Q4_G128_ASYM:
      check_part(codes, DType::U8, {rows, cols / 2}, "codes", format, what);
      check_part(scales, DType::F16, {rows, cols / kGroup}, "scales", format, what);
      if (format == WeightFormat::Q4_G128_ASYM) {
        check_part(zeros, DType::U8, {rows, cols / kGroup}, "zeros", format, what);
        const uint8_t* z = zeros.contiguous().data<uint8_t>();
        for (int64_t i = 0; i < zeros.numel(); ++i)
          LMF_CHECK(z[i] <= 15, what, ": zero point ", static_cast<int>(z[i]), " out of range 0..15");
      }
      break;
    case WeightFormat::INT8:
      check_part(codes, DType::I8, {rows, cols}, "codes", format, what);
      check_part(scales, DType::F32, {rows}, "scales", format, what);
      break;
    case WeightFormat::Q4_K:
    case WeightFormat::Q5_K:
    case WeightFormat::Q6_K:
      check_part(codes, DType::U8, {rows, k_row_bytes(format, cols)}, "codes", format, what);
      break;
  }
  WeightMatrix m;
  m.format_ = format;
  m.rows_ = rows;
  m.cols_ = cols;
  m.codes_ = codes.contiguous();
  if (scales.defined()) m.scales_ = scales.contiguous();
  if (zeros.defined() && format == WeightFormat::Q4_G128_ASYM) m.zeros_ = zeros.contiguous();
  return m;
}

WeightMatrix WeightMatrix::with_layout(bool interleaved) const {
  if (interleaved_ == interleaved || (format_ != WeightFormat::Q8_0 && format_ != WeightFormat::Q4_0)) return *this;
  WeightMatrix m = *this;
  m.codes_ = Tensor::empty(codes_.shape(), codes_.dtype());
  kernels::cpu::interleave_rows4(qweight_view(*this).format, rows_, cols_, codes_.raw_data(), m.codes_.raw_data(),
                                 /*inverse=*/!interleaved);
  m.interleaved_ = interleaved;
  return m;
}

void WeightMatrix::dequantize_rows(int64_t r0, int64_t r1, float* out) const {
  LMF_CHECK(0 <= r0 && r0 <= r1 && r1 <= rows_, "dequantize_rows: [", r0, ", ", r1, ") outside ", rows_, " rows");
  const int64_t n = r1 - r0;
  if (interleaved_ || is_k_quant(format_)) {  // row by row through the kernels' reader of the layout
    const kernels::cpu::QWeight q = qweight_view(*this);
    for (int64_t r = r0; r < r1; ++r) kernels::cpu::dequantize_row(q, r, out + (r - r0) * cols_);
    return;
  }
  switch (format_) {
    case WeightFormat::F32:
      std::memcpy(out, codes_.data<float>() + r0 * cols_, static_cast<size_t>(n * cols_) * sizeof(float));
      break;
    case WeightFormat::F16:
      f16_to_f32_row(static_cast<const uint16_t*>(codes_.raw_data()) + r0 * cols_, out, n * cols_);
      break;
    case WeightFormat::BF16:
      bf16_to_f32_row(static_cast<const uint16_t*>(codes_.raw_data()) + r0 * cols_, out, n * cols_);
      break;
    case WeightFormat::Q8_0:
      dequantize_row_q8_0(static_cast<const BlockQ8_0*>(codes_.raw_data()) + r0 * (cols_ / kQ8BlockSize), out,
                          n * cols_);
      break;
    case WeightFormat::Q4_0:
      dequantize_row_q4_0(static_cast<const BlockQ4_0*>(codes_.raw_data()) + r0 * (cols_ / kQ4BlockSize), out,
                          n * cols_);
      break;
    case WeightFormat::Q4_G128:
    case WeightFormat::Q4_G128_ASYM: {
      const int64_t groups = cols_ / kGroup;
      const auto* codes = codes_.data<uint8_t>();
      const auto* scales = static_cast<const uint16_t*>(scales_.raw_data());
      const uint8_t* zeros = zeros_.defined() ? zeros_.data<uint8_t>() : nullptr;
      for (int64_t r = r0; r < r1; ++r)
        dequant_row_g128(codes + r * (cols_ / 2), scales + r * groups, zeros ? zeros + r * groups : nullptr,
                         out + (r - r0) * cols_, cols_);
      break;
    }
    case WeightFormat::INT8: {
      const int8_t* codes = codes_.data<int8_t>();
      const float* scales = scales_.data<float>();
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t j = 0; j < cols_; ++j)
          out[(r - r0) * cols_ + j] = scales[r] * static_cast<float>(codes[r * cols_ + j]);
      break;
    }
    default:  // the k-quants go through the kernels above
      break;
  }
}

Tensor WeightMatrix::dequantize() const {
  Tensor out = Tensor::empty({rows_, cols_});
  if (rows_ > 0) dequantize_rows(0, rows_, out.data<float>());
  return out;
}

WeightMatrix WeightMatrix::concat_rows(const std::vector<WeightMatrix>& parts) {
  LMF_CHECK(!parts.empty() && parts[0].defined(), "concat_rows: no matrices");
  const WeightMatrix& a = parts[0];
  int64_t rows = 0;
  for (const WeightMatrix& p : parts) {
    LMF_CHECK(!p.interleaved(), "concat_rows: a matrix in the interleaved decode layout (stack before interleaving)");
    LMF_CHECK(p.defined() && p.format() == a.format() && p.cols() == a.cols(),
              "concat_rows: ", weight_format_name(p.format()), " [", p.rows(), ", ", p.cols(),
              "] does not stack under ", weight_format_name(a.format()), " [", a.rows(), ", ", a.cols(), "]");
    rows += p.rows();
  }
  // Every part is row-major by output row (codes, and scales / zeros where the format has them): stacking is
  // appending bytes.
  auto stack = [&](const Tensor& (WeightMatrix::*get)() const) {
    const Tensor& first = (a.*get)();
    if (!first.defined()) return Tensor();
    Shape shape = first.shape();
    shape[0] = rows;
    Tensor out = Tensor::empty(shape, first.dtype());
    auto* dst = static_cast<uint8_t*>(out.raw_data());
    for (const WeightMatrix& p : parts) {
      const Tensor t = (p.*get)().contiguous();
      std::memcpy(dst, t.raw_data(), t.nbytes());
      dst += t.nbytes();
    }
    return out;
  };
  WeightMatrix m;
  m.format_ = a.format();
  m.rows_ = rows;
  m.cols_ = a.cols();
  m.codes_ = stack(&WeightMatrix::codes);
  m.scales_ = stack(&WeightMatrix::scales);
  m.zeros_ = stack(&WeightMatrix::zeros);
  return m;
}

kernels::cpu::QWeight qweight_view(const WeightMatrix& w) {
  kernels::cpu::QWeight q;
  using kernels::cpu::QFormat;
  switch (w.format()) {
    case WeightFormat::F16:
      q.format = QFormat::F16;
      break;
    case WeightFormat::BF16:
      q.format = QFormat::BF16;
      break;
    case WeightFormat::Q8_0:
      q.format = QFormat::Q8_0;
      break;
    case WeightFormat::Q4_0:
      q.format = QFormat::Q4_0;
      break;
    case WeightFormat::Q4_G128:
      q.format = QFormat::Q4_G128;
      break;
    case WeightFormat::Q4_G128_ASYM:
      q.format = QFormat::Q4_G128_ASYM;
      break;
    case WeightFormat::INT8:
      q.format = QFormat::INT8;
      break;
    case WeightFormat::F32:
      q.format = QFormat::F32;
      break;
    case WeightFormat::Q4_K:
      q.format = QFormat::Q4_K;
      break;
    case WeightFormat::Q5_K:
      q.format = QFormat::Q5_K;
      break;
    case WeightFormat::Q6_K:
      q.format = QFormat::Q6_K;
      break;
  }
  q.rows = w.rows();
  q.cols = w.cols();
  q.codes = w.codes().raw_data();
  q.scales = w.scales().defined() ? w.scales().raw_data() : nullptr;
  q.zeros = w.zeros().defined() ? w.zeros().raw_data() : nullptr;
  q.rows4 = w.interleaved();
  return q;
}

// Every format goes to the kernels in src/kernels/cpu/qgemm.cpp: decode-sized products stream the weights through
// their tile kernels (f32 included: sgemv left bandwidth unused there), and larger ones (f32 from 16 activation
// rows, the others from 16 too) run sgemm.
void weight_matmul(const WeightMatrix& w, const float* x, int64_t n, float* y, bool accumulate) {
  LMF_CHECK(w.defined(), "weight_matmul: undefined weight");
  if (n <= 0) return;
  kernels::cpu::qgemm(qweight_view(w), x, n, y, accumulate);
}

}  // namespace lmforge
