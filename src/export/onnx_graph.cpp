#include "export/onnx_graph.h"

#include <cstring>

#include "lmforge/core/error.h"

namespace lmforge::exporter {

std::string OnnxGraphBuilder::fresh(const std::string& op) {
  return (scope_.empty() ? std::string() : "/" + scope_) + "/" + op + "_" + std::to_string(counter_++);
}

std::vector<std::string> OnnxGraphBuilder::node(const std::string& op, const std::vector<std::string>& inputs,
                                                size_t n_outputs, const std::vector<onnx::AttributeProto>& attrs,
                                                const std::vector<std::string>& outputs) {
  onnx::NodeProto* n = g_->add_node();
  const std::string name = fresh(op);
  n->set_name(name);
  n->set_op_type(op);
  for (const std::string& in : inputs) n->add_input(in);
  std::vector<std::string> outs;
  for (size_t i = 0; i < n_outputs; ++i) {
    outs.push_back(i < outputs.size() ? outputs[i] : name + ":" + std::to_string(i));
    n->add_output(outs.back());
  }
  for (const onnx::AttributeProto& a : attrs) *n->add_attribute() = a;
  return outs;
}

onnx::TensorProto* OnnxGraphBuilder::initializer(const std::string& name, int32_t type,
                                                 const std::vector<int64_t>& dims) {
  onnx::TensorProto* t = g_->add_initializer();
  t->set_name(name);
  t->set_data_type(type);
  for (int64_t d : dims) t->add_dims(d);
  return t;
}

std::string OnnxGraphBuilder::weight(const std::string& name, const Tensor& t) {
  Tensor f = t.to(DType::F32).contiguous();
  onnx::TensorProto* p = initializer(name, onnx::TensorProto::FLOAT, f.shape());
  weights_.push_back({p, f});
  weight_bytes_ += static_cast<int64_t>(f.nbytes());
  return name;
}

std::string OnnxGraphBuilder::ints(const std::vector<int64_t>& v) {
  const std::string name = fresh("const");
  onnx::TensorProto* p = initializer(name, onnx::TensorProto::INT64, {static_cast<int64_t>(v.size())});
  for (int64_t x : v) p->add_int64_data(x);
  return name;
}

std::string OnnxGraphBuilder::int_scalar(int64_t v) {
  const std::string name = fresh("const");
  initializer(name, onnx::TensorProto::INT64, {})->add_int64_data(v);
  return name;
}

std::string OnnxGraphBuilder::float_scalar(float v) {
  const std::string name = fresh("const");
  initializer(name, onnx::TensorProto::FLOAT, {})->add_float_data(v);
  return name;
}

std::string OnnxGraphBuilder::floats(const std::vector<float>& v) {
  const std::string name = fresh("const");
  onnx::TensorProto* p = initializer(name, onnx::TensorProto::FLOAT, {static_cast<int64_t>(v.size())});
  for (float x : v) p->add_float_data(x);
  return name;
}

onnx::AttributeProto OnnxGraphBuilder::attr(const std::string& name, int64_t v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(v);
  return a;
}

onnx::AttributeProto OnnxGraphBuilder::attr(const std::string& name, float v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::FLOAT);
  a.set_f(v);
  return a;
}

onnx::AttributeProto OnnxGraphBuilder::attr(const std::string& name, const std::vector<int64_t>& v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a.add_ints(x);
  return a;
}

onnx::AttributeProto OnnxGraphBuilder::attr(const std::string& name, const std::string& v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::STRING);
  a.set_s(v);
  return a;
}

std::string OnnxGraphBuilder::linear(const std::string& x, const std::string& w, const std::string& bias) {
  // Weights keep the Hugging Face [out, in] layout (and names); ONNX Runtime folds the Transpose at load time.
  std::string y = op("MatMul", {x, transpose(w, {1, 0})});
  return bias.empty() ? y : add(y, bias);
}

std::string OnnxGraphBuilder::rmsnorm(const std::string& x, const std::string& w, double eps) {
  std::string ms =
      op("ReduceMean", {mul(x, x)}, {attr("axes", std::vector<int64_t>{-1}), attr("keepdims", int64_t{1})});
  std::string inv = op("Reciprocal", {op("Sqrt", {add(ms, float_scalar(static_cast<float>(eps)))})});
  return mul(mul(x, inv), w);
}

std::string OnnxGraphBuilder::slice(const std::string& x, int64_t axis, int64_t start, int64_t end) {
  return op("Slice", {x, ints({start}), ints({end}), ints({axis})});
}

std::string OnnxGraphBuilder::reshape(const std::string& x, const std::vector<int64_t>& dims) {
  return op("Reshape", {x, ints(dims)});
}

std::string OnnxGraphBuilder::transpose(const std::string& x, const std::vector<int64_t>& perm) {
  return op("Transpose", {x}, {attr("perm", perm)});
}

std::string OnnxGraphBuilder::unsqueeze(const std::string& x, const std::vector<int64_t>& axes) {
  return op("Unsqueeze", {x, ints(axes)});
}

}  // namespace lmforge::exporter
