// Fused attention kernel (src/kernels/cpu/attention.cpp) against a naive double-precision reference that
// materialises the scores, against central finite differences (double), and for bitwise determinism across
// thread counts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "lmforge/core/half.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/cpu_features.h"
#include "lmforge/kernels/thread_pool.h"

namespace {

namespace cpu = lmforge::kernels::cpu;
using cpu::AttentionDims;
using Vec = std::vector<double>;
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Case {
  std::string name;
  AttentionDims d;
};

AttentionDims dims(int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t Dk, int64_t Dv,
                   bool causal = true, int64_t window = 0, int64_t q_offset = 0) {
  AttentionDims d;
  d.B = B, d.Tq = Tq, d.Tk = Tk, d.Hq = Hq, d.Hkv = Hkv, d.Dk = Dk, d.Dv = Dv;
  d.causal = causal, d.window = window, d.q_offset = q_offset;
  d.scale = 1.0 / std::sqrt(static_cast<double>(Dk));
  return d;
}

// Shapes for the reference comparisons: sequence lengths straddle the 64-row blocks.
std::vector<Case> reference_cases() {
  return {
      {"mha_causal_T37", dims(1, 37, 37, 2, 2, 16, 16)},
      {"gqa_4_2_causal_T130", dims(1, 130, 130, 4, 2, 32, 32)},
      {"mqa_4_1_dk24_dv16_T37", dims(1, 37, 37, 4, 1, 24, 16)},
      {"window5_T37", dims(1, 37, 37, 4, 2, 16, 16, true, 5)},
      {"window5_T130_dk24_dv16", dims(1, 130, 130, 2, 1, 24, 16, true, 5)},
      {"noncausal_Tq20_Tk37", dims(1, 20, 37, 4, 2, 16, 8, false)},
      {"noncausal_T130", dims(1, 130, 130, 2, 2, 16, 16, false)},
      {"decode_Tq3_Tk40", dims(1, 3, 40, 4, 2, 24, 16, true, 0, 37)},
      {"decode_window8_Tq3_Tk40", dims(1, 3, 40, 4, 1, 16, 16, true, 8, 37)},
      {"chunked_prefill_Tq70_Tk100", dims(1, 70, 100, 4, 2, 16, 16, true, 0, 30)},
      {"T1", dims(1, 1, 1, 4, 2, 16, 16)},
      {"B2_gqa_T70_dk24_dv16", dims(2, 70, 70, 4, 2, 24, 16)},
      {"B2_window5_T37", dims(2, 37, 37, 4, 1, 8, 8, true, 5)},
      // Queries 4..6 sit past every key's window: they see nothing.
      {"rows_without_keys", dims(1, 5, 3, 2, 1, 8, 8, true, 2, 2)},
      // One query row (a decode step) takes the direct-dot path: long and short caches, windows, batches, no keys.
      {"decode_Tq1_Tk200", dims(1, 1, 200, 4, 2, 64, 64, true, 0, 199)},
      {"decode_Tq1_Tk70_dk24_dv16", dims(1, 1, 70, 4, 1, 24, 16, true, 0, 69)},
      {"decode_Tq1_window8", dims(1, 1, 70, 4, 2, 16, 16, true, 8, 69)},
      {"decode_Tq1_B2", dims(2, 1, 33, 4, 2, 16, 8, true, 0, 32)},
      {"decode_Tq1_noncausal", dims(1, 1, 33, 2, 2, 16, 16, false)},
      {"decode_Tq1_no_keys", dims(1, 1, 3, 2, 1, 8, 8, true, 2, 5)},
      {"decode_Tq1_group8", dims(2, 1, 45, 8, 1, 32, 32, true, 0, 44)},
      // Groups over 8 heads split into sub-groups of 8 or 4 (MLA's absorbed decode: one KV head for all).
      {"decode_Tq1_group16_mqa", dims(1, 1, 45, 16, 1, 40, 32, true, 0, 44)},
      {"decode_Tq1_group12_window", dims(2, 1, 45, 24, 2, 16, 16, true, 9, 44)},
      {"decode_Tq1_group2_no_keys", dims(1, 1, 3, 4, 2, 16, 16, true, 2, 5)},
      // Long caches of a few sequences: each task's keys in 2 to 4 parts merged by their log-sum-exp (ragged last
      // parts, a window that starts past key 0).
      {"decode_Tq1_Tk603_split2", dims(1, 1, 603, 4, 2, 64, 64, true, 0, 602)},
      {"decode_Tq1_B2_Tk1100_split4", dims(2, 1, 1100, 8, 2, 16, 16, true, 0, 1099)},
      {"decode_Tq1_window600_split2", dims(1, 1, 900, 4, 2, 16, 16, true, 600, 899)},
      {"decode_Tq1_group16_Tk530_split2", dims(1, 1, 530, 16, 1, 40, 32, true, 0, 529)},
      // Caches longer than the group kernel's chunk of 256 keys (online softmax across chunks, the next chunk's or
      // the next task's keys fetched during P·V): a partial last chunk, exactly two chunks, a window whose first
      // key is not at a chunk boundary, and the MLA-like sub-groups; several tasks per thread.
      {"decode_Tq1_Tk600_group4", dims(1, 1, 600, 16, 4, 64, 64, true, 0, 599)},
      {"decode_Tq1_Tk512_group2_B2", dims(2, 1, 512, 4, 2, 32, 32, true, 0, 511)},
      {"decode_Tq1_Tk700_window300", dims(2, 1, 700, 8, 2, 16, 16, true, 300, 699)},
      {"decode_Tq1_Tk530_group16_mqa", dims(1, 1, 530, 16, 1, 40, 32, true, 0, 529)},
  };
}

// Small shapes for the finite-difference check (every input element is perturbed twice).
std::vector<Case> fd_cases() {
  return {
      {"mha_causal", dims(1, 9, 9, 2, 2, 6, 6)},
      {"gqa_4_2_dk6_dv4", dims(1, 7, 7, 4, 2, 6, 4)},
      {"mqa_4_1", dims(1, 6, 6, 4, 1, 4, 4)},
      {"window3", dims(1, 9, 9, 2, 1, 4, 5, true, 3)},
      {"noncausal", dims(1, 5, 8, 2, 2, 4, 4, false)},
      {"decode", dims(1, 3, 8, 2, 1, 6, 4, true, 0, 5)},
      {"B2", dims(2, 5, 5, 2, 1, 4, 4)},
      {"rows_without_keys", dims(1, 5, 3, 2, 1, 4, 4, true, 2, 2)},
      {"decode_Tq1", dims(1, 1, 7, 4, 2, 6, 4, true, 0, 6)},
      {"decode_Tq1_window3", dims(1, 1, 7, 2, 1, 4, 4, true, 3, 6)},
  };
}

struct Inputs {
  Vec q, k, v, dout;
};
struct Outputs {
  Vec out, lse, dq, dk, dv;
};

Inputs random_inputs(const AttentionDims& d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto fill = [&](int64_t n) {
    Vec x(n);
    for (auto& e : x) e = nd(rng);
    return x;
  };
  Inputs in;
  in.q = fill(d.B * d.Tq * d.Hq * d.Dk);
  in.k = fill(d.B * d.Tk * d.Hkv * d.Dk);
  in.v = fill(d.B * d.Tk * d.Hkv * d.Dv);
  in.dout = fill(d.B * d.Tq * d.Hq * d.Dv);
  return in;
}

Inputs rounded_to_float(Inputs in) {
  for (Vec* x : {&in.q, &in.k, &in.v, &in.dout})
    for (auto& e : *x) e = static_cast<float>(e);
  return in;
}

bool visible(const AttentionDims& d, int64_t t, int64_t j) {
  if (!d.causal) return true;
  const int64_t pos = d.q_offset + t;
  return j <= pos && (d.window <= 0 || j > pos - d.window);
}

// Textbook attention: full score row, explicit mask, softmax, and the analytic backward
// dS = P * (dP - sum(P * dP)), written independently of the kernel's Di = rowsum(dO * O) shortcut.
Outputs reference(const AttentionDims& d, const Inputs& in) {
  Outputs o;
  o.out.assign(d.B * d.Tq * d.Hq * d.Dv, 0.0);
  o.lse.assign(d.B * d.Hq * d.Tq, -kInf);
  o.dq.assign(in.q.size(), 0.0);
  o.dk.assign(in.k.size(), 0.0);
  o.dv.assign(in.v.size(), 0.0);
  const int64_t group = d.Hq / d.Hkv;
  Vec p(d.Tk), dp(d.Tk);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.Hq; ++h)
      for (int64_t t = 0; t < d.Tq; ++t) {
        const int64_t g = h / group;
        const int64_t qo = ((b * d.Tq + t) * d.Hq + h) * d.Dk, oo = ((b * d.Tq + t) * d.Hq + h) * d.Dv;
        auto ko = [&](int64_t j) { return ((b * d.Tk + j) * d.Hkv + g) * d.Dk; };
        auto vo = [&](int64_t j) { return ((b * d.Tk + j) * d.Hkv + g) * d.Dv; };
        double m = -kInf;
        for (int64_t j = 0; j < d.Tk; ++j) {
          p[j] = -kInf;
          if (!visible(d, t, j)) continue;
          double s = 0;
          for (int64_t c = 0; c < d.Dk; ++c) s += in.q[qo + c] * in.k[ko(j) + c];
          p[j] = s * d.scale;
          m = std::max(m, p[j]);
        }
        if (m == -kInf) continue;
        double sum = 0;
        for (int64_t j = 0; j < d.Tk; ++j) sum += p[j] == -kInf ? 0.0 : std::exp(p[j] - m);
        for (int64_t j = 0; j < d.Tk; ++j) p[j] = p[j] == -kInf ? 0.0 : std::exp(p[j] - m) / sum;
        o.lse[(b * d.Hq + h) * d.Tq + t] = m + std::log(sum);
        double pdp = 0;
        for (int64_t j = 0; j < d.Tk; ++j) {
          dp[j] = 0;
          for (int64_t c = 0; c < d.Dv; ++c) {
            o.out[oo + c] += p[j] * in.v[vo(j) + c];
            dp[j] += in.dout[oo + c] * in.v[vo(j) + c];
          }
          pdp += p[j] * dp[j];
        }
        for (int64_t j = 0; j < d.Tk; ++j) {
          const double ds = p[j] * (dp[j] - pdp) * d.scale;
          for (int64_t c = 0; c < d.Dk; ++c) {
            o.dq[qo + c] += ds * in.k[ko(j) + c];
            o.dk[ko(j) + c] += ds * in.q[qo + c];
          }
          for (int64_t c = 0; c < d.Dv; ++c) o.dv[vo(j) + c] += p[j] * in.dout[oo + c];
        }
      }
  return o;
}

