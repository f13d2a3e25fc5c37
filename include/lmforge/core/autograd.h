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
  Tensor value;
  Tensor grad;  // undefined until a gradient arrives
  bool requires_grad = false;
  bool is_leaf = true;  // not produced by a recorded op: its gradient is kept after backward
  std::string name;
};

class Var {
 public:
  Var() = default;
  explicit Var(Tensor value, bool requires_grad = false, std::string name = {});
  explicit Var(std::shared_ptr<VarImpl> impl) : p_(std::move(impl)) {}

  bool defined() const { return p_ != nullptr; }
  const Tensor& value() const { return p_->value; }
  Tensor& mutable_value() { return p_->value; }
  const Tensor& grad() const { return p_->grad; }
  bool requires_grad() const { return p_ && p_->requires_grad; }
  const std::string& name() const { return p_->name; }
  void zero_grad() { p_->grad = Tensor(); }
  // Accumulates g into this variable's gradient (allocating it on first use).
  void accumulate_grad(const Tensor& g) const;

  // Shorthands on the value.
  const Shape& shape() const { return p_->value.shape(); }
  int64_t size(int64_t d) const { return p_->value.size(d); }
  int64_t dim() const { return p_->value.dim(); }
  DType dtype() const { return p_->value.dtype(); }

  const std::shared_ptr<VarImpl>& impl() const { return p_; }

 private:
  std::shared_ptr<VarImpl> p_;
};

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
