// GGUF export and import of lmforge model directories, for llama.cpp interop.
//
// Export: config.json + model.safetensors + tokenizer.json (+ tokenizer_config.json) become one GGUF v3 file with
// architecture "llama" (model_type llama), "qwen2" (model_type qwen2: no q/k row permutation) or "deepseek2"
// (model_type deepseek_v3), llama.cpp's tensor names and
// layouts (Q/K rows permuted for llama's RoPE, experts stacked, kv_b_proj split into attn_k_b / attn_v_b), the
// hyperparameters llama.cpp reads and the tokenizer as tokenizer.ggml.* metadata. Import is the inverse: a model
// directory (f32, bf16 or f16) from such a file or from one llama.cpp's own tools wrote (its quantized tensors,
// k-quants included, dequantized). The mapping is documented in docs/FORMATS.md.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lmforge/core/dtype.h"

namespace lmforge::exporter {

struct GgufExportOptions {
  // Tensor type of the weight matrices: "f32", "f16", "q8_0", "q4_0", "q4_K", "q5_K", "q6_K" (with the k-quants the
  // output layer is q6_K, and inputs 256 does not divide take q8_0), "q4_K_S" / "q4_K_M" / "q5_K_S" / "q5_K_M"
  // (llama-quantize's mixes) or "keep" (each tensor as a quantized dir stores it; its g128 / int8 formats as q8_0).
  // Norms, biases, the MoE router and matrices whose rows are not a multiple of 32 values stay f32 (as llama.cpp's
  // converter keeps them).
  std::string type = "f32";
  // tokenizer.ggml.pre; empty: chosen by matching tokenizer.json's pre-tokenizer (an unknown one is an error).
  std::string pre;
  std::string name;  // general.name; empty: the model directory's name
  // llama.cpp importance matrix (GGUF or .dat, quant/imatrix.h) for the tensors converted to q4_0 or a k-quant: each
  // rounded as llama-quantize --imatrix rounds it (entries by GGUF tensor name; a tensor without one as usual).
  std::string imatrix;
  // llama-quantize's type overrides (its flags of the same names), for the quantized types: output.weight's and
  // token_embd.weight's type ("" = the mix's choice); `tensor_types`: (regex, type) pairs tried in order on each weight
  // matrix's GGUF name (std::regex_search; the first match sets the type and skips the mix's rules); `pure`: the
  // base type everywhere (no mix, output not raised to q6_K); `leave_output`: output.weight as the source stores it
  // (f32 / f16 / bf16). Types: f32, f16, q8_0, q4_0, q4_K, q5_K, q6_K.
  std::string output_type, token_embd_type;
  std::vector<std::pair<std::string, std::string>> tensor_types;
  bool pure = false, leave_output = false;
  // Called as the file is written, after each tensor (written, total): tensors are converted when their bytes are
  // due, one at a time, so the export holds the source (mapped) and one converted tensor, not the converted model.
  std::function<void(int64_t, int64_t)> progress;
};

struct GgufExportSummary {
  std::string architecture;  // "llama" | "qwen2" | "deepseek2"
  std::string pre;           // tokenizer.ggml.pre written
  int64_t tensors = 0;
  int64_t quantized = 0;  // tensors stored in the requested type (the rest f32)
  // From a quantized model dir: q8_0 / q4_0 matrices whose blocks went into the file as they are (among `quantized`).
  int64_t blocks_copied = 0;
  int64_t imatrix_used = 0;  // tensors rounded with an importance matrix entry
  uint64_t bytes = 0;        // file size
};

// Throws lmforge::Error naming the file and field for anything it cannot export faithfully.
GgufExportSummary export_gguf(const std::string& model_dir, const std::string& out_path,
                              const GgufExportOptions& opt = {});

struct GgufImportSummary {
  std::string architecture;
  std::string model_type;  // "llama" | "qwen2" | "deepseek_v3"
  int64_t tensors = 0;     // tensors written to model.safetensors
  bool tokenizer = false;  // tokenizer.json written
  // How many of the file's tensors had each ggml type ("q4_K" -> 12, "f32" -> 5, ...).
  std::map<std::string, int64_t> source_types;
  // dtype q8_0 / q4_0 or keep: projections whose blocks were copied from the file as they are, and ones quantized by
  // lmforge
  // (round-to-nearest from their dequantized values: another type in the file, or a recomputed tensor).
  int64_t copied = 0;
  int64_t requantized = 0;
};

// Writes config.json, model.safetensors, tokenizer.json and tokenizer_config.json into `out_dir`. Every tensor of
// the file is dequantized as ggml does (io::ggml_dequantize: f32/f16/bf16, q4_0/q4_1/q5_0/q5_1/q8_0, the k-quants,
// iq4_nl/iq4_xs) and written in `dtype` (f32, bf16 or f16), one tensor at a time. With dtype Q8_0 or Q4_0 the result
// is a quantized model dir (docs/QUANTIZATION.md) instead: projections already in that type keep the file's blocks
// byte for byte, the others are quantized round-to-nearest; embeddings and norms are f32. keep_types (dtype
// ignored): a quantized model dir with each projection in the file's own type where the engine runs it (f32, f16,
// bf16, q8_0, q4_0, q4_K, q5_K, q6_K: a Q4_K_M file stays Q4_K_M), the others requantized to q6_K (q8_0 where 256 does
// not divide the input), per tensor in quantization_config.tensor_formats.
GgufImportSummary import_gguf(const std::string& gguf_path, const std::string& out_dir, DType dtype = DType::F32,
                              bool keep_types = false);

}  // namespace lmforge::exporter