template <typename T>
std::vector<T> to(const Vec& x) {
  return std::vector<T>(x.begin(), x.end());
}

// Runs the kernel in precision T. Outputs start as NaN to prove every element is written.
template <typename T>
Outputs run_kernel(const AttentionDims& d, const Inputs& in) {
  const auto q = to<T>(in.q), k = to<T>(in.k), v = to<T>(in.v), dout = to<T>(in.dout);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> out(dout.size(), nan), lse(d.B * d.Hq * d.Tq, nan);
  std::vector<T> dq(q.size(), nan), dk(k.size(), nan), dv(v.size(), nan);
  cpu::attention<T>(d, q.data(), k.data(), v.data(), out.data(), lse.data());
  cpu::attention_backward<T>(d, q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(),
                             dv.data());
  auto back = [](const std::vector<T>& x) { return Vec(x.begin(), x.end()); };
  return {back(out), back(lse), back(dq), back(dk), back(dv)};
}

// ||a - b|| / ||b|| (absolute when b is zero). Non-finite entries must match exactly (lse of empty rows).
double rel_err(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (!std::isfinite(b[i])) {
      EXPECT_EQ(a[i], b[i]) << "at " << i;
      continue;
    }
    if (!std::isfinite(a[i])) return kInf;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void expect_close(const Outputs& got, const Outputs& want, double fwd_tol, double grad_tol) {
  EXPECT_LT(rel_err(got.out, want.out), fwd_tol) << "out";
  EXPECT_LT(rel_err(got.lse, want.lse), fwd_tol) << "lse";
  EXPECT_LT(rel_err(got.dq, want.dq), grad_tol) << "dq";
  EXPECT_LT(rel_err(got.dk, want.dk), grad_tol) << "dk";
  EXPECT_LT(rel_err(got.dv, want.dv), grad_tol) << "dv";
}

TEST(AttentionTest, DoubleMatchesReference) {
  uint64_t seed = 1;
  for (const Case& c : reference_cases()) {
    SCOPED_TRACE(c.name);
    const Inputs in = random_inputs(c.d, seed++);
    expect_close(run_kernel<double>(c.d, in), reference(c.d, in), 1e-12, 1e-12);
  }
}

TEST(AttentionTest, FloatMatchesDoubleReference) {
  uint64_t seed = 100;
  for (const Case& c : reference_cases()) {
    SCOPED_TRACE(c.name);
    const Inputs in = rounded_to_float(random_inputs(c.d, seed++));
    expect_close(run_kernel<float>(c.d, in), reference(c.d, in), 1e-5, 1e-4);
  }
}

// The engine's head-major cache layout (each KV head's rows contiguous, capacity beyond Tk) gives the forward of the
// token-major layout: same reference, same tolerances, every case (decode rows and prefill blocks).
// pad_k / pad_v > 0: each cached row is that much longer than Dk / Dv (k_row_stride / v_row_stride), as MLA's
// absorbed decode reads its cache rows.
template <typename T>
void expect_head_major_matches(double tol, uint64_t seed, int64_t pad_k, int64_t pad_v) {
  for (const Case& c : reference_cases()) {
    SCOPED_TRACE(c.name);
    const AttentionDims& d = c.d;
    const Inputs in = rounded_to_float(random_inputs(d, seed++));
    const int64_t cap = d.Tk + 5;  // rows a cache holds; the kernel must read only the first Tk
    const int64_t rk = d.Dk + pad_k, rv = d.Dv + pad_v;
    const T nan = std::numeric_limits<T>::quiet_NaN();
    std::vector<T> k(static_cast<size_t>(d.B * d.Hkv * cap * rk), nan),
        v(static_cast<size_t>(d.B * d.Hkv * cap * rv), nan);
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t j = 0; j < d.Tk; ++j)
        for (int64_t g = 0; g < d.Hkv; ++g) {
          for (int64_t c2 = 0; c2 < d.Dk; ++c2)
            k[((b * d.Hkv + g) * cap + j) * rk + c2] = static_cast<T>(in.k[((b * d.Tk + j) * d.Hkv + g) * d.Dk + c2]);
          for (int64_t c2 = 0; c2 < d.Dv; ++c2)
            v[((b * d.Hkv + g) * cap + j) * rv + c2] = static_cast<T>(in.v[((b * d.Tk + j) * d.Hkv + g) * d.Dv + c2]);
        }
    AttentionDims hm = d;
    hm.k_head_stride = cap * rk;
    hm.v_head_stride = cap * rv;
    if (pad_k > 0) hm.k_row_stride = rk;
    if (pad_v > 0) hm.v_row_stride = rv;
    const auto q = to<T>(in.q);
    std::vector<T> out(static_cast<size_t>(d.B * d.Tq * d.Hq * d.Dv), nan),
        lse(static_cast<size_t>(d.B * d.Hq * d.Tq), nan);
    cpu::attention<T>(hm, q.data(), k.data(), v.data(), out.data(), lse.data());
    const Outputs want = reference(d, in);
    EXPECT_LT(rel_err(Vec(out.begin(), out.end()), want.out), tol) << "out";
    EXPECT_LT(rel_err(Vec(lse.begin(), lse.end()), want.lse), tol) << "lse";
  }
}

