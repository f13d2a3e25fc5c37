// lmforge eval perplexity | choice | generate: benchmarks on the inference engine.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "lmforge/commands.h"
#include "lmforge/eval/eval.h"
#include "lmforge/kernels/thread_pool.h"
#include "lmforge/quant/quantized_model.h"
#include "quant/lm_perplexity.h"

namespace lmforge::cli {

namespace {

struct EvalArgs {
  std::string model, data, tasks, field = "text";
  int64_t ctx = 0, stride = 0, max_tokens = 64;
  std::vector<std::string> stop;
  int threads = 0;
  std::string kv_type = "f32";  // eval measures the model: an exact cache unless asked
  bool chat = false;            // eval generate: prompts through the chat template
  std::string system;           // eval generate: system message (with chat)
};

model::EngineOptions engine_options(const EvalArgs& a) {
  model::EngineOptions eo;
  eo.kv_dtype = kv_dtype(a.kv_type);
  return eo;
}

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

int run_choice(const EvalArgs& a, bool json) {
  std::vector<eval::ChoiceItem> items = eval::load_choice_tasks(a.tasks);
  eval::ModelDir m = eval::open_model_dir(a.model, true, engine_options(a));
  LMF_CHECK(a.chat || a.system.empty(), "eval choice: --system-instruction needs --apply-chat-template");
  if (a.chat)
    if (const std::string note = eval::apply_chat_template(m, items, a.system); !note.empty())
      std::fprintf(stderr, "lmforge eval choice: %s\n", note.c_str());
  const eval::ChoiceResult r = eval::evaluate_choice(m, items, progress("choice: items"));
  char buf[256];
  std::snprintf(buf, sizeof buf, "choice: acc %.4f, acc_norm %.4f over %lld items", r.acc, r.acc_norm,
                static_cast<long long>(r.items));
  if (r.truncated > 0)
    std::fprintf(stderr, "choice: %lld items had their context cut at the front to fit the model's %lld positions\n",
                 static_cast<long long>(r.truncated),
                 static_cast<long long>(m.engine.config().max_position_embeddings));
  print({{"items", r.items},
         {"acc", r.acc},
         {"acc_norm", r.acc_norm},
         {"truncated", r.truncated},
         {"chat_template", a.chat},
         {"tasks", a.tasks},
         {"model", a.model}},
        json, buf);
  return kOk;
}

int run_generate_eval(const EvalArgs& a, bool json) {
  const std::vector<eval::GenItem> items = eval::load_gen_tasks(a.data);
  eval::ModelDir m = eval::open_model_dir(a.model, true, engine_options(a));
  model::SamplingParams p = eval::generation_defaults(m);
  p.temperature = 0;  // greedy
  p.max_tokens = a.max_tokens;
  p.stop = a.stop;
  const eval::GenEvalResult r =
      eval::evaluate_generation(m, items, p, progress("generate: items"), eval::GenPromptOptions{a.chat, a.system});
  if (!r.chat_note.empty()) std::fprintf(stderr, "lmforge eval generate: %s\n", r.chat_note.c_str());
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
         {"chat_template", a.chat},
         {"data", a.data},
         {"model", a.model}},
        json, buf);
  return kOk;
}

struct PplArgs {
  std::string model, data, split = "val", text_field = "text";
  int64_t ctx = 512, stride = 0, max_tokens = 0;
  int threads = 0;
  bool engine = false, reference = false;  // the engine unless --reference
  std::string kv_type = "f32";
};

