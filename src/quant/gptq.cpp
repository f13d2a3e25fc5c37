// GPTQ (Frantar et al. 2022): quantize a weight column by column, spreading each column's rounding error over the
// columns not yet quantized through the inverse Hessian of the layer's inputs, with lazy batch updates of 128
// columns and the upper Cholesky factor of H⁻¹ (the paper's Algorithm 1). tests/reference/gen_gptq.py is an
// independent PyTorch version of the same algorithm; tests/quant/gptq_test.cpp compares the two.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lmforge/core/error.h"
#include "lmforge/core/half.h"
#include "lmforge/kernels/thread_pool.h"
#include "lmforge/quant/methods.h"
#include "quant/calib_runner.h"

extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info);
}

namespace lmforge::quant {

namespace {

constexpr int64_t kGroup = 128;

struct GroupParams {
  std::vector<double> scale, zero;  // per row
};

// GPTQ's 4-bit quantizer over columns [c0, c0 + 128) of the rows of w (row stride ld), scale rounded to f16 (what
// the file stores), so quantize-then-dequantize here equals the stored format's dequantization.
GroupParams find_params(const double* w, int64_t ld, int64_t rows, int64_t c0, bool sym) {
  GroupParams p;
  p.scale.resize(static_cast<size_t>(rows));
  p.zero.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double lo = 0, hi = 0;
    for (int64_t j = 0; j < kGroup; ++j) {
      lo = std::min(lo, w[r * ld + c0 + j]);
      hi = std::max(hi, w[r * ld + c0 + j]);
    }
    if (sym) {
      hi = std::max(-lo, hi);
      lo = -hi;
    }
    if (lo == 0 && hi == 0) {
      lo = -1;
      hi = 1;
    }
    const double s = f16_to_f32(f32_to_f16(static_cast<float>((hi - lo) / 15.0)));
    p.scale[r] = s;
    p.zero[r] = sym ? 8.0 : std::nearbyint(-lo / s);
  }
  return p;
}

// In-place upper Cholesky factor U (row-major) of the symmetric positive definite a: a = UᵀU. LAPACK works in
// column-major, where our row-major upper triangle is its lower one.
bool cholesky_upper(std::vector<double>& a, int64_t n) {
  const int nn = static_cast<int>(n);
  int info = 0;
  dpotrf_("L", &nn, a.data(), &nn, &info);
  if (info != 0) return false;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) a[i * n + j] = 0;
  return true;
}

// a := a⁻¹ for symmetric positive definite a (full matrix).
bool spd_inverse(std::vector<double>& a, int64_t n) {
  const int nn = static_cast<int>(n);
  int info = 0;
  dpotrf_("L", &nn, a.data(), &nn, &info);
  if (info != 0) return false;
  dpotri_("L", &nn, a.data(), &nn, &info);
  if (info != 0) return false;
  for (int64_t i = 0; i < n; ++i)  // row-major upper holds the result; mirror it
    for (int64_t j = 0; j < i; ++j) a[i * n + j] = a[j * n + i];
  return true;
}

}  // namespace