TEST(AttentionTest, HeadMajorCacheLayoutMatchesReference) {
  expect_head_major_matches<double>(1e-12, 300, 0, 0);
  expect_head_major_matches<float>(1e-5, 400, 0, 0);
  expect_head_major_matches<double>(1e-12, 500, 8, 3);
  expect_head_major_matches<float>(1e-5, 600, 16, 5);
}

// An f16 KV cache (the engine's --kv-type f16): for every decode case the kernel takes, attention_f16kv over the
// half-rounded keys and values equals the double reference on those rounded values (f32 arithmetic, as the f32
// kernel's tolerance), head-major with padded rows and capacity (MLA-like row strides too) and token-major.
// Where it does not apply (Dv not a multiple of 16, a group of 3, a prefill block, no AVX2) it must say so and
// write nothing.
TEST(AttentionTest, HalfCacheDecodeMatchesReferenceOnRoundedValues) {
  std::vector<Case> cases;
  for (const Case& c : reference_cases())
    if (c.d.Tq == 1) cases.push_back(c);
  cases.push_back({"decode_Tq1_group3", dims(1, 1, 40, 6, 2, 16, 16, true, 0, 39)});
  cases.push_back({"prefill_block", dims(1, 5, 40, 4, 2, 16, 16, true, 0, 35)});
  int taken = 0;
  uint64_t seed = 700;
  for (const Case& c : cases) {
    for (int layout = 0; layout < 3; ++layout) {  // 0 token-major, 1 head-major, 2 head-major with padded rows
      SCOPED_TRACE(c.name + " layout " + std::to_string(layout));
      const AttentionDims& d = c.d;
      Inputs in = rounded_to_float(random_inputs(d, seed++));
      for (Vec* x : {&in.k, &in.v})
        for (auto& e : *x) e = lmforge::f16_to_f32(lmforge::f32_to_f16(static_cast<float>(e)));
      const int64_t cap = layout == 0 ? d.Tk : d.Tk + 5, rk = d.Dk + (layout == 2 ? 24 : 0),
                    rv = d.Dv + (layout == 2 ? 3 : 0);
      std::vector<uint16_t> k(static_cast<size_t>(d.B * d.Hkv * cap * rk), 0x7e00),  // NaN padding
          v(static_cast<size_t>(d.B * d.Hkv * cap * rv), 0x7e00);
      AttentionDims hd = d;
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t j = 0; j < d.Tk; ++j)
          for (int64_t g = 0; g < d.Hkv; ++g) {
            const size_t ko = layout == 0 ? ((b * d.Tk + j) * d.Hkv + g) * d.Dk : ((b * d.Hkv + g) * cap + j) * rk;
            const size_t vo = layout == 0 ? ((b * d.Tk + j) * d.Hkv + g) * d.Dv : ((b * d.Hkv + g) * cap + j) * rv;
            for (int64_t c2 = 0; c2 < d.Dk; ++c2)
              k[ko + c2] = lmforge::f32_to_f16(static_cast<float>(in.k[((b * d.Tk + j) * d.Hkv + g) * d.Dk + c2]));
            for (int64_t c2 = 0; c2 < d.Dv; ++c2)
              v[vo + c2] = lmforge::f32_to_f16(static_cast<float>(in.v[((b * d.Tk + j) * d.Hkv + g) * d.Dv + c2]));
          }
      if (layout > 0) {
        hd.k_head_stride = cap * rk;
        hd.v_head_stride = cap * rv;
      }
      if (layout == 2) {
        hd.k_row_stride = rk;
        hd.v_row_stride = rv;
      }
      const auto q = to<float>(in.q);
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::vector<float> out(static_cast<size_t>(d.B * d.Tq * d.Hq * d.Dv), nan),
          lse(static_cast<size_t>(d.B * d.Hq * d.Tq), nan);
      const int64_t group = d.Hq / d.Hkv, sub = group <= 8 ? group : group % 8 == 0 ? 8 : group % 4 == 0 ? 4 : 2;
      const bool applies = d.Tq == 1 && (sub == 1 || sub == 2 || sub == 4 || sub == 8) && d.Dk % 8 == 0 &&
                           d.Dv % 16 == 0 && lmforge::kernels::cpu_has_avx2();
      const bool took = cpu::attention_f16kv(hd, q.data(), k.data(), v.data(), out.data(), lse.data());
      ASSERT_EQ(took, applies);
      if (!took) {
        for (float o : out) ASSERT_TRUE(std::isnan(o));  // nothing written
        continue;
      }
      ++taken;
      const Outputs want = reference(d, in);
      EXPECT_LT(rel_err(Vec(out.begin(), out.end()), want.out), 1e-5) << "out";
      EXPECT_LT(rel_err(Vec(lse.begin(), lse.end()), want.lse), 1e-5) << "lse";
    }
  }
  if (lmforge::kernels::cpu_has_avx2()) {
    EXPECT_GE(taken, 30);
  }
}

