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

std::vector<double> Captured::mean_abs() const {
  std::vector<double> m(static_cast<size_t>(cols), 0.0);
  const int64_t n = this->n();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < cols; ++c) m[c] += std::fabs(x[r * cols + c]);
  for (double& v : m) v /= std::max<int64_t>(1, n);
  return m;
}

Observer InputCollector::observer() {
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

namespace {
constexpr int64_t kHessianChunk = 256;  // rows per f32 product
}  // namespace

void HessianCollector::Sum::add(const float* x, int64_t rows) {
  if (buf.empty()) buf.resize(static_cast<size_t>(kHessianChunk * cols));
  n += rows;
  while (rows > 0) {
    const int64_t k = std::min(rows, kHessianChunk - pending);
    std::memcpy(buf.data() + pending * cols, x, sizeof(float) * static_cast<size_t>(k * cols));
    pending += k;
    x += k * cols;
    rows -= k;
    if (pending == kHessianChunk) flush();
  }
}

void HessianCollector::Sum::flush() {
  if (pending == 0) return;
  if (H.empty()) {
    H.assign(static_cast<size_t>(cols * cols), 0.0);
    part.resize(H.size());
  }
  // The upper triangle only (half sgemm's operations); take() mirrors it.
  const int c = static_cast<int>(cols);
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, c, static_cast<int>(pending), 1.0f, buf.data(), c, 0.0f,
              part.data(), c);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = i; j < cols; ++j) H[i * cols + j] += part[i * cols + j];
  pending = 0;
}

Observer HessianCollector::observer() {
  return [this](const std::string& name, const Tensor& input) {
    if (name.rfind(prefix_, 0) != 0 || !is_linear_weight(name)) return;
    const bool same = last_.defined() && input.raw_data() == last_.raw_data() && input.shape() == last_.shape() &&
                      input.strides() == last_.strides();
    auto it = owner_.find(name);
    if (it == owner_.end()) it = owner_.emplace(name, same ? last_owner_ : name).first;
    if (it->second != name) {  // shares its owner's input: already summed
      LMF_CHECK(same && last_owner_ == it->second, "calibration: linear '", name, "' no longer sees the input of '",
                it->second, "'");
      return;
    }
    const Tensor x = input.contiguous();
    Sum& s = sums_[name];
    s.cols = x.size(x.dim() - 1);
    s.add(x.data<float>(), x.numel() / s.cols);
    last_ = input;
    last_owner_ = name;
  };
}

std::map<std::string, std::vector<double>> HessianCollector::take() {
  std::map<std::string, std::vector<double>> out;
  for (auto& [name, s] : sums_) {
    s.flush();
    if (s.H.empty()) s.H.assign(static_cast<size_t>(s.cols * s.cols), 0.0);
    const double k = s.n > 0 ? 2.0 / static_cast<double>(s.n) : 0.0;
    for (int64_t i = 0; i < s.cols; ++i)
      for (int64_t j = i; j < s.cols; ++j) s.H[j * s.cols + i] = s.H[i * s.cols + j] *= k;
  }
  for (const auto& [name, owner] : owner_)  // copies for the sharers first, then the owners' sums moved
    if (name != owner) out[name] = sums_[owner].H;
  for (auto& [name, s] : sums_) out[name] = std::move(s.H);
  sums_.clear();
  owner_.clear();
  last_ = Tensor();
  return out;
}

LayerwiseRunner::LayerwiseRunner(const model::CausalLM& m, const std::vector<Tensor>& calib) : m_(m) {
  h_.reserve(calib.size());
  for (const Tensor& ids : calib) h_.push_back(m.embed(ids));
}

void LayerwiseRunner::observe(const Observer& observe) const {
  LMF_CHECK(layer_ < m_.config().num_hidden_layers, "calibration: every layer has been run");
  model::ForwardOptions o;
  o.observe = observe;
  for (const Tensor& h : h_) (void)m_.forward_layer(layer_, h, o);
}

void LayerwiseRunner::advance() {
  LMF_CHECK(layer_ < m_.config().num_hidden_layers, "calibration: every layer has been run");
  for (Tensor& h : h_) h = m_.forward_layer(layer_, h);
  ++layer_;
}

StreamedModel::StreamedModel(const std::string& dir)
    : files_(dir), m_(model::CausalLM::without_weights(files_.config())) {
  for (const auto& [name, t] : m_.state())  // buffers: allocated by the model, read now (small)
    if (t.defined()) std::memcpy(t.raw_data(), files_.read_f32(name).raw_data(), t.nbytes());
}

void StreamedModel::bring_in(const std::string& prefix) {
  for (Var v : m_.parameters())
    if (v.name().rfind(prefix, 0) == 0 && !v.value().defined()) v.mutable_value() = files_.read_f32(v.name());
}

void StreamedModel::let_go(const std::string& prefix) {
  for (Var v : m_.parameters())
    if (v.name().rfind(prefix, 0) == 0) v.mutable_value() = Tensor();
}

void rtn_part(QuantizedWeights& out, const model::CausalLM& m, const std::string& prefix) {
  for (const auto& [name, t] : m.state())
    if (name.rfind(prefix, 0) == 0) add_rtn(out, name, t);
}

void bring_in(StreamedModel* s, const std::string& prefix) {
  if (s) s->bring_in(prefix);
}

void let_go(StreamedModel* s, const std::string& prefix) {
  if (s) s->let_go(prefix);
}

void rtn_head(QuantizedWeights& out, const model::CausalLM& m, StreamedModel* s) {
  for (const char* part : {"model.norm.", "lm_head."}) {
    bring_in(s, part);
    rtn_part(out, m, part);
    let_go(s, part);
  }
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
