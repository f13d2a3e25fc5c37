// Reverse-mode autodiff with a tape.
//
// A Var holds a value tensor and, after backward, a gradient. While a Tape is active on this thread (TapeScope),
// every op whose inputs need gradients appends one node to it: the outputs and a closure that, given the
// outputs' gradients, accumulates the inputs' gradients. Tape::backward walks the nodes in reverse and frees each
// node's saved tensors as it goes. Without an active tape ops just compute (inference).
//
// Activation checkpointing: checkpoint(fn, inputs) runs fn without recording and records a single node that
// replays fn on a private tape during backward. fn is kept and called again after the caller's frame may be
// gone, so it must capture by value (or reference only what outlives backward).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmforge {

struct VarImpl {
  Tensor value;  // released when the last Var handle goes, unless a leaf: backward keeps only what ops saved
  Tensor grad;   // undefined until a gradient arrives
  bool requires_grad = false;
  bool is_leaf = true;  // not produced by a recorded op: its gradient is kept after backward
  std::string name;
  Shape shape;  // the value's shape, still known after the value is released
  // The bf16/f16 copy of the value that backward closures keep under mixed precision, made once however many ops
  // save this variable (q, k and v projections share their input); dropped when the producing node's backward ran.
  Tensor narrow;
  std::weak_ptr<VarImpl> view_of;  // set by reshape: the variable whose data this one views

  const Shape& grad_shape() const { return value.defined() ? value.shape() : shape; }
  // Accumulates g into the gradient (allocating it on first use); a no-op unless requires_grad.
  void accumulate_grad(const Tensor& g);
};

// What a backward closure keeps of a variable: its gradient slot, not its value. Closures that need an input's
// value save that tensor themselves (possibly in a compact dtype, see SavedPrecision), so the forward pass's
// intermediate values are freed as soon as the model code drops them.
class GradRef {
 public:
  GradRef() = default;
  explicit GradRef(std::shared_ptr<VarImpl> p) : p_(std::move(p)) {}
  bool requires_grad() const { return p_ && p_->requires_grad; }
  const Shape& shape() const { return p_->grad_shape(); }
  const Tensor& grad() const { return p_->grad; }
  void accumulate_grad(const Tensor& g) const {
    if (p_) p_->accumulate_grad(g);
  }
  const std::shared_ptr<VarImpl>& impl() const { return p_; }

 private:
  std::shared_ptr<VarImpl> p_;
};

class Var {
 public:
  Var() = default;
  explicit Var(Tensor value, bool requires_grad = false, std::string name = {});

  bool defined() const { return h_ != nullptr; }
  const Tensor& value() const { return h_->impl->value; }
  Tensor& mutable_value() { return h_->impl->value; }
  const Tensor& grad() const { return h_->impl->grad; }
  bool requires_grad() const { return h_ && h_->impl->requires_grad; }
  const std::string& name() const { return h_->impl->name; }
  void zero_grad() { h_->impl->grad = Tensor(); }
  // Accumulates g into this variable's gradient (allocating it on first use).
  void accumulate_grad(const Tensor& g) const { h_->impl->accumulate_grad(g); }

  // Shorthands on the value.
  const Shape& shape() const { return h_->impl->value.shape(); }
  int64_t size(int64_t d) const { return h_->impl->value.size(d); }
  int64_t dim() const { return h_->impl->value.dim(); }
  DType dtype() const { return h_->impl->value.dtype(); }

  const std::shared_ptr<VarImpl>& impl() const { return h_->impl; }
  GradRef grad_ref() const { return GradRef(h_->impl); }

 private:
  // All copies of a Var share one handle; when the last goes, a non-leaf value is released even though the tape
  // and closures still hold the VarImpl for its gradient.
  struct Handle {
    std::shared_ptr<VarImpl> impl;
    ~Handle();
  };
  std::shared_ptr<Handle> h_;
};

// How ops keep the activations their backward needs. F32: as computed. BF16 / F16: as a compact copy
// (half the memory), widened again in backward; see SavedPrecisionScope. Thread-local, like the active tape.
enum class SavedPrecision : uint8_t { F32, BF16, F16 };
SavedPrecision saved_precision();
class SavedPrecisionScope {
 public:
  explicit SavedPrecisionScope(SavedPrecision p);
  ~SavedPrecisionScope();
  SavedPrecisionScope(const SavedPrecisionScope&) = delete;
  SavedPrecisionScope& operator=(const SavedPrecisionScope&) = delete;

 private:
  SavedPrecision saved_;
};
// t as an op should keep it for backward under the current SavedPrecision (f64 tensors are never narrowed).
Tensor save_for_backward(const Tensor& t);
// The dtype save_for_backward narrows f32 to (F32 when it does not).
DType saved_dtype();

// A learnable parameter (requires_grad, leaf).
Var parameter(Tensor value, std::string name = {});

class Tape {
 public:
  using Backward = std::function<void()>;

  // Appends a node. `outputs` become non-leaf and require gradients.
  void record(const char* op, const std::vector<Var>& outputs, Backward backward);
  // Seeds d(root)/d(root) with `seed` (ones when undefined) and runs the nodes in reverse. Clears the tape.
  void backward(const Var& root, const Tensor& seed = Tensor());
  // Runs the nodes in reverse from gradients already placed on their outputs (several roots). Clears the tape.
  void backward_seeded();
  void clear();
  size_t size() const { return nodes_.size(); }

 private:
  struct Node {
    const char* op;
    std::vector<std::shared_ptr<VarImpl>> outputs;
    Backward backward;
  };
  std::vector<Node> nodes_;
};

// The tape ops record on for this thread, or nullptr.
Tape* active_tape();

// Makes `tape` the active tape for the scope (nullptr: no recording, as in inference or optimizer steps).
class TapeScope {
 public:
  explicit TapeScope(Tape* tape);
  ~TapeScope();
  TapeScope(const TapeScope&) = delete;
  TapeScope& operator=(const TapeScope&) = delete;

 private:
  Tape* saved_;
};

// True when an op with these inputs must record (a tape is active and some input requires grad).
bool needs_record(std::initializer_list<const Var*> inputs);

// Runs fn(inputs) -> outputs without keeping its intermediate activations; during backward fn is replayed on a
// private tape to produce the gradients. fn must be deterministic (no dropout without a fixed seed).
std::vector<Var> checkpoint(const std::function<std::vector<Var>(const std::vector<Var>&)>& fn,
                            const std::vector<Var>& inputs);

}  // namespace lmforge