int run_lm_perplexity(const PplArgs& a, bool json) {
  if (a.stride > a.ctx) {
    std::fprintf(stderr, "lmforge eval perplexity: --stride (%lld) must not exceed --ctx (%lld)\n",
                 static_cast<long long>(a.stride), static_cast<long long>(a.ctx));
    return kUsageError;
  }
  if (a.reference && a.kv_type != "f32") {
    std::fprintf(stderr,
                 "lmforge eval perplexity: --kv-type %s applies to the engine; --reference runs the f32 model, "
                 "which keeps no KV cache\n",
                 a.kv_type.c_str());
    return kUsageError;
  }
  if (a.threads > 0) ThreadPool::global().set_num_threads(a.threads);
  // The inference engine on the weights as stored, or with --reference the f32 model (a quantized dir dequantized).
  std::optional<model::CausalLM> lm;
  std::optional<model::Engine> engine;
  if (!a.reference) {
    model::EngineOptions eo;
    eo.kv_dtype = kv_dtype(a.kv_type);
    engine.emplace(eval::load_engine(a.model, eo));
  } else {
    lm.emplace(quant::load_causal_lm_any(a.model));
  }
  const model::ModelConfig& cfg = engine ? engine->config() : lm->config();
  if (a.ctx > cfg.max_position_embeddings) {
    std::fprintf(stderr,
                 "lmforge eval perplexity: --ctx %lld exceeds the model's context (max_position_embeddings %lld)\n",
                 static_cast<long long>(a.ctx), static_cast<long long>(cfg.max_position_embeddings));
    return kUsageError;
  }
  std::string how;
  const std::vector<int32_t> ids =
      eval::lm::load_eval_tokens(a.data, a.model, cfg.vocab_size, a.max_tokens, a.split, a.text_field, &how);
  eval::lm::PerplexityOptions opt;
  opt.ctx = a.ctx;
  opt.stride = a.stride;
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto t0 = std::chrono::steady_clock::now();
  int64_t last_pct = -1;
  const auto report = [&](int64_t done, int64_t total) {
    const int64_t pct = 100 * done / total;
    if (pct / 10 == last_pct / 10 && done != total && !tty) return;  // plain logs: every 10%
    last_pct = pct;
    std::fprintf(
        stderr,
        tty ? "\reval perplexity: %lld/%lld tokens (%lld%%)   " : "eval perplexity: %lld/%lld tokens (%lld%%)\n",
        static_cast<long long>(done), static_cast<long long>(total), static_cast<long long>(pct));
    if (tty && done == total) std::fputc('\n', stderr);
  };
  const eval::lm::PerplexityResult r =
      engine ? eval::lm::perplexity(*engine, ids, opt, report) : eval::lm::perplexity(*lm, ids, opt, report);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (json) {
    nlohmann::json j{{"model", a.model},
                     {"data", a.data},
                     {"source", how},
                     {"ctx", a.ctx},
                     {"stride", opt.stride > 0 ? opt.stride : opt.ctx},
                     {"tokens", r.tokens},
                     {"windows", r.windows},
                     {"nll", r.nll},
                     {"ppl", r.ppl},
                     {"engine", !a.reference},
                     {"seconds", secs}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s on %s\n  %s\n  tokens %lld in %lld windows (ctx %lld, stride %lld), %.1f s\n  nll %.5f  ppl %.4f\n",
                a.model.c_str(), a.data.c_str(), how.c_str(), static_cast<long long>(r.tokens),
                static_cast<long long>(r.windows), static_cast<long long>(a.ctx),
                static_cast<long long>(opt.stride > 0 ? opt.stride : opt.ctx), secs, r.nll, r.ppl);
  }
  return kOk;
}

}  // namespace

