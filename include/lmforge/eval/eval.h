// Evaluation on the inference engine: multiple-choice log-likelihood accuracy, and
// BLEU / ROUGE-L of greedy generations. Models come in through eval::open_model_dir (model_dir.h).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lmforge/eval/model_dir.h"

namespace lmforge::eval {

// ---- perplexity ----
// Sliding-window perplexity, on the f32 reference model or on this engine: eval::lm::perplexity
// (src/quant/lm_perplexity.h), which `lmforge eval perplexity` runs.

// ---- multiple choice ----
// JSONL, one task item a line: {"context": "...", "choices": ["...", ...], "label": i}. Each choice is scored by
// the log-likelihood of its tokens after the context (lm-evaluation-harness style: context encoded with special
// tokens, the continuation without; whitespace at the end of the context moves to the continuation).
// acc: the highest log-likelihood is the label; acc_norm: the highest log-likelihood per byte of the continuation.
struct ChoiceItem {
  std::string context;
  std::vector<std::string> choices;
  int64_t label = 0;
};
std::vector<ChoiceItem> load_choice_tasks(const std::string& path);
struct ChoiceResult {
  int64_t items = 0;
  double acc = 0, acc_norm = 0;
  std::vector<std::vector<double>> loglik;  // per item, per choice
};
ChoiceResult evaluate_choice(ModelDir& m, const std::vector<ChoiceItem>& items,
                             const std::function<void(int64_t done, int64_t total)>& progress = {});
// Sum of log p(continuation | context) on the engine (both non-empty).
double continuation_loglik(model::Engine& engine, const std::vector<int32_t>& context,
                           const std::vector<int32_t>& continuation);

// ---- generation metrics ----
// sacrebleu's tokenizer "13a" (mteval-v13a): unescapes &quot; &amp; &lt; &gt;, splits off punctuation and symbols,
// periods and commas not between digits, dashes after digits. ASCII whitespace only separates tokens.
std::vector<std::string> tokenize_13a(const std::string& line);
// sacrebleu's default corpus BLEU (0-100): 13a tokens, n-grams 1-4 clipped against one reference per hypothesis,
// summed over the corpus; smoothing "exp" (the n-th zero-match precision becomes 100 / (2^k * total) for the k-th
// such order), brevity penalty exp(1 - ref/hyp) when the corpus hypothesis is shorter.
struct BleuResult {
  double score = 0, bp = 0;
  double precisions[4] = {0, 0, 0, 0};
  int64_t sys_len = 0, ref_len = 0;
};
BleuResult corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::string>& refs);
// rouge-score's ROUGE-L F-measure for one pair: lowercase, non [a-z0-9] runs become spaces, no stemming;
// P = LCS / |hyp|, R = LCS / |ref|, F = 2PR / (P + R) (0 when either is 0).
double rouge_l(const std::string& hyp, const std::string& ref);

// JSONL {"prompt": "...", "reference": "..."} per line; greedy generations (max_tokens, stop strings) scored with
// corpus BLEU and mean ROUGE-L F.
struct GenItem {
  std::string prompt, reference;
};
std::vector<GenItem> load_gen_tasks(const std::string& path);
struct GenEvalResult {
  int64_t items = 0;
  BleuResult bleu;
  double rouge_l = 0;
  std::vector<std::string> outputs;
};
GenEvalResult evaluate_generation(ModelDir& m, const std::vector<GenItem>& items, const model::SamplingParams& p,
                                  const std::function<void(int64_t done, int64_t total)>& progress = {});

}  // namespace lmforge::eval