WeightMatrix gptq_quantize(const float* w_in, int64_t rows, int64_t cols, std::vector<double> H, WeightFormat format,
                           const GptqOptions& opt) {
  LMF_CHECK(format == WeightFormat::Q4_G128 || format == WeightFormat::Q4_G128_ASYM,
            "gptq: output format must be q4_g128 or q4_g128_asym, got ", weight_format_name(format));
  LMF_CHECK(cols % kGroup == 0, "gptq: input size ", cols, " is not a multiple of ", kGroup);
  LMF_CHECK(static_cast<int64_t>(H.size()) == cols * cols, "gptq: Hessian size mismatch");
  const bool sym = format == WeightFormat::Q4_G128;
  std::vector<double> W(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows * cols; ++i) W[i] = w_in[i];
  for (int64_t c = 0; c < cols; ++c) {
    if (H[c * cols + c] != 0) continue;  // an input never seen: its weights cannot matter
    H[c * cols + c] = 1;
    for (int64_t r = 0; r < rows; ++r) W[r * cols + c] = 0;
  }
  const int64_t groups = cols / kGroup;
  std::vector<int64_t> perm(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), 0);
  std::vector<GroupParams> fixed;
  if (opt.act_order) {
    for (int64_t g = 0; g < groups; ++g) fixed.push_back(find_params(W.data(), cols, rows, g * kGroup, sym));
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return H[a * cols + a] > H[b * cols + b]; });
    std::vector<double> Wp(W.size()), Hp(H.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) Wp[r * cols + c] = W[r * cols + perm[c]];
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) Hp[i * cols + j] = H[perm[i] * cols + perm[j]];
    W.swap(Wp);
    H.swap(Hp);
  }
  double mean_diag = 0;
  for (int64_t c = 0; c < cols; ++c) mean_diag += H[c * cols + c];
  mean_diag /= static_cast<double>(cols);
  // H⁻¹'s upper Cholesky factor; more damping if H is numerically singular.
  std::vector<double> Hinv;
  double damp = opt.damp;
  for (int attempt = 0;; ++attempt) {
    Hinv = H;
    for (int64_t c = 0; c < cols; ++c) Hinv[c * cols + c] += damp * mean_diag;
    if (spd_inverse(Hinv, cols) && cholesky_upper(Hinv, cols)) break;
    LMF_CHECK(attempt < 6, "gptq: the Hessian is not positive definite even with damping ", damp);
    damp *= 10;
  }
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));  // in permuted column order
  std::vector<double> scales(static_cast<size_t>(rows * groups)), zeros(static_cast<size_t>(rows * groups));
  const int64_t B = opt.block;
  std::vector<double> W1, Err1;
  GroupParams cur;
  for (int64_t i1 = 0; i1 < cols; i1 += B) {
    const int64_t i2 = std::min(i1 + B, cols), cnt = i2 - i1;
    W1.assign(static_cast<size_t>(rows * cnt), 0.0);
    Err1.assign(static_cast<size_t>(rows * cnt), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < cnt; ++i) W1[r * cnt + i] = W[r * cols + i1 + i];
    for (int64_t i = 0; i < cnt; ++i) {
      const int64_t col = perm[i1 + i], g = col / kGroup;
      if (opt.act_order) {
        cur = fixed[g];
      } else if ((i1 + i) % kGroup == 0) {
        // The group's columns as updated so far: inside this block when the group starts at i (B is a multiple
        // of 128), else from W, which the lazy batch updates have kept current.
        cur = i + kGroup <= cnt ? find_params(W1.data() + i, cnt, rows, 0, sym)
                                : find_params(W.data(), cols, rows, i1 + i, sym);
      }
      const double d = Hinv[(i1 + i) * cols + (i1 + i)];
      const double* hrow = Hinv.data() + (i1 + i) * cols + i1;
      parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const double s = cur.scale[r], z = cur.zero[r];
          const double w = W1[r * cnt + i];
          const double q = std::clamp(std::nearbyint(w / s) + z, 0.0, 15.0);
          codes[r * cols + i1 + i] = static_cast<uint8_t>(q);
          scales[r * groups + g] = s;
          zeros[r * groups + g] = z;
          const double err = (w - s * (q - z)) / d;
          double* w1 = W1.data() + r * cnt;
          for (int64_t j = i; j < cnt; ++j) w1[j] -= err * hrow[j];
          Err1[r * cnt + i] = err;
        }
      });
    }
    if (i2 < cols)  // W[:, i2:] -= Err1 · Hinv[i1:i2, i2:]
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols - i2),
                  static_cast<int>(cnt), -1.0, Err1.data(), static_cast<int>(cnt), Hinv.data() + i1 * cols + i2,
                  static_cast<int>(cols), 1.0, W.data() + i2, static_cast<int>(cols));
  }
  // Back to the original column order, packed as q4_g128: per group, byte j = value j | value j + 64 << 4.
  Tensor tc = Tensor::empty({rows, cols / 2}, DType::U8), ts = Tensor::empty({rows, groups}, DType::F16);
  Tensor tz = sym ? Tensor() : Tensor::empty({rows, groups}, DType::U8);
  std::vector<uint8_t> orig(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) orig[perm[c]] = codes[r * cols + c];
    uint8_t* out = tc.data<uint8_t>() + r * (cols / 2);
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t j = 0; j < kGroup / 2; ++j)
        out[g * 64 + j] = static_cast<uint8_t>(orig[g * kGroup + j] | (orig[g * kGroup + j + 64] << 4));
      static_cast<uint16_t*>(ts.raw_data())[r * groups + g] = f32_to_f16(static_cast<float>(scales[r * groups + g]));
      if (!sym) tz.data<uint8_t>()[r * groups + g] = static_cast<uint8_t>(zeros[r * groups + g]);
    }
  }
  return WeightMatrix::from_parts(format, rows, cols, tc, ts, tz, "gptq");
}

