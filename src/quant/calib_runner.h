// Calibration plumbing shared by GPTQ and AWQ: running calibration sequences through a model with the forward
// pass's observer hook, capturing the inputs of chosen linears, and reading / writing parameters by HF name.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "lmforge/model/model.h"

namespace lmforge::quant {

// The rows [n, cols] that reached one linear.
struct Captured {
  int64_t cols = 0;
  std::vector<float> x;
  int64_t n() const { return cols > 0 ? static_cast<int64_t>(x.size()) / cols : 0; }
  // 2/n XᵀX (double, [cols, cols]).
  std::vector<double> hessian() const;
  // mean |x| per input channel.
  std::vector<double> mean_abs() const;
};

// Captures the inputs of every linear whose name starts with `prefix`.
class InputCollector {
 public:
  explicit InputCollector(std::string prefix) : prefix_(std::move(prefix)) {}
  std::function<void(const std::string&, const Tensor&)> observer();
  std::map<std::string, Captured> take() { return std::move(data_); }

 private:
  std::string prefix_;
  std::map<std::string, Captured> data_;
};
using HessianCollector = InputCollector;

// Forwards every sequence (no tape) with `observe` set.
void run_calibration(const model::CausalLM& m, const std::vector<Tensor>& calib,
                     const std::function<void(const std::string&, const Tensor&)>& observe, int64_t layers = 0);

// The model's tensor `name` (shares the model's memory); an Error when there is none.
Tensor parameter_tensor(const model::CausalLM& m, const std::string& name);
// Overwrites the model's tensor `name` with `value` (same shape, f32).
void set_parameter(model::CausalLM& m, const std::string& name, const Tensor& value);

}  // namespace lmforge::quant
