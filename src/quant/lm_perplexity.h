// The reference path of evaluation, on an f32 CausalLM (quantized dirs dequantized by quant::load_causal_lm_any):
// `lmforge eval perplexity` and calibration use it; eval.h has the engine's versions. Perplexity of a causal LM over a
// token stream with sliding windows (the method of Hugging Face's "Perplexity of fixed-length models"): windows of
// `ctx` tokens start every `stride` tokens; in each window only the tokens that the previous window did not score
// count, so every token is scored at most once, each with up to ctx - 1 tokens of context (at least ctx - stride once
// the first window is past). A window's first token has no context in it and is not scored: with overlapping windows
// that only drops token 0; with stride == ctx it drops the first token of every window, as Hugging Face's loop does.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lmforge/model/engine.h"
#include "lmforge/model/model.h"

namespace lmforge::eval::lm {

struct PerplexityOptions {
  int64_t ctx = 512;
  int64_t stride = 0;  // 0: ctx (disjoint windows)
};

struct PerplexityResult {
  int64_t tokens = 0;   // tokens scored
  int64_t windows = 0;  // forward passes
  double nll = 0;       // mean negative log-likelihood, nats per token
  double ppl = 0;       // exp(nll)
};

// progress(done_tokens, total_tokens) after each window. ids must hold at least 2 tokens, each below the vocab; ctx
// at most the model's max_position_embeddings.
PerplexityResult perplexity(const model::CausalLM& m, const std::vector<int32_t>& ids, const PerplexityOptions& opt,
                            const std::function<void(int64_t, int64_t)>& progress = {});
// The same windows on the inference engine (each a fresh sequence, prefilled with every position's logits): the
// weights stay in their stored formats (a quantized or bf16 dir needs its own size in memory, not an f32 model's),
// and quantized products run as the engine runs them.
PerplexityResult perplexity(model::Engine& e, const std::vector<int32_t>& ids, const PerplexityOptions& opt,
                            const std::function<void(int64_t, int64_t)>& progress = {});
// The method itself: window_logits(window) returns f32 logits [window size, V].
PerplexityResult perplexity(const std::function<Tensor(const std::vector<int32_t>&)>& window_logits, int64_t V,
                            const std::vector<int32_t>& ids, const PerplexityOptions& opt,
                            const std::function<void(int64_t, int64_t)>& progress = {});

// Evaluation tokens from `path`: a token-shard directory (manifest.json; the val split, or train when there is
// none or split == "train"), a .jsonl file (field `text_field` of each line) or a plain text file. Text is
// tokenized with model_dir/tokenizer.json (documents joined by a blank line); without one, bytes are the ids
// (the byte-level models of `data shard --bytes`), allowed only when vocab >= 257. `how` says which was used.
// At most max_tokens (0: all). Errors name the file.
std::vector<int32_t> load_eval_tokens(const std::string& path, const std::string& model_dir, int64_t vocab,
                                      int64_t max_tokens, const std::string& split, const std::string& text_field,
                                      std::string* how);

}  // namespace lmforge::eval::lm