void add_eval_command(CLI::App& app, Context& ctx) {
  CLI::App* ev = app.add_subcommand("eval", "perplexity, multiple-choice and generation benchmarks on a model");
  ev->require_subcommand(1);
  auto a = std::make_shared<EvalArgs>();

  auto pa = std::make_shared<PplArgs>();
  CLI::App* p = ev->add_subcommand(
      "perplexity", "sliding-window perplexity of a model dir (f32 or quantized) on text, JSONL or token shards");
  p->add_option("--model", pa->model, "model directory (config.json + model.safetensors)")->required();
  p->add_option("--data", pa->data, "text file, .jsonl file, or token-shard directory (manifest.json)")->required();
  p->add_option("--ctx", pa->ctx, "window length in tokens")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  p->add_option("--stride", pa->stride, "tokens the window advances by (default: --ctx)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  p->add_option("--max-tokens", pa->max_tokens, "evaluate at most this many tokens (0: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  p->add_option("--split", pa->split, "token shards: val or train")
      ->check(CLI::IsMember({"val", "train"}))
      ->capture_default_str();
  p->add_option("--text-field,--field", pa->text_field, "JSONL field holding the text")->capture_default_str();
  CLI::Option* eng =
      p->add_flag("--engine", pa->engine,
                  "run the windows on the inference engine, the weights in their stored formats (a "
                  "quantized or bf16 dir needs its own size in memory, not an f32 model's); the default");
  p->add_flag("--reference", pa->reference,
              "run the windows on the f32 reference model instead (a quantized dir dequantized to f32: 4 bytes a "
              "weight in memory)")
      ->excludes(eng);
  add_kv_type_option(p, pa->kv_type);
  p->add_option("--threads", pa->threads, "threads (default: LMFORGE_THREADS or all cores)")
      ->check(CLI::Range(1, 1024));
  p->add_flag("--json", ctx.json, "one JSON object: tokens, nll (mean), ppl, ...");
  p->callback([&ctx, pa] { ctx.exit_code = run_lm_perplexity(*pa, ctx.json); });

  CLI::App* ch = ev->add_subcommand("choice", "multiple-choice accuracy by log-likelihood (acc, acc_norm)");
  ch->add_option("--model", a->model, "model directory (with tokenizer.json)")->required();
  ch->add_option("--tasks", a->tasks,
                 "JSONL: {\"context\": str, \"choices\": [str, ...], \"label\": int} per line, or "
                 "lm-evaluation-harness documents {\"query\", \"choices\", \"gold\"}")
      ->required()
      ->check(CLI::ExistingFile);
  auto* ch_chat = ch->add_flag("--apply-chat-template", a->chat,
                               "each context as a user message rendered with the model's chat template (generation "
                               "prompt added; choices follow with no delimiter), as lm-evaluation-harness's "
                               "--apply_chat_template");
  ch->add_option("--system-instruction", a->system,
                 "a system message before each context (needs "
                 "--apply-chat-template)")
      ->needs(ch_chat);
  add_kv_type_option(ch, a->kv_type);
  ch->add_flag("--json", ctx.json, "one JSON object: items, acc, acc_norm");
  ch->callback([&ctx, a] { ctx.exit_code = run_choice(*a, ctx.json); });

  CLI::App* g = ev->add_subcommand("generate", "BLEU and ROUGE-L of greedy generations against references");
  g->add_option("--model", a->model, "model directory (with tokenizer.json)")->required();
  g->add_option("--data", a->data,
                "JSONL: {\"prompt\": str, \"reference\": str} (or \"references\": [str, ...]) per line")
      ->required()
      ->check(CLI::ExistingFile);
  g->add_option("--max-tokens", a->max_tokens, "tokens generated per prompt at most")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  g->add_option("--stop", a->stop, "stop string (repeatable), e.g. a newline");
  auto* chat = g->add_flag("--apply-chat-template", a->chat,
                           "each prompt as a user message rendered with the model's chat template (generation "
                           "prompt added), as lm-evaluation-harness's --apply_chat_template");
  g->add_option("--system-instruction", a->system, "a system message before each prompt (needs --apply-chat-template)")
      ->needs(chat);
  add_kv_type_option(g, a->kv_type);
  g->add_flag("--json", ctx.json, "one JSON object: items, bleu, bleu_bp, bleu_precisions, rouge_l, outputs");
  g->callback([&ctx, a] { ctx.exit_code = run_generate_eval(*a, ctx.json); });
}

}  // namespace lmforge::cli