// Loss = sum(out * R) with R = dout; its gradient is exactly what attention_backward returns for dout = R.
TEST(AttentionTest, DoubleBackwardMatchesFiniteDifferences) {
  uint64_t seed = 200;
  for (const Case& c : fd_cases()) {
    SCOPED_TRACE(c.name);
    Inputs in = random_inputs(c.d, seed++);
    const Outputs analytic = run_kernel<double>(c.d, in);
    auto loss = [&] {
      Vec out(in.dout.size()), lse(c.d.B * c.d.Hq * c.d.Tq);
      cpu::attention<double>(c.d, in.q.data(), in.k.data(), in.v.data(), out.data(), lse.data());
      double l = 0;
      for (size_t i = 0; i < out.size(); ++i) l += out[i] * in.dout[i];
      return l;
    };
    const double h = 1e-5;
    auto numeric = [&](Vec& x) {
      Vec g(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        const double x0 = x[i];
        x[i] = x0 + h;
        const double lp = loss();
        x[i] = x0 - h;
        const double lm = loss();
        x[i] = x0;
        g[i] = (lp - lm) / (2 * h);
      }
      return g;
    };
    EXPECT_LT(rel_err(analytic.dq, numeric(in.q)), 1e-6) << "dq";
    EXPECT_LT(rel_err(analytic.dk, numeric(in.k)), 1e-6) << "dk";
    EXPECT_LT(rel_err(analytic.dv, numeric(in.v)), 1e-6) << "dv";
  }
}

