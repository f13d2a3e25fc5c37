#include "lmforge/core/autograd.h"

#include "lmforge/kernels/cpu.h"

namespace lmforge {

namespace {
thread_local Tape* t_active_tape = nullptr;

// a + b into a fresh tensor (never in place: a gradient tensor may be shared by several variables).
Tensor add_fresh(const Tensor& a, const Tensor& b) {
  LMF_CHECK(a.shape() == b.shape(), "gradient shape ", shape_str(b.shape()), " does not match ", shape_str(a.shape()));
  DType dt = a.dtype() == DType::F64 || b.dtype() == DType::F64 ? DType::F64 : DType::F32;
  Tensor x = a.dtype() == dt ? a.contiguous() : a.to(dt);
  Tensor y = b.dtype() == dt ? b.contiguous() : b.to(dt);
  Tensor out = Tensor::empty(a.shape(), dt);
  if (dt == DType::F64) {
    kernels::cpu::add(x.data<double>(), y.data<double>(), out.data<double>(), out.numel());
  } else {
    kernels::cpu::add(x.data<float>(), y.data<float>(), out.data<float>(), out.numel());
  }
  return out;
}
}  // namespace

Var::Var(Tensor value, bool requires_grad, std::string name) : h_(std::make_shared<Handle>()) {
  h_->impl = std::make_shared<VarImpl>();
  VarImpl& p = *h_->impl;
  p.shape = value.shape();
  p.value = std::move(value);
  p.requires_grad = requires_grad;
  p.name = std::move(name);
}

Var::Handle::~Handle() {
  if (impl && !impl->is_leaf && impl.use_count() > 1) impl->value = Tensor();
}

void VarImpl::accumulate_grad(const Tensor& g) {
  if (!requires_grad || !g.defined()) return;
  LMF_CHECK(g.shape() == grad_shape(), "gradient of shape ", shape_str(g.shape()), " for ",
            name.empty() ? "a variable" : name, " of shape ", shape_str(grad_shape()));
  if (!grad.defined()) {
    grad = g;
  } else {
    grad = add_fresh(grad, g);
  }
}

namespace {
thread_local SavedPrecision t_saved_precision = SavedPrecision::F32;
}

SavedPrecision saved_precision() {
  return t_saved_precision;
}
SavedPrecisionScope::SavedPrecisionScope(SavedPrecision p) : saved_(t_saved_precision) {
  t_saved_precision = p;
}
SavedPrecisionScope::~SavedPrecisionScope() {
  t_saved_precision = saved_;
}

DType saved_dtype() {
  switch (t_saved_precision) {
    case SavedPrecision::BF16:
      return DType::BF16;
    case SavedPrecision::F16:
      return DType::F16;
    default:
      return DType::F32;
  }
}

Tensor save_for_backward(const Tensor& t) {
  const DType n = saved_dtype();
  if (!t.defined() || t.dtype() != DType::F32 || n == DType::F32) return t;
  return t.to(n);
}

Var parameter(Tensor value, std::string name) {
  return Var(std::move(value), true, std::move(name));
}

Tape* active_tape() {
  return t_active_tape;
}

TapeScope::TapeScope(Tape* tape) : saved_(t_active_tape) {
  t_active_tape = tape;
}
TapeScope::~TapeScope() {
  t_active_tape = saved_;
}

bool needs_record(std::initializer_list<const Var*> inputs) {
  if (!t_active_tape) return false;
  for (const Var* v : inputs)
    if (v && v->requires_grad()) return true;
  return false;
}

void Tape::record(const char* op, const std::vector<Var>& outputs, Backward backward) {
  Node n{op, {}, std::move(backward)};
  for (const Var& o : outputs) {
    o.impl()->requires_grad = true;
    o.impl()->is_leaf = false;
    n.outputs.push_back(o.impl());
  }
  nodes_.push_back(std::move(n));
}

void Tape::backward(const Var& root, const Tensor& seed) {
  LMF_CHECK(root.defined(), "backward from an undefined variable");
  if (seed.defined()) {
    LMF_CHECK(seed.shape() == root.shape(), "backward seed ", shape_str(seed.shape()), " for root ",
              shape_str(root.shape()));
    root.impl()->grad = seed;
  } else {
    root.impl()->grad = Tensor::full(root.shape(), 1.0, root.dtype() == DType::F64 ? DType::F64 : DType::F32);
  }
  backward_seeded();
}

void Tape::clear() {
  nodes_.clear();
}

std::vector<Var> checkpoint(const std::function<std::vector<Var>(const std::vector<Var>&)>& fn,
                            const std::vector<Var>& inputs) {
  Tape* outer = active_tape();
  std::vector<Var> outs;
  {
    TapeScope no_record(nullptr);
    outs = fn(inputs);
  }
  if (!outer) return outs;
  // Fresh output variables: the forward's internals are dropped and recomputed in backward.
  std::vector<Var> outputs;
  outputs.reserve(outs.size());
  for (const Var& o : outs) outputs.emplace_back(o.value());
  std::vector<std::shared_ptr<VarImpl>> out_impls;
  out_impls.reserve(outputs.size());
  for (const Var& o : outputs) out_impls.push_back(o.impl());
  outer->record("checkpoint", outputs, [fn, inputs, out_impls] {
    std::vector<Var> detached;
    detached.reserve(inputs.size());
    for (const Var& in : inputs) detached.emplace_back(in.value(), in.requires_grad());
    Tape inner;
    std::vector<Var> replay;
    {
      TapeScope scope(&inner);
      replay = fn(detached);
    }
    LMF_CHECK(replay.size() == out_impls.size(), "checkpoint: replay returned ", replay.size(), " outputs, not ",
              out_impls.size());
    // One backward over all outputs: sum_i <grad_i, out_i> as the root.
    for (size_t i = 0; i < replay.size(); ++i) {
      if (!out_impls[i]->grad.defined() || !replay[i].requires_grad()) continue;
      replay[i].impl()->grad = out_impls[i]->grad;
    }
    inner.backward_seeded();
    for (size_t i = 0; i < inputs.size(); ++i) inputs[i].accumulate_grad(detached[i].grad());
  });
  return outputs;
}

void Tape::backward_seeded() {
  for (size_t i = nodes_.size(); i-- > 0;) {
    Node& n = nodes_[i];
    bool any = false;
    for (auto& o : n.outputs) any = any || o->grad.defined();
    if (any && n.backward) n.backward();
    // Free what this node saved and the gradients of its intermediate outputs as soon as they are used.
    n.backward = nullptr;
    for (auto& o : n.outputs) {
      o->grad = Tensor();
      o->narrow = Tensor();
    }
  }
  nodes_.clear();
}

}  // namespace lmforge
