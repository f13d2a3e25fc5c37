// Optimizers with parameter groups (torch.optim semantics), and gradient clipping by global norm.
#pragma once
#include <string>
#include <vector>

#include "lmforge/core/autograd.h"

namespace lmforge {

struct ParamGroup {
  std::vector<Var> params;
  double weight_decay = 0.0;
  double lr_scale = 1.0;  // this group's lr = optimizer lr * lr_scale
  std::string name;
};

// Two groups as transformer recipes use: weight decay on matrices, none on 1-d tensors (norm weights, biases)
// nor on parameters whose name contains "embed" or "norm".
std::vector<ParamGroup> decay_groups(const std::vector<Var>& params, double weight_decay);

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  // Applies one update from the parameters' current gradients (parameters without a gradient are skipped).
  virtual void step() = 0;
  void zero_grad();
  void set_lr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }
  int64_t steps() const { return steps_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // State tensors per parameter (for checkpoints): names "<param index>.<slot>", including "<index>.step".
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) = 0;

 protected:
  std::vector<ParamGroup> groups_;
  double lr_ = 1e-3;
  int64_t steps_ = 0;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<ParamGroup> groups, const AdamWOptions& opt);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) override;

 private:
  AdamWOptions opt_;
  std::vector<Tensor> m_, v_;         // flat over all groups' params, in order
  std::vector<int64_t> param_steps_;  // updates each parameter has had (its bias correction)
};

struct SgdOptions {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
};

class Sgd : public Optimizer {
 public:
  Sgd(std::vector<ParamGroup> groups, const SgdOptions& opt);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) override;

 private:
  SgdOptions opt_;
  std::vector<Tensor> buf_;
  std::vector<int64_t> param_steps_;
};

// Scales all gradients so their global L2 norm is at most max_norm (torch.nn.utils.clip_grad_norm_: factor
// max_norm / (norm + 1e-6), applied only when below 1). Returns the norm before clipping; non-finite when a
// gradient holds inf/NaN (then nothing is scaled).
// grad_scale: the gradients hold grad_scale times the true gradient (fp16 loss scaling); they are divided by it
// in the same pass, and the norm returned is the true one.
double clip_grad_norm(const std::vector<Var>& params, double max_norm, double grad_scale = 1.0);

}  // namespace lmforge
