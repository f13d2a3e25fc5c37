// ONNX export of a decoder with past-key-values, laid out as Hugging Face optimum exports decoders
// ("decoder_with_past"), so onnxruntime-genai / optimum-style generation loops can drive it:
//
//   inputs   input_ids [batch, seq] int64, attention_mask [batch, past+seq] int64, position_ids [batch, seq] int64,
//            past_key_values.{i}.key / .value [batch, kv_heads, past, head_dim] float32 (past may be 0)
//   outputs  logits [batch, seq, vocab] float32, present.{i}.key / .value [batch, kv_heads, past+seq, head_dim]
//
// llama (GQA, RoPE half-split, sliding-window layers, attention_bias, tied embeddings, YaRN) and deepseek_v3
// (MLA with full per-head K/V in the cache, DeepSeekMoE routing, YaRN). Opset 17, IR version 8; weights are
// float32 initializers under their Hugging Face names, inline, or in FILE.onnx.data when they pass 2 GB (protobuf's
// limit) or when asked. The model is checked with onnx::checker before anything is written. See docs/FORMATS.md.
#pragma once
#include <cstdint>
#include <string>

#include "lmforge/model/model.h"

namespace lmforge::exporter {

struct OnnxExportOptions {
  enum class ExternalData { Auto, Always, Never };
  ExternalData external_data = ExternalData::Auto;
  // DeepSeekMoE experts: Sparse gathers each expert's tokens (NonZero, Gather, ScatterND add), Dense runs every
  // expert on every token scaled by its routing weight (zero for unchosen experts). Same result; Dense has no
  // data-dependent shapes, Sparse does n_routed_experts / num_experts_per_tok times less expert work.
  enum class MoeDispatch { Sparse, Dense };
  MoeDispatch moe_dispatch = MoeDispatch::Sparse;
};

struct OnnxExportResult {
  int64_t nodes = 0, initializers = 0;
  int64_t weight_bytes = 0;
  int64_t onnx_bytes = 0;     // size of the .onnx file
  std::string external_file;  // empty when the weights are inline
  int64_t opset = 0, ir_version = 0;
};

// Builds the graph for `m`, checks it (onnx::checker) and writes `out` (and `out`.data with external data)
// atomically. Throws lmforge::Error on an unsupported config (naming the field) or a failed write/check.
OnnxExportResult export_onnx(const model::CausalLM& m, const std::string& out, const OnnxExportOptions& opt = {});

// onnx::checker::check_model on a file (external data resolved next to it); throws lmforge::Error naming it.
void check_onnx_file(const std::string& path);

}  // namespace lmforge::exporter
