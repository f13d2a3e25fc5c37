// Calibration data and the capture of linear inputs (calib_runner.h, methods.h: load_calibration, clone_model).
#include "quant/calib_runner.h"

#include <cblas.h>

#include <cmath>
#include <cstring>

#include "lmforge/core/error.h"
#include "lmforge/quant/methods.h"
#include "lmforge/quant/quantized_model.h"
#include "quant/lm_perplexity.h"

namespace lmforge::quant {

std::vector<double> Captured::hessian() const {
  const int64_t n = this->n();
  std::vector<double> H(static_cast<size_t>(cols * cols), 0.0);
  if (n == 0) return H;
  // XᵀX in f32 per chunk of 256 rows (exact enough: each partial sums 256 products), accumulated in double.
  std::vector<float> part(static_cast<size_t>(cols * cols));
  for (int64_t r0 = 0; r0 < n; r0 += 256) {
    const int64_t k = std::min<int64_t>(256, n - r0);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(cols), static_cast<int>(cols),
                static_cast<int>(k), 1.0f, x.data() + r0 * cols, static_cast<int>(cols), x.data() + r0 * cols,
                static_cast<int>(cols), 0.0f, part.data(), static_cast<int>(cols));
    for (size_t i = 0; i < part.size(); ++i) H[i] += part[i];
  }
  const double s = 2.0 / static_cast<double>(n);
  for (double& v : H) v *= s;
  return H;
}

std::vector<double> Captured::mean_abs() const {
  std::vector<double> m(static_cast<size_t>(cols), 0.0);
  const int64_t n = this->n();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < cols; ++c) m[c] += std::fabs(x[r * cols + c]);
  for (double& v : m) v /= std::max<int64_t>(1, n);
  return m;
}

std::function<void(const std::string&, const Tensor&)> InputCollector::observer() {
  return [this](const std::string& name, const Tensor& input) {
    if (name.rfind(prefix_, 0) != 0 || !is_linear_weight(name)) return;
    const Tensor x = input.contiguous();
    const int64_t cols = x.size(x.dim() - 1);
    Captured& c = data_[name];
    c.cols = cols;
    const float* p = x.data<float>();
    c.x.insert(c.x.end(), p, p + x.numel());
  };
}

void run_calibration(const model::CausalLM& m, const std::vector<Tensor>& calib,
                     const std::function<void(const std::string&, const Tensor&)>& observe, int64_t layers) {
  (void)layers;  // the forward pass runs every layer; later layers' inputs are simply not captured
  model::ForwardOptions o;
  o.observe = observe;
  for (const Tensor& seq : calib) (void)m.forward(seq, o);
}

Tensor parameter_tensor(const model::CausalLM& m, const std::string& name) {
  for (const auto& [n, t] : m.state())
    if (n == name) return t;
  LMF_CHECK(false, "model has no tensor '", name, "'");
  return {};
}

void set_parameter(model::CausalLM& m, const std::string& name, const Tensor& value) {
  Tensor t = parameter_tensor(m, name);
  LMF_CHECK(t.shape() == value.shape() && t.dtype() == DType::F32 && t.is_contiguous(), "set_parameter: '", name,
            "' is ", t.str(), ", got ", value.str());
  const Tensor v = value.to(DType::F32).contiguous();
  std::memcpy(t.raw_data(), v.raw_data(), t.nbytes());
}

model::CausalLM clone_model(const model::CausalLM& m) {
  model::CausalLM c(m.config());
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, t] : m.state()) tensors[name] = t.clone();
  c.load_weights(tensors, "model copy");
  return c;
}

std::vector<Tensor> load_calibration(const CalibOptions& opt) {
  LMF_CHECK(opt.ctx >= 2, "--calib-ctx must be at least 2");
  const model::ModelConfig cfg = model::load_model_config(opt.model_dir + "/config.json");
  std::string how;
  const std::vector<int32_t> ids =
      eval::lm::load_eval_tokens(opt.path, opt.model_dir, cfg.vocab_size, opt.tokens, "train", "text", &how);
  LMF_CHECK(ids.size() >= 2, opt.path, ": calibration data has fewer than 2 tokens");
  std::vector<Tensor> out;
  const auto n = static_cast<int64_t>(ids.size());
  const int64_t ctx = std::min(opt.ctx, cfg.max_position_embeddings);
  for (int64_t b = 0; b < n; b += ctx) {
    const int64_t e = std::min(n, b + ctx);
    if (e - b < 2) break;
    out.push_back(Tensor::from_ints(std::vector<int32_t>(ids.begin() + b, ids.begin() + e), {1, e - b}));
  }
  return out;
}

}  // namespace lmforge::quant
