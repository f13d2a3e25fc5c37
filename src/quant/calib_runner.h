// Calibration plumbing shared by GPTQ and AWQ: running calibration sequences through a model with the forward
// pass's observer hook, capturing the inputs of chosen linears, and reading / writing parameters by HF name.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lmforge/model/model.h"
#include "lmforge/quant/quantized_model.h"
#include "quant/model_files.h"

namespace lmforge::quant {

using Observer = std::function<void(const std::string&, const Tensor&)>;

// The rows [n, cols] that reached one linear.
struct Captured {
  int64_t cols = 0;
  std::vector<float> x;
  int64_t n() const { return cols > 0 ? static_cast<int64_t>(x.size()) / cols : 0; }
  // mean |x| per input channel.
  std::vector<double> mean_abs() const;
};

// Captures the inputs of every linear whose name starts with `prefix`.
class InputCollector {
 public:
  explicit InputCollector(std::string prefix) : prefix_(std::move(prefix)) {}
  Observer observer();
  std::map<std::string, Captured> take() { return std::move(data_); }

 private:
  std::string prefix_;
  std::map<std::string, Captured> data_;
};

// 2/n XᵀX (double, [cols, cols]) of the inputs of every linear whose name starts with `prefix`, summed as they come
// rather than kept: f32 products (the upper triangle, mirrored) over chunks of 256 consecutive rows (the rows of all
// calls in order), added in double. Linears called one after another on the very same input tensor (q/k/v, gate/up,
// MLA's q_a/kv_a) share one sum.
class HessianCollector {
 public:
  explicit HessianCollector(std::string prefix) : prefix_(std::move(prefix)) {}
  Observer observer();
  // Every linear seen, with its Hessian.
  std::map<std::string, std::vector<double>> take();

 private:
  struct Sum {
    int64_t cols = 0, n = 0, pending = 0;  // pending: rows in buf not yet multiplied
    std::vector<float> buf, part;
    std::vector<double> H;
    void add(const float* x, int64_t rows);
    void flush();
  };
  std::string prefix_;
  std::map<std::string, Sum> sums_;
  std::map<std::string, std::string> owner_;  // linear -> the linear whose sum it shares (itself if none)
  Tensor last_;                               // the last input summed, kept alive so its address identifies it
  std::string last_owner_;
};

// Calibration sequences' hidden states, taken through a model one decoder layer at a time: each layer runs once per
// pass over it, where a full forward per layer made calibration quadratic in the depth. Holds the hidden states
// (calibration tokens x hidden_size floats) and reads the model's weights as they are at each call, so a layer's
// weights may change between observe() and advance().
class LayerwiseRunner {
 public:
  LayerwiseRunner(const model::CausalLM& m, const std::vector<Tensor>& calib);
  // Runs the current layer on every sequence with `observe` set; the states stay as they are.
  void observe(const Observer& observe) const;
  // Runs the current layer and makes its outputs the states: the next layer's inputs.
  void advance();
  // The hidden states now: after the last layer's advance(), the decoder's output (before the final norm).
  const std::vector<Tensor>& states() const { return h_; }

 private:
  const model::CausalLM& m_;
  std::vector<Tensor> h_;
  int64_t layer_ = 0;  // the decoder layer whose inputs the states are
};

// A plain model dir (f32/bf16/f16, sharded too) brought into a CausalLM::without_weights model a part at a time: the
// safetensors files stay mapped, a tensor is converted to f32 when its part is brought in and freed when it is let
// go, so layer-by-layer calibration holds one decoder layer's f32 weights rather than the model's. The tensors are
// checked against the config (names, shapes, floating dtypes) when the dir is opened, as CausalLM::load does.
class StreamedModel {
 public:
  explicit StreamedModel(const std::string& dir);
  model::CausalLM& model() { return m_; }
  size_t bytes() const { return files_.bytes(); }  // the weights' size as stored
  // Every parameter whose name starts with `prefix` ("model.layers.3.", "lm_head.") gets its value from the files;
  // let_go() drops those values again (memory still referenced elsewhere stays alive there). Buffers are read when
  // the dir is opened and kept.
  void bring_in(const std::string& prefix);
  void let_go(const std::string& prefix);

 private:
  ModelFiles files_;
  model::CausalLM m_;
};

// Round-to-nearest (add_rtn) of the model's tensors whose names start with `prefix`, in state() order.
void rtn_part(QuantizedWeights& out, const model::CausalLM& m, const std::string& prefix);

// s->bring_in / s->let_go where the weights come from a StreamedModel; nothing where s is null (all in memory).
void bring_in(StreamedModel* s, const std::string& prefix);
void let_go(StreamedModel* s, const std::string& prefix);
// The parts after the decoder layers (final norm, lm_head) by round-to-nearest, each brought in and let go.
void rtn_head(QuantizedWeights& out, const model::CausalLM& m, StreamedModel* s);

// The model's tensor `name` (shares the model's memory); an Error when there is none.
Tensor parameter_tensor(const model::CausalLM& m, const std::string& name);
// Overwrites the model's tensor `name` with `value` (same shape, f32).
void set_parameter(model::CausalLM& m, const std::string& name, const Tensor& value);

}  // namespace lmforge::quant
