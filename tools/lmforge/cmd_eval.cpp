// lmforge eval: evaluation of a model directory (f32 or quantized). `eval perplexity` lives here; the other
// benchmarks (choice, generate) register on the same parent.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "eval/perplexity.h"
#include "lmforge/commands.h"
#include "lmforge/kernels/thread_pool.h"
#include "lmforge/quant/quantized_model.h"

namespace lmforge::cli {

namespace {

struct PplArgs {
  std::string model, data, split = "val", text_field = "text";
  int64_t ctx = 512, stride = 0, max_tokens = 0;
  int threads = 0;
};

int run_perplexity(const PplArgs& a, bool json) {
  if (a.stride > a.ctx) {
    std::fprintf(stderr, "lmforge eval perplexity: --stride (%lld) must not exceed --ctx (%lld)\n",
                 static_cast<long long>(a.stride), static_cast<long long>(a.ctx));
    return kUsageError;
  }
  if (a.threads > 0) ThreadPool::global().set_num_threads(a.threads);
  const model::CausalLM m = quant::load_causal_lm_any(a.model);
  if (a.ctx > m.config().max_position_embeddings) {
    std::fprintf(stderr, "lmforge eval perplexity: --ctx %lld exceeds the model's max_position_embeddings (%lld)\n",
                 static_cast<long long>(a.ctx), static_cast<long long>(m.config().max_position_embeddings));
    return kUsageError;
  }
  std::string how;
  const std::vector<int32_t> ids =
      eval::load_eval_tokens(a.data, a.model, m.config().vocab_size, a.max_tokens, a.split, a.text_field, &how);
  eval::PerplexityOptions opt;
  opt.ctx = a.ctx;
  opt.stride = a.stride;
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto t0 = std::chrono::steady_clock::now();
  int64_t last_pct = -1;
  const eval::PerplexityResult r = eval::perplexity(m, ids, opt, [&](int64_t done, int64_t total) {
    const int64_t pct = 100 * done / total;
    if (pct / 10 == last_pct / 10 && done != total && !tty) return;  // plain logs: every 10%
    last_pct = pct;
    std::fprintf(
        stderr,
        tty ? "\reval perplexity: %lld/%lld tokens (%lld%%)   " : "eval perplexity: %lld/%lld tokens (%lld%%)\n",
        static_cast<long long>(done), static_cast<long long>(total), static_cast<long long>(pct));
    if (tty && done == total) std::fputc('\n', stderr);
  });
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
  CLI::App* eval = app.add_subcommand("eval", "evaluate a model: perplexity (and benchmarks)");
  eval->require_subcommand(1);
  auto a = std::make_shared<PplArgs>();
  CLI::App* p = eval->add_subcommand(
      "perplexity", "sliding-window perplexity of a model dir (f32 or quantized) on text, JSONL or token shards");
  p->add_option("--model", a->model, "model directory (config.json + model.safetensors)")->required();
  p->add_option("--data", a->data, "text file, .jsonl file, or token-shard directory (manifest.json)")->required();
  p->add_option("--ctx", a->ctx, "window length in tokens")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  p->add_option("--stride", a->stride, "tokens the window advances by (default: --ctx)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  p->add_option("--max-tokens", a->max_tokens, "evaluate at most this many tokens (0: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  p->add_option("--split", a->split, "token shards: val or train")
      ->check(CLI::IsMember({"val", "train"}))
      ->capture_default_str();
  p->add_option("--text-field", a->text_field, "JSONL field holding the text")->capture_default_str();
  p->add_option("--threads", a->threads, "threads (default: LMFORGE_THREADS or all cores)")->check(CLI::Range(1, 1024));
  p->add_flag("--json", ctx.json, "one JSON object: tokens, nll (mean), ppl, ...");
  p->callback([&ctx, a] { ctx.exit_code = run_perplexity(*a, ctx.json); });
}

}  // namespace lmforge::cli
