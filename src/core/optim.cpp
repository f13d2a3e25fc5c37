#include "lmforge/core/optim.h"

#include <algorithm>
#include <cmath>

#include "lmforge/kernels/cpu.h"

namespace lmforge {

namespace k = kernels::cpu;

std::vector<ParamGroup> decay_groups(const std::vector<Var>& params, double weight_decay) {
  ParamGroup decay{{}, weight_decay, 1.0, "decay"}, no_decay{{}, 0.0, 1.0, "no_decay"};
  for (const Var& p : params) {
    const std::string& n = p.name();
    const bool skip = p.dim() <= 1 || n.find("embed") != std::string::npos || n.find("norm") != std::string::npos;
    (skip ? no_decay : decay).params.push_back(p);
  }
  std::vector<ParamGroup> out;
  if (!decay.params.empty()) out.push_back(decay);
  if (!no_decay.params.empty()) out.push_back(no_decay);
  return out;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  for (const ParamGroup& g : groups_) {
    for (const Var& p : g.params) {
      LMF_CHECK(p.requires_grad(), "optimizer: parameter ", p.name(), " does not require gradients");
      LMF_CHECK(p.dtype() == DType::F32 || p.dtype() == DType::F64, "optimizer: parameter ", p.name(), " is ",
                p.value().str(), "; optimizers update f32 (master) or f64 weights");
      LMF_CHECK(p.value().is_contiguous(), "optimizer: parameter ", p.name(), " is not contiguous");
    }
  }
}

void Optimizer::zero_grad() {
  for (ParamGroup& g : groups_)
    for (Var& p : g.params) p.zero_grad();
}

namespace {
Tensor grad_as(const Var& p) {
  Tensor g = p.grad();
  if (g.dtype() != p.dtype()) g = g.to(p.dtype());
  return g.contiguous();
}

std::vector<std::pair<std::string, Tensor>> named(const std::vector<Tensor>& a, const char* sa,
                                                  const std::vector<Tensor>* b, const char* sb) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < a.size(); ++i) {
    out.emplace_back(std::to_string(i) + "." + sa, a[i]);
    if (b) out.emplace_back(std::to_string(i) + "." + sb, (*b)[i]);
  }
  return out;
}

void load_slot(const std::vector<std::pair<std::string, Tensor>>& state, const std::string& key, Tensor& dst) {
  for (const auto& [name, t] : state) {
    if (name != key) continue;
    LMF_CHECK(t.shape() == dst.shape(), "optimizer state ", key, " has shape ", shape_str(t.shape()),
              ", parameter has ", shape_str(dst.shape()));
    dst.copy_from(t);
    return;
  }
  throw Error("optimizer state is missing " + key);
}
}  // namespace

AdamW::AdamW(std::vector<ParamGroup> groups, const AdamWOptions& opt) : Optimizer(std::move(groups)), opt_(opt) {
  lr_ = opt.lr;
  for (const ParamGroup& g : groups_) {
    for (const Var& p : g.params) {
      m_.push_back(Tensor::zeros(p.shape(), p.dtype()));
      v_.push_back(Tensor::zeros(p.shape(), p.dtype()));
      param_steps_.push_back(0);
    }
  }
}

