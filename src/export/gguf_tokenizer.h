// The tokenizer as GGUF metadata (tokenizer.ggml.*), both ways. Private to src/export.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "lmforge/io/gguf.h"
#include "lmforge/model/config.h"

namespace lmforge::exporter {

// llama.cpp's pre-tokenizer name for a tokenizer.json "pre_tokenizer" value, or "" when it matches none we know.
std::string gguf_pre_name(const nlohmann::json& pre_tokenizer);

// Reads `model_dir`/tokenizer.json (and tokenizer_config.json when present) and sets tokenizer.ggml.* and
// tokenizer.chat_template. `pre` overrides the matched pre-tokenizer name. Returns the name written.
std::string add_tokenizer_metadata(io::GgufWriter& w, const std::string& model_dir, const model::ModelConfig& cfg,
                                   const std::string& pre);

// Writes tokenizer.json and tokenizer_config.json into `out_dir` from the file's tokenizer.ggml.* keys. Returns
// false (writing nothing) when the file has no tokenizer; throws for a tokenizer it cannot rebuild.
bool write_tokenizer_from_gguf(const io::GgufFile& f, const std::string& out_dir, int64_t context_length);

}  // namespace lmforge::exporter