TEST(AttentionTest, RowsWithoutVisibleKeysGiveZeros) {
  const AttentionDims d = dims(1, 5, 3, 2, 1, 8, 8, true, 2, 2);  // positions 2..6, keys 0..2, window 2
  const Inputs in = random_inputs(d, 7);
  for (const Outputs& o : {run_kernel<double>(d, in), run_kernel<float>(d, in)}) {
    for (int64_t h = 0; h < d.Hq; ++h)
      for (int64_t t = 0; t < d.Tq; ++t) {
        const bool empty = t >= 2;  // position 4 and later: window (pos - 2, pos] holds no key < 3
        EXPECT_EQ(std::isinf(o.lse[h * d.Tq + t]), empty);
        for (int64_t c = 0; c < d.Dv && empty; ++c) EXPECT_EQ(o.out[(t * d.Hq + h) * d.Dv + c], 0.0);
      }
    for (const Vec* g : {&o.dq, &o.dk, &o.dv})
      for (double x : *g) EXPECT_TRUE(std::isfinite(x));
    for (int64_t t = 2; t < d.Tq; ++t)
      for (int64_t c = 0; c < d.Hq * d.Dk; ++c) EXPECT_EQ(o.dq[t * d.Hq * d.Dk + c], 0.0);
  }
}

