// A small builder over ONNX's protobuf GraphProto: unique value names, constants, weights as initializers and
// the handful of composite pieces (linear, RMSNorm, slices) the decoder graph is made of. Private to src/export.
//
// Weights are not copied into the protobuf while the graph is built: each initializer remembers its source
// tensor, and the exporter decides at the end whether the bytes go inline (raw_data) or to an external data file.
#pragma once
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmforge::exporter {

class OnnxGraphBuilder {
 public:
  explicit OnnxGraphBuilder(onnx::GraphProto* graph) : g_(graph) {}

  // Node names are "<scope>/<op>_<n>"; value names the same with ":0", ":1" for each output.
  void set_scope(std::string scope) { scope_ = std::move(scope); }

  // One node; returns its output names. `outputs` names them explicitly (graph outputs), else they are generated.
  std::vector<std::string> node(const std::string& op, const std::vector<std::string>& inputs, size_t n_outputs = 1,
                                const std::vector<onnx::AttributeProto>& attrs = {},
                                const std::vector<std::string>& outputs = {});
  std::string op(const std::string& op, const std::vector<std::string>& inputs,
                 const std::vector<onnx::AttributeProto>& attrs = {}, const std::string& output = "") {
    return node(op, inputs, 1, attrs, output.empty() ? std::vector<std::string>{} : std::vector<std::string>{output})
        .front();
  }

  // A float32 weight under its Hugging Face name (shape as the tensor's).
  std::string weight(const std::string& name, const Tensor& t);
  // Constants (initializers): int64 vector, int64 scalar, float32 scalar, float32 vector.
  std::string ints(const std::vector<int64_t>& v);
  std::string int_scalar(int64_t v);
  std::string float_scalar(float v);
  std::string floats(const std::vector<float>& v);

  static onnx::AttributeProto attr(const std::string& name, int64_t v);
  static onnx::AttributeProto attr(const std::string& name, float v);
  static onnx::AttributeProto attr(const std::string& name, const std::vector<int64_t>& v);
  static onnx::AttributeProto attr(const std::string& name, const std::string& v);

  // Composite pieces.
  std::string linear(const std::string& x, const std::string& w, const std::string& bias = "");  // x · wᵀ (+ b)
  std::string rmsnorm(const std::string& x, const std::string& w, double eps);
  std::string slice(const std::string& x, int64_t axis, int64_t start, int64_t end);
  std::string reshape(const std::string& x, const std::vector<int64_t>& dims);
  std::string transpose(const std::string& x, const std::vector<int64_t>& perm);
  std::string unsqueeze(const std::string& x, const std::vector<int64_t>& axes);
  std::string add(const std::string& a, const std::string& b) { return op("Add", {a, b}); }
  std::string sub(const std::string& a, const std::string& b) { return op("Sub", {a, b}); }
  std::string mul(const std::string& a, const std::string& b) { return op("Mul", {a, b}); }

  struct PendingWeight {
    onnx::TensorProto* proto;
    Tensor data;  // f32, contiguous
  };
  const std::vector<PendingWeight>& weights() const { return weights_; }
  int64_t weight_bytes() const { return weight_bytes_; }

 private:
  std::string fresh(const std::string& op);
  onnx::TensorProto* initializer(const std::string& name, int32_t type, const std::vector<int64_t>& dims);

  onnx::GraphProto* g_;
  std::string scope_;
  int64_t counter_ = 0;
  std::vector<PendingWeight> weights_;
  int64_t weight_bytes_ = 0;
};

}  // namespace lmforge::exporter