void AdamW::step() {
  ++steps_;
  size_t i = 0;
  for (ParamGroup& g : groups_) {
    const double lr = lr_ * g.lr_scale;
    for (Var& p : g.params) {
      Tensor& m = m_[i];
      Tensor& v = v_[i];
      int64_t& t = param_steps_[i];
      ++i;
      // As torch.optim: a parameter without a gradient (an unused expert) is skipped and its own step count,
      // which drives its bias correction, does not advance.
      if (!p.grad().defined()) continue;
      ++t;
      Tensor grad = grad_as(p);
      Tensor& w = p.mutable_value();
      if (w.dtype() == DType::F64) {
        k::adamw(w.data<double>(), grad.data<double>(), m.data<double>(), v.data<double>(), w.numel(), lr, opt_.beta1,
                 opt_.beta2, opt_.eps, g.weight_decay, t);
      } else {
        k::adamw(w.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(), w.numel(), lr, opt_.beta1,
                 opt_.beta2, opt_.eps, g.weight_decay, t);
      }
    }
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  auto out = named(m_, "exp_avg", &v_, "exp_avg_sq");
  for (size_t i = 0; i < param_steps_.size(); ++i)
    out.emplace_back(std::to_string(i) + ".step", Tensor::full({1}, static_cast<double>(param_steps_[i]), DType::F64));
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  for (size_t i = 0; i < m_.size(); ++i) {
    load_slot(state, std::to_string(i) + ".exp_avg", m_[i]);
    load_slot(state, std::to_string(i) + ".exp_avg_sq", v_[i]);
    Tensor t = Tensor::zeros({1}, DType::F64);
    load_slot(state, std::to_string(i) + ".step", t);
    param_steps_[i] = static_cast<int64_t>(t.item());
  }
  steps_ = steps;
}

Sgd::Sgd(std::vector<ParamGroup> groups, const SgdOptions& opt) : Optimizer(std::move(groups)), opt_(opt) {
  lr_ = opt.lr;
  LMF_CHECK(!opt.nesterov || (opt.momentum > 0 && opt.dampening == 0),
            "sgd: nesterov needs momentum > 0 and dampening 0");
  for (const ParamGroup& g : groups_)
    for (const Var& p : g.params) {
      buf_.push_back(Tensor::zeros(p.shape(), p.dtype()));
      param_steps_.push_back(0);
    }
}

void Sgd::step() {
  ++steps_;
  size_t i = 0;
  for (ParamGroup& g : groups_) {
    const double lr = lr_ * g.lr_scale;
    for (Var& p : g.params) {
      Tensor& b = buf_[i];
      int64_t& t = param_steps_[i++];
      if (!p.grad().defined()) continue;
      const bool first = t++ == 0;  // torch: the momentum buffer starts as the first gradient this parameter sees
      Tensor grad = grad_as(p);
      Tensor& w = p.mutable_value();
      // Without momentum every step is a "first" step: buf = g, p -= lr * g.
      if (w.dtype() == DType::F64) {
        k::sgd(w.data<double>(), grad.data<double>(), b.data<double>(), w.numel(), lr, opt_.momentum, opt_.dampening,
               g.weight_decay, opt_.nesterov, first || opt_.momentum == 0.0);
      } else {
        k::sgd(w.data<float>(), grad.data<float>(), b.data<float>(), w.numel(), lr, opt_.momentum, opt_.dampening,
               g.weight_decay, opt_.nesterov, first || opt_.momentum == 0.0);
      }
    }
  }
}

std::vector<std::pair<std::string, Tensor>> Sgd::state() const {
  auto out = named(buf_, "momentum_buffer", nullptr, "");
  for (size_t i = 0; i < param_steps_.size(); ++i)
    out.emplace_back(std::to_string(i) + ".step", Tensor::full({1}, static_cast<double>(param_steps_[i]), DType::F64));
  return out;
}

void Sgd::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  for (size_t i = 0; i < buf_.size(); ++i) {
    load_slot(state, std::to_string(i) + ".momentum_buffer", buf_[i]);
    Tensor t = Tensor::zeros({1}, DType::F64);
    load_slot(state, std::to_string(i) + ".step", t);
    param_steps_[i] = static_cast<int64_t>(t.item());
  }
  steps_ = steps;
}

double clip_grad_norm(const std::vector<Var>& params, double max_norm, double grad_scale) {
  double sq = 0.0;
  for (const Var& p : params) {
    if (!p.grad().defined()) continue;
    Tensor g = p.grad().contiguous();
    sq += g.dtype() == DType::F64 ? k::sum_squares(g.data<double>(), g.numel())
                                  : k::sum_squares(g.to(DType::F32).data<float>(), g.numel());
  }
  const double norm = std::sqrt(sq) / grad_scale;
  if (!std::isfinite(norm)) return norm;
  const double coef = std::min(1.0, max_norm / (norm + 1e-6)) / grad_scale;
  if (coef == 1.0) return norm;
  for (const Var& p : params) {
    if (!p.grad().defined()) continue;
    Tensor g = p.grad().contiguous();
    Tensor out = Tensor::empty(g.shape(), g.dtype() == DType::F64 ? DType::F64 : DType::F32);
    if (out.dtype() == DType::F64) {
      k::scale(g.data<double>(), coef, out.data<double>(), g.numel());
    } else {
      k::scale(g.to(DType::F32).data<float>(), static_cast<float>(coef), out.data<float>(), g.numel());
    }
    // A fresh tensor: gradients may share storage with other variables' gradients.
    p.impl()->grad = out;
  }
  return norm;
}

}  // namespace lmforge