// A decode step whose every score is -inf (each key holds +inf where the queries are negative) sees nothing: zeros
// and lse = -inf, not NaN, whether the keys fit one chunk of the group kernel or span several.
TEST(AttentionTest, DecodeWithInfiniteScoresGivesZeros) {
  for (int64_t T : {40, 300}) {
    SCOPED_TRACE("Tk " + std::to_string(T));
    const int64_t Hq = 4, D = 16;
    std::vector<float> q(static_cast<size_t>(Hq * D), 0.5f), k(static_cast<size_t>(T * D), 0.1f),
        v(static_cast<size_t>(T * D), 1.0f), out(q.size(), 7.0f), lse(static_cast<size_t>(Hq), 7.0f);
    for (int64_t h = 0; h < Hq; ++h) q[static_cast<size_t>(h * D)] = -1.0f;
    for (int64_t j = 0; j < T; ++j) k[static_cast<size_t>(j * D)] = std::numeric_limits<float>::infinity();
    AttentionDims d = dims(1, 1, T, Hq, 1, D, D, true, 0, T - 1);
    d.k_head_stride = d.v_head_stride = T * D;
    cpu::attention<float>(d, q.data(), k.data(), v.data(), out.data(), lse.data());
    for (float x : out) EXPECT_EQ(x, 0.0f);
    for (float x : lse) EXPECT_EQ(x, -std::numeric_limits<float>::infinity());
  }
}

template <typename T>
void expect_bitwise_equal_across_threads(const AttentionDims& d) {
  const Inputs in = random_inputs(d, 300);
  Outputs base;
  {
    lmforge::ThreadCountScope scope(1);
    base = run_kernel<T>(d, in);
  }
  for (int threads : {2, 3}) {
    lmforge::ThreadCountScope scope(threads);
    const Outputs o = run_kernel<T>(d, in);
    auto same = [](const Vec& a, const Vec& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
    };
    EXPECT_TRUE(same(o.out, base.out)) << threads << " threads: out";
    EXPECT_TRUE(same(o.lse, base.lse)) << threads << " threads: lse";
    EXPECT_TRUE(same(o.dq, base.dq)) << threads << " threads: dq";
    EXPECT_TRUE(same(o.dk, base.dk)) << threads << " threads: dk";
    EXPECT_TRUE(same(o.dv, base.dv)) << threads << " threads: dv";
  }
}

TEST(AttentionTest, BitwiseIdenticalAcrossThreadCounts) {
  for (const AttentionDims& d : {dims(2, 130, 130, 4, 2, 24, 16), dims(2, 100, 100, 4, 4, 16, 16, true, 40),
                                 dims(1, 70, 90, 4, 1, 16, 16, false), dims(1, 1, 700, 4, 2, 16, 16, true, 0, 699)}) {
    expect_bitwise_equal_across_threads<float>(d);
    expect_bitwise_equal_across_threads<double>(d);
  }
}

}  // namespace
