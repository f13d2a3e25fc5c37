// Importance matrices, llama.cpp's (`llama-imatrix` writes them, `llama-quantize --imatrix` reads them): for each
// linear weight, the sum over calibration tokens of the square of each input column, and how many tokens were summed
// (per expert for stacked MoE tensors). q4_0 and the k-quants weight each column's rounding error by sums / count
// (WeightMatrix::quantize's `importance`). docs/QUANTIZATION.md, "Importance matrices".
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lmforge/core/tensor.h"
#include "lmforge/model/config.h"

namespace lmforge::quant {

struct ImatrixEntry {
  int64_t cols = 0;           // values per matrix: the input size
  std::vector<float> sums;    // [matrices * cols]: sum of x^2 per input column
  std::vector<float> counts;  // [matrices]: tokens summed (0: the matrix never saw an input, e.g. an unused expert)
};

struct Imatrix {
  std::map<std::string, ImatrixEntry>
      entries;                        // by GGUF tensor name: "blk.0.attn_q.weight", "blk.3.ffn_up_exps.weight"
  std::vector<std::string> datasets;  // imatrix.datasets
  int64_t chunk_count = 0;            // imatrix.chunk_count: calibration chunks (sequences)
  int64_t chunk_size = 0;             // imatrix.chunk_size: tokens a chunk
  // Read from llama.cpp's legacy .dat format, which keeps per-entry means times a call count (values() divides).
  bool legacy = false;

  // What llama-quantize hands its quantizer for `gguf_name`: sums / count per matrix (1 where a matrix has no count;
  // a legacy file's values divided by its call count), [matrices * cols]; empty when the entry is absent.
  std::vector<float> values(const std::string& gguf_name) const;
};

// A GGUF imatrix (general.type "imatrix": NAME.in_sum2 [matrices, cols] and NAME.counts [matrices, 1] f32 tensors,
// imatrix.datasets / chunk_count / chunk_size) or a legacy .dat file, told apart by the GGUF magic. Bad files are an
// lmforge::Error naming the file and the entry or field at fault.
Imatrix read_imatrix(const std::string& path);
// The same from bytes in memory; `label` stands in for the path in messages (fuzzing, tests).
Imatrix parse_imatrix(std::string_view bytes, const std::string& label = "<memory>");
// Atomically; legacy: llama.cpp's .dat layout (what `llama-imatrix --output-format dat` writes), else GGUF.
void write_imatrix(const Imatrix& m, const std::string& path, bool legacy = false);

// The GGUF tensor name of a Hugging Face linear weight of a model with config c
// ("model.layers.0.self_attn.q_proj.weight"
// -> "blk.0.attn_q.weight", "lm_head.weight" -> "output.weight"); routed experts map to their stacked tensor and
// *expert receives the expert's index (-1 otherwise). Empty for names with no GGUF counterpart. kv_b_proj maps to
// attn_kv_b (llama.cpp splits it into attn_k_b / attn_v_b, whose inputs differ, when it converts).
std::string gguf_weight_name(const std::string& hf_name, const model::ModelConfig& c, int64_t* expert = nullptr);

// Importance vectors by Hugging Face name (cols values each; an expert's slice of its stacked entry) for every linear
// of c that the imatrix covers. An entry whose size does not fit its weight is an Error naming `source` and the
// tensor (llama-quantize refuses it too).
using Importance = std::map<std::string, std::vector<float>>;
Importance importance_for(const Imatrix& m, const model::ModelConfig& c, const std::string& source);

struct ImatrixOptions {
  bool process_output = false;  // also the LM head (llama-imatrix's --process-output; off by default there too)
  std::string dataset;          // recorded in imatrix.datasets
};

// Runs the calibration sequences (i32 [1, T] each) through the f32 / bf16 / f16 model dir a decoder layer at a time
// (one layer's weights in memory) and sums the squared inputs of every linear: llama-imatrix's statistics, computed
// with the unquantized model. Each sequence is one chunk.
Imatrix compute_imatrix(const std::string& model_dir, const std::vector<Tensor>& calib, const ImatrixOptions& opt = {},
                        const std::function<void(const std::string&)>& log = {});

}  // namespace lmforge::quant
