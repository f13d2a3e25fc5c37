// The decoder graph (llama / deepseek_v3) in ONNX ops: shared pieces for onnx_decoder.cpp and onnx_moe.cpp.
#pragma once
#include <map>
#include <string>

#include "export/onnx_graph.h"
#include "lmforge/export/onnx.h"
#include "lmforge/model/model.h"

namespace lmforge::exporter {

struct DecoderGraph {
  const model::ModelConfig& c;
  OnnxGraphBuilder& b;
  std::map<std::string, Tensor> weights;  // HF name -> tensor (the model's state)
  OnnxExportOptions::MoeDispatch moe_dispatch = OnnxExportOptions::MoeDispatch::Sparse;

  // Adds the named weight as an initializer (once) and returns its value name.
  std::string w(const std::string& name);
};

// SwiGLU MLP with HF names prefix + {gate,up,down}_proj.weight on x [..., D].
std::string swiglu_mlp(DecoderGraph& d, const std::string& prefix, const std::string& x);
// DeepSeekMoE FFN of layer `layer` on h [B, S, D] (routing as lmforge::model::route at inference).
std::string moe_ffn(DecoderGraph& d, int64_t layer, const std::string& h);

// Fills graph inputs, outputs and nodes for `m`. Throws lmforge::Error naming the config field it cannot export.
void build_decoder_graph(const model::CausalLM& m, const OnnxExportOptions& opt, onnx::GraphProto* g,
                         OnnxGraphBuilder& b);

}  // namespace lmforge::exporter
