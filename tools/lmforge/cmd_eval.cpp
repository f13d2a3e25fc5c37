// lmforge eval perplexity | choice | generate: benchmarks on the inference engine.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "lmforge/commands.h"
#include "lmforge/eval/eval.h"

namespace lmforge::cli {

namespace {

struct EvalArgs {
  std::string model, data, tasks, field = "text";
  int64_t ctx = 0, stride = 0, max_tokens = 64;
  std::vector<std::string> stop;
  int threads = 0;
};

// Progress on stderr: a rewritten line on a terminal, nothing otherwise (the result line says it all).
std::function<void(int64_t, int64_t)> progress(const char* what) {
  if (!isatty(fileno(stderr))) return {};
  return [what](int64_t done, int64_t total) {
    std::fprintf(stderr, "\r%s %lld/%lld", what, static_cast<long long>(done), static_cast<long long>(total));
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
}

void print(const nlohmann::json& j, bool json, const std::string& text) {
  if (json)
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  else
    std::printf("%s\n", text.c_str());
}

int run_perplexity(const EvalArgs& a, bool json) {
  eval::ModelDir m = eval::open_model_dir(a.model, false);
  const std::vector<int32_t> ids = eval::load_eval_tokens(m, a.data, a.field);
  const int64_t ctx = a.ctx > 0 ? a.ctx : m.engine.config().max_position_embeddings;
  const int64_t stride = a.stride > 0 ? a.stride : ctx / 2 > 0 ? ctx / 2 : 1;
  const eval::PerplexityResult r = eval::perplexity(m.engine, ids, ctx, stride, progress("perplexity: tokens"));
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "perplexity %.4f (nll %.4f nats/token) over %lld tokens, %lld windows, ctx %lld, "
                "stride %lld",
                r.ppl, r.nll, static_cast<long long>(r.tokens), static_cast<long long>(r.windows),
                static_cast<long long>(ctx), static_cast<long long>(stride));
  print({{"tokens", r.tokens},
         {"windows", r.windows},
         {"nll", r.nll},
         {"ppl", r.ppl},
         {"ctx", ctx},
         {"stride", stride},
         {"data", a.data},
         {"model", a.model}},
        json, buf);
  return kOk;
}

int run_choice(const EvalArgs& a, bool json) {
  const std::vector<eval::ChoiceItem> items = eval::load_choice_tasks(a.tasks);
  eval::ModelDir m = eval::open_model_dir(a.model, true);
  const eval::ChoiceResult r = eval::evaluate_choice(m, items, progress("choice: items"));
  char buf[256];
  std::snprintf(buf, sizeof buf, "choice: acc %.4f, acc_norm %.4f over %lld items", r.acc, r.acc_norm,
                static_cast<long long>(r.items));
  print({{"items", r.items}, {"acc", r.acc}, {"acc_norm", r.acc_norm}, {"tasks", a.tasks}, {"model", a.model}}, json,
        buf);
  return kOk;
}

int run_generate_eval(const EvalArgs& a, bool json) {
  const std::vector<eval::GenItem> items = eval::load_gen_tasks(a.data);
  eval::ModelDir m = eval::open_model_dir(a.model, true);
  model::SamplingParams p = eval::generation_defaults(m);
  p.temperature = 0;  // greedy
  p.max_tokens = a.max_tokens;
  p.stop = a.stop;
  const eval::GenEvalResult r = eval::evaluate_generation(m, items, p, progress("generate: items"));
  char buf[256];
  std::snprintf(buf, sizeof buf, "generate: BLEU %.2f (bp %.3f, %lld/%lld tokens), ROUGE-L F %.4f over %lld items",
                r.bleu.score, r.bleu.bp, static_cast<long long>(r.bleu.sys_len), static_cast<long long>(r.bleu.ref_len),
                r.rouge_l, static_cast<long long>(r.items));
  print({{"items", r.items},
         {"bleu", r.bleu.score},
         {"bleu_bp", r.bleu.bp},
         {"bleu_precisions", std::vector<double>(r.bleu.precisions, r.bleu.precisions + 4)},
         {"sys_len", r.bleu.sys_len},
         {"ref_len", r.bleu.ref_len},
         {"rouge_l", r.rouge_l},
         {"outputs", r.outputs},
         {"data", a.data},
         {"model", a.model}},
        json, buf);
  return kOk;
}

}  // namespace

void add_eval_command(CLI::App& app, Context& ctx) {
  CLI::App* ev = app.add_subcommand("eval", "perplexity, multiple-choice and generation benchmarks on a model");
  ev->require_subcommand(1);
  auto a = std::make_shared<EvalArgs>();

  CLI::App* ppl =
      ev->add_subcommand("perplexity", "sliding-window perplexity (windows of --ctx tokens every --stride)");
  ppl->add_option("--model", a->model, "model directory")->required();
  ppl->add_option("--data", a->data, "text file, JSONL (field --field), or a token-shard directory (manifest.json)")
      ->required()
      ->check(CLI::ExistingPath);
  ppl->add_option("--ctx", a->ctx, "window length in tokens (default: max_position_embeddings)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 30));
  ppl->add_option("--stride", a->stride, "tokens a window advances (default: ctx / 2)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  ppl->add_option("--field", a->field, "JSONL text field")->capture_default_str();
  ppl->add_flag("--json", ctx.json, "one JSON object: tokens, windows, nll, ppl");
  ppl->callback([&ctx, a] { ctx.exit_code = run_perplexity(*a, ctx.json); });

  CLI::App* ch = ev->add_subcommand("choice", "multiple-choice accuracy by log-likelihood (acc, acc_norm)");
  ch->add_option("--model", a->model, "model directory (with tokenizer.json)")->required();
  ch->add_option("--tasks", a->tasks, "JSONL: {\"context\": str, \"choices\": [str, ...], \"label\": int} per line")
      ->required()
      ->check(CLI::ExistingFile);
  ch->add_flag("--json", ctx.json, "one JSON object: items, acc, acc_norm");
  ch->callback([&ctx, a] { ctx.exit_code = run_choice(*a, ctx.json); });

  CLI::App* g = ev->add_subcommand("generate", "BLEU and ROUGE-L of greedy generations against references");
  g->add_option("--model", a->model, "model directory (with tokenizer.json)")->required();
  g->add_option("--data", a->data, "JSONL: {\"prompt\": str, \"reference\": str} per line")
      ->required()
      ->check(CLI::ExistingFile);
  g->add_option("--max-tokens", a->max_tokens, "tokens generated per prompt at most")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  g->add_option("--stop", a->stop, "stop string (repeatable), e.g. a newline");
  g->add_flag("--json", ctx.json, "one JSON object: items, bleu, bleu_bp, bleu_precisions, rouge_l, outputs");
  g->callback([&ctx, a] { ctx.exit_code = run_generate_eval(*a, ctx.json); });
}

}  // namespace lmforge::cli