namespace {

// GPTQ over m's layers; `stream`: where m's weights come from a part at a time (null: all in memory).
QuantizedWeights gptq_model(model::CausalLM& m, StreamedModel* stream, QuantConfig q, const std::vector<Tensor>& calib,
                            const GptqOptions& opt, const Log& log) {
  LMF_CHECK(q.format == WeightFormat::Q4_G128 || q.format == WeightFormat::Q4_G128_ASYM,
            "gptq: format must be q4_g128 or q4_g128_asym");
  QuantizedWeights out;
  out.config = m.config();
  out.quantized = true;
  out.quant = std::move(q);
  // Round-to-nearest first for every tensor of a part (dense tensors, lm_head and any non-multiple-of-128 linears
  // keep it), then GPTQ replaces the layer's linears.
  bring_in(stream, "model.embed_tokens.");
  rtn_part(out, m, "model.embed_tokens.");
  const int64_t L = m.config().num_hidden_layers;
  LayerwiseRunner run(m, calib);
  let_go(stream, "model.embed_tokens.");
  for (int64_t l = 0; l < L; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    bring_in(stream, prefix);
    rtn_part(out, m, prefix);
    // Hessians of this layer's linears, from inputs that went through the quantized layers 0..l-1.
    HessianCollector hc(prefix);
    run.observe(hc.observer());
    for (auto& [name, H] : hc.take()) {
      auto it = out.linear.find(name);
      if (it == out.linear.end() || it->second.format() == WeightFormat::F32) continue;
      Tensor w = parameter_tensor(m, name);
      WeightMatrix qm = gptq_quantize(w.data<float>(), w.size(0), w.size(1), std::move(H), out.quant.format, opt);
      set_parameter(m, name, qm.dequantize());  // later layers see the quantized weight
      it->second = qm;
    }
    run.advance();
    let_go(stream, prefix);
    if (log) log("gptq: layer " + std::to_string(l + 1) + "/" + std::to_string(L) + " done");
  }
  rtn_head(out, m, stream);
  out.quant.method = "gptq";
  out.quant.extra = {{"damp", opt.damp},
                     {"block", opt.block},
                     {"act_order", opt.act_order},
                     {"sequential", "layer by layer, inputs through the quantized earlier layers"}};
  return out;
}

}  // namespace

QuantizedWeights quantize_gptq(model::CausalLM& m, QuantConfig q, const std::vector<Tensor>& calib,
                               const GptqOptions& opt, const Log& log) {
  return gptq_model(m, nullptr, std::move(q), calib, opt, log);
}

QuantizedWeights quantize_gptq_dir(const std::string& dir, QuantConfig q, const std::vector<Tensor>& calib,
                                   const GptqOptions& opt, const Log& log, size_t* bytes_in) {
  StreamedModel sm(dir);
  if (bytes_in) *bytes_in = sm.bytes();
  return gptq_model(sm.model(), &sm, std::move(q), calib, opt, log);
}

}  // namespace lmforge::quant
