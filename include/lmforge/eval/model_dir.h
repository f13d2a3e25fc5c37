// A model directory opened for inference: the engine (the one loader, model::Engine::load), the tokenizer, the
// generation defaults and the chat template. generate, eval and (later) serve all open models through this.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lmforge/model/engine.h"
#include "lmforge/model/sampling.h"
#include "lmforge/tokenizer/tokenizer.h"

namespace lmforge::eval {

struct ModelDir {
  std::string path;
  model::Engine engine;
  std::optional<tokenizer::Tokenizer> tokenizer;                // tokenizer.json, when the directory has one
  nlohmann::json generation_config = nlohmann::json::object();  // generation_config.json, {} when absent
  std::string chat_template, bos_token, eos_token;              // from tokenizer_config.json ("" when absent)

  // Text to ids with the model's tokenizer (errors when there is none); the ids are checked against the model's
  // vocabulary.
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens) const;
  // The id of a token written as in tokenizer.json ("<|im_end|>"); -1 when there is no tokenizer, the text is not
  // one token, or its id is outside the model's vocabulary.
  int32_t token_id(const std::string& text) const;
  // Bytes of one token (for streaming; special tokens give "").
  std::string token_bytes(int32_t id) const;
};

// Errors name the directory and the file at fault. need_tokenizer: a missing tokenizer.json is an error.
ModelDir open_model_dir(const std::string& dir, bool need_tokenizer, const model::EngineOptions& opt = {});
// The engine of a model dir: plain (f32/bf16/f16 safetensors) or quantized by `lmforge quantize`
// (config.json's quantization_config), whose weights keep their formats.
model::Engine load_engine(const std::string& dir, const model::EngineOptions& opt = {});

// Sampling defaults from generation_config.json: do_sample (false: temperature 0), temperature, top_p, top_k,
// min_p, repetition_penalty, max_new_tokens; eos_token_id (int or list) and tokenizer_config.json's eos_token go to
// eos_ids (stops unless ignore_eos).
model::SamplingParams generation_defaults(const ModelDir& m);

}  // namespace lmforge::eval
