// Evaluation on the inference engine: multiple-choice log-likelihood accuracy, and
// BLEU / ROUGE-L of greedy generations. Models come in through eval::open_model_dir (model_dir.h).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "lmforge/eval/model_dir.h"

namespace lmforge::eval {

// ---- perplexity ----
// Sliding-window perplexity, on the f32 reference model or on this engine: eval::lm::perplexity
// (src/quant/lm_perplexity.h), which `lmforge eval perplexity` runs.

// ---- multiple choice ----
// JSONL, one task item a line: {"context": "...", "choices": ["...", ...], "label": i}, or an lm-evaluation-harness
// document {"query": "...", "choices": [...], "gold": i}, whose choices follow the query after its target delimiter
// " " (the label may also be a string of digits, as Hugging Face's hellaswag has it). Each choice is scored by the
// log-likelihood of its tokens after the context (lm-evaluation-harness style: context encoded with special tokens,
// the continuation without; whitespace at the end of the context moves to the continuation).
// acc: the highest log-likelihood is the label; acc_norm: the highest log-likelihood per character (Unicode code
// point) of the choice, as the harness divides by len(choice).
struct ChoiceItem {
  std::string context;
  std::vector<std::string> choices;
  int64_t label = 0;
  std::string delimiter;  // put between the context and each choice ("" for "context" items, " " for "query" ones)
};
std::vector<ChoiceItem> load_choice_tasks(const std::string& path);
struct ChoiceResult {
  int64_t items = 0;
  double acc = 0, acc_norm = 0;
  int64_t truncated = 0;                    // items whose context lost tokens at its front to fit the model
  std::vector<std::vector<double>> loglik;  // per item, per choice
};
ChoiceResult evaluate_choice(ModelDir& m, const std::vector<ChoiceItem>& items,
                             const std::function<void(int64_t done, int64_t total)>& progress = {});
// Items as lm-evaluation-harness scores them with --apply_chat_template: each context becomes the user message of a
// conversation (after a system message when `system` is not empty) rendered by the model's chat template with the
// generation prompt, and the choices follow it with no delimiter. Returns render_chat's note (a fallback format).
std::string apply_chat_template(const ModelDir& m, std::vector<ChoiceItem>& items, const std::string& system);
// Sum of log p(continuation | context) on the engine (both non-empty).
double continuation_loglik(model::Engine& engine, const std::vector<int32_t>& context,
                           const std::vector<int32_t>& continuation);
// The same for several continuations of one context: the context is prefilled once and its cache forked for each
// continuation. Where the context and the longest continuation exceed the model's context, the context keeps only
// its last tokens (lm-evaluation-harness truncates on the left too) and *truncated is set; a continuation that
// leaves no room for one context token is an error.
std::vector<double> continuation_logliks(model::Engine& engine, const std::vector<int32_t>& context,
                                         const std::vector<std::vector<int32_t>>& continuations,
                                         bool* truncated = nullptr);
// The context's ids as lm-evaluation-harness scores them: `encoded` is the context encoded with the tokenizer's
// special tokens (its default, as the harness's now); a context that starts with the BOS text gets no second BOS, and
// an empty context is the prefix token alone (`prefix`: BOS, else EOS; -1: none). Errors when nothing is left.
std::vector<int32_t> choice_context(std::vector<int32_t> encoded, bool empty_context, int32_t bos, int32_t prefix);
// The continuation ids of each choice, split as lm-evaluation-harness splits them: context + continuation encoded
// whole and the context alone (both without special tokens), the continuation being the tokens past the context's
// count. Encoded on its own, a continuation can differ at its start: a SentencePiece-style tokenizer puts its "▁"
// prefix before " blue" too (Llama-2: [▁, ▁blue] against the [▁blue] that follows "The sky is"). Where a token spans
// the boundary so that nothing is left, the continuation is encoded on its own.
std::vector<std::vector<int32_t>> choice_continuations(
    const std::function<std::vector<int32_t>(const std::string&)>& encode_plain, const std::string& context,
    const std::vector<std::string>& continuations);
// The picks of one item from its choices' log-likelihoods: {acc's (the highest), acc_norm's (the highest per
// character of the choice)}; the first on ties.
std::pair<int64_t, int64_t> choice_picks(const std::vector<double>& loglik, const std::vector<std::string>& choices);
// Unicode code points in UTF-8 text (bytes that do not continue a sequence): Python's len() of the decoded string.
int64_t utf8_length(const std::string& s);

// ---- generation metrics ----
// sacrebleu's tokenizer "13a" (mteval-v13a): unescapes &quot; &amp; &lt; &gt;, splits off punctuation and symbols,
// periods and commas not between digits, dashes after digits. ASCII whitespace only separates tokens.
std::vector<std::string> tokenize_13a(const std::string& line);
// sacrebleu's default corpus BLEU (0-100): 13a tokens, n-grams 1-4 clipped against the references of each
// hypothesis (an n-gram's count in the reference that has most of it), summed over the corpus; no match at all is
// BLEU 0; otherwise smoothing "exp" (the n-th zero-match precision becomes 100 / (2^k * total) for the k-th such
// order); the reference length of a hypothesis is that of its reference closest in length (the shorter on a tie),
// and the brevity penalty exp(1 - ref/hyp) applies when the corpus hypothesis is shorter.
struct BleuResult {
  double score = 0, bp = 0;
  double precisions[4] = {0, 0, 0, 0};
  int64_t sys_len = 0, ref_len = 0;
};
BleuResult corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::string>& refs);
// Several references per hypothesis (refs[i] for hyps[i], each non-empty).
BleuResult corpus_bleu_multi(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs);
// rouge-score's ROUGE-L F-measure for one pair: lowercase, non [a-z0-9] runs become spaces, no stemming;
// P = LCS / |hyp|, R = LCS / |ref|, F = 2PR / (P + R) (0 when either is 0). With several references, the best F
// (rouge-score's score_multi).
double rouge_l(const std::string& hyp, const std::string& ref);
double rouge_l_multi(const std::string& hyp, const std::vector<std::string>& refs);

// JSONL {"prompt": "...", "reference": "..."} per line (or "references": ["...", ...]); greedy generations
// (max_tokens, stop strings) scored with corpus BLEU and mean ROUGE-L F.
struct GenItem {
  std::string prompt;
  std::vector<std::string> references;
};
std::vector<GenItem> load_gen_tasks(const std::string& path);
// How prompts reach the model: as they are (with the tokenizer's special tokens), or, with chat, as the one user
// message of a conversation (after a system message when `system` is not empty) rendered by the model's chat
// template with the generation prompt (lm-evaluation-harness's --apply_chat_template / --system_instruction).
struct GenPromptOptions {
  bool chat = false;
  std::string system;
};
struct GenEvalResult {
  int64_t items = 0;
  BleuResult bleu;
  double rouge_l = 0;
  std::vector<std::string> outputs;
  std::string chat_note;  // render_chat's note when the chat format was a fallback (chat only)
};
GenEvalResult evaluate_generation(ModelDir& m, const std::vector<GenItem>& items, const model::SamplingParams& p,
                                  const std::function<void(int64_t done, int64_t total)>& progress = {},
                                  const GenPromptOptions& prompts = {});

}  // namespace lmforge::eval
