// A plain model dir's weights, mapped and checked against its config before anything is read.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "lmforge/io/safetensors.h"
#include "lmforge/model/config.h"

namespace lmforge::quant {

// A safetensors dtype name of a floating-point type.
bool is_floating_st(const std::string& st_dtype);

// config.json and model.safetensors (sharded too) of an f32/bf16/f16 model dir, checked as CausalLM::load checks
// them: every tensor the config expects present with its shape and a floating-point dtype, none it does not know,
// not a quantized dir. quantize_rtn_dir and StreamedModel read from it a tensor at a time.
class ModelFiles {
 public:
  explicit ModelFiles(const std::string& dir);
  const model::ModelConfig& config() const { return config_; }
  size_t bytes() const { return bytes_; }  // the expected tensors' size as stored
  // The tensor as stored (a view of the mapping where its data is aligned).
  Tensor get(const std::string& name) const;
  // An f32 copy with memory of its own; the tensor's file pages are handed back.
  Tensor read_f32(const std::string& name) const;
  // Hands the tensor's file pages back (SafetensorsFile::drop_pages).
  void drop_pages(const std::string& name) const;

 private:
  model::ModelConfig config_;
  std::string source_;
  std::vector<io::SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> file
  size_t bytes_ = 0;
  const io::SafetensorsFile& file(const std::string& name) const;
};

}  // namespace lmforge::quant
