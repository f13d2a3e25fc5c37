// Model dir weights checked against the config (model_files.h).
#include "quant/model_files.h"

#include <filesystem>
#include <set>

#include "lmforge/core/error.h"
#include "lmforge/model/model.h"

namespace lmforge::quant {

namespace fs = std::filesystem;

bool is_floating_st(const std::string& st_dtype) {
  return st_dtype == "F32" || st_dtype == "F16" || st_dtype == "BF16" || st_dtype == "F64";
}

ModelFiles::ModelFiles(const std::string& dir) {
  LMF_CHECK(fs::is_directory(dir), dir, ": not a model directory");
  const fs::path cfg = fs::path(dir) / "config.json";
  LMF_CHECK(fs::exists(cfg), dir, ": no config.json in the model directory");
  config_ = model::load_model_config(cfg.string());
  model::refuse_quantized_dir(config_, cfg.string());
  for (const std::string& p : io::model_weight_files(dir, source_)) {
    files_.push_back(io::SafetensorsFile::open(p));
    for (const std::string& name : files_.back().names()) where_.emplace(name, files_.size() - 1);
  }
  std::set<std::string> expected;
  for (const auto& [name, shape] : model::CausalLM::tensor_shapes(config_)) {  // as CausalLM::load_weights
    expected.insert(name);
    auto it = where_.find(name);
    LMF_CHECK(it != where_.end(), source_, ": tensor '", name, "' is missing (the config expects it)");
    const io::SafetensorsEntry& e = files_[it->second].entry(name);
    LMF_CHECK(e.shape == shape, source_, ": tensor '", name, "' has shape ", shape_str(e.shape),
              ", the config expects ", shape_str(shape));
    LMF_CHECK(is_floating_st(e.dtype), source_, ": tensor '", name, "' has dtype ", e.dtype,
              ", expected a floating-point type");
    bytes_ += e.end - e.begin;
  }
  for (const auto& [name, f] : where_)
    LMF_CHECK(expected.count(name) || model::CausalLM::skippable_extra_tensor(name, config_), source_,
              ": unexpected tensor '", name, "' (not part of a ", config_.model_type, " model with this config)");
}

const io::SafetensorsFile& ModelFiles::file(const std::string& name) const {
  auto it = where_.find(name);
  LMF_CHECK(it != where_.end(), source_, ": no tensor '", name, "'");
  return files_[it->second];
}

Tensor ModelFiles::get(const std::string& name) const {
  return file(name).get(name);
}

Tensor ModelFiles::read_f32(const std::string& name) const {
  const Tensor t = get(name);
  Tensor d = t.to(DType::F32).contiguous();
  if (d.storage() == t.storage()) d = d.clone();  // own the memory, not the file mapping
  drop_pages(name);
  return d;
}

void ModelFiles::drop_pages(const std::string& name) const {
  file(name).drop_pages(name);
}

}  // namespace lmforge::quant
