// Gradient checking: analytic gradients from the tape against central finite differences in double precision,
// and the f32 path against the f64 path.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "lmforge/core/autograd.h"
#include "lmforge/core/ops.h"

namespace lmforge::testing {

using Fn = std::function<Var(const std::vector<Var>&)>;

inline Tensor random_tensor(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = u(rng);
  return Tensor::from_vector(v, shape);
}

// ||a - b|| / max(||b||, 1e-300)
inline double rel_err(const Tensor& a, const Tensor& b) {
  auto x = a.to_double_vector(), y = b.to_double_vector();
  EXPECT_EQ(x.size(), y.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

// Loss = sum(f(inputs) * R) for a fixed random R, so every output element's gradient is exercised.
inline double eval_loss(const Fn& f, const std::vector<Var>& in, const Tensor& R) {
  TapeScope none(nullptr);
  Var out = f(in);
  auto o = out.value().to_double_vector(), r = R.to_double_vector();
  double s = 0;
  for (size_t i = 0; i < o.size(); ++i) s += o[i] * r[i];
  return s;
}

struct GradResult {
  std::vector<Tensor> grads;
  Tensor output;
};

inline GradResult analytic(const Fn& f, const std::vector<Tensor>& values, const std::vector<bool>& diff,
                           const Tensor* R_in, DType dt) {
  std::vector<Var> in;
  for (size_t i = 0; i < values.size(); ++i) {
    Tensor v = values[i].dtype() == DType::I32 ? values[i] : values[i].to(dt);
    in.emplace_back(v, diff[i]);
  }
  Tape tape;
  Var out;
  {
    TapeScope scope(&tape);
    out = f(in);
    Var R(R_in->to(dt));
    out = ops::sum(ops::mul(out, R));
  }
  GradResult res;
  tape.backward(out);
  for (size_t i = 0; i < in.size(); ++i) res.grads.push_back(diff[i] ? in[i].grad() : Tensor());
  {
    TapeScope none(nullptr);
    res.output = f(in).value();
  }
  return res;
}

// Checks f's gradients w.r.t. inputs marked differentiable. `values` are f64 (or i32 for index inputs).
// max_checks bounds the finite-difference probes per input (spread over the tensor).
inline void check_gradients(const Fn& f, const std::vector<Tensor>& values, const std::vector<bool>& diff,
                            double fd_tol = 1e-6, double f32_fwd_tol = 1e-5, double f32_grad_tol = 1e-4,
                            int max_checks = 400, double h = 1e-5) {
  Tensor out0;
  {
    std::vector<Var> in;
    for (const Tensor& v : values) in.emplace_back(v);
    TapeScope none(nullptr);
    out0 = f(in).value();
  }
  Tensor R = random_tensor(out0.shape(), 1234);
  GradResult g64 = analytic(f, values, diff, &R, DType::F64);

  for (size_t i = 0; i < values.size(); ++i) {
    if (!diff[i]) continue;
    ASSERT_TRUE(g64.grads[i].defined()) << "input " << i << " received no gradient";
    const int64_t n = values[i].numel();
    const int64_t step = std::max<int64_t>(1, n / max_checks);
    auto ana = g64.grads[i].to_double_vector();
    double num2 = 0, den2 = 0;
    for (int64_t j = 0; j < n; j += step) {
      std::vector<Var> plus, minus;
      for (size_t m = 0; m < values.size(); ++m) {
        Tensor a = values[m].clone(), b = values[m].clone();
        if (m == i) {
          a.data<double>()[j] += h;
          b.data<double>()[j] -= h;
        }
        plus.emplace_back(a);
        minus.emplace_back(b);
      }
      const double fd = (eval_loss(f, plus, R) - eval_loss(f, minus, R)) / (2 * h);
      num2 += (fd - ana[j]) * (fd - ana[j]);
      den2 += fd * fd;
    }
    const double err = std::sqrt(num2) / std::max(std::sqrt(den2), 1e-12);
    EXPECT_LT(err, fd_tol) << "finite-difference mismatch for input " << i;
  }

  // The f32 path against the f64 path.
  GradResult g32 = analytic(f, values, diff, &R, DType::F32);
  EXPECT_EQ(g32.output.dtype(), DType::F32);
  EXPECT_LT(rel_err(g32.output, g64.output), f32_fwd_tol) << "f32 forward differs from f64";
  for (size_t i = 0; i < values.size(); ++i) {
    if (!diff[i]) continue;
    ASSERT_TRUE(g32.grads[i].defined());
    EXPECT_LT(rel_err(g32.grads[i], g64.grads[i]), f32_grad_tol) << "f32 gradient of input " << i;
  }
}

}  // namespace lmforge::testing
