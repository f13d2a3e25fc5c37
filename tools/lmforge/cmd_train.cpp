// lmforge train / bench train.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lmforge/commands.h"
#include "lmforge/train/config.h"
#include "lmforge/train/trainer.h"

namespace lmforge::cli {

namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> set;
  train::RunOptions run;
};

int run_train(const TrainArgs& a) {
  train::TrainConfig cfg = train::load_train_config(a.config, a.set);
  train::RunResult r = train::run_training(cfg, a.run);
  if (r.exit_code != 0) return kRuntimeError;
  if (!a.run.quiet && !r.interrupted)
    std::fprintf(stderr, "train: %lld steps, final loss %.4f%s -> %s/final\n", static_cast<long long>(r.steps_done),
                 r.last_loss, r.last_val_loss >= 0 ? (", val loss " + std::to_string(r.last_val_loss)).c_str() : "",
                 cfg.checkpoint_dir.c_str());
  return kOk;
}

struct BenchTrainArgs {
  std::string config;
  std::vector<std::string> set;
  int64_t steps = 6, warmup = 3;
  int threads = 0;
};

int run_bench_train(const BenchTrainArgs& a, bool json) {
  train::TrainConfig cfg = train::load_train_config(a.config, a.set);
  if (a.threads > 0) cfg.threads = a.threads;
  train::BenchResult r = train::bench_training(cfg, a.steps, a.warmup);
  nlohmann::json j = {{"config", a.config},
                      {"tokens_per_s", r.tokens_per_s},
                      {"step_ms_median", r.step_ms_median},
                      {"step_ms", r.step_ms},
                      {"peak_rss_mb", r.peak_rss_mb},
                      {"peak_tensor_mb", r.peak_tensor_mb},
                      {"precision", r.precision},
                      {"params", r.params},
                      {"mfu", r.mfu},
                      {"sgemm_gflops", r.sgemm_gflops},
                      {"flops_per_token", r.flops_per_token},
                      {"tokens_per_step", r.tokens_per_step},
                      {"steps", r.steps},
                      {"warmup", a.warmup},
                      {"threads", r.threads},
                      {"precision", cfg.precision},
                      {"activation_checkpointing", cfg.activation_checkpointing},
                      {"first_loss", r.first_loss},
                      {"last_loss", r.last_loss}};
  if (json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf(
        "bench train %s: %.0f tokens/s, step %.0f ms (median of %lld), peak RSS %.0f MB, %lld params, MFU %.1f%% of "
        "%.1f GFLOP/s sgemm, %d threads\n",
        a.config.c_str(), r.tokens_per_s, r.step_ms_median, static_cast<long long>(r.steps), r.peak_rss_mb,
        static_cast<long long>(r.params), 100 * r.mfu, r.sgemm_gflops, static_cast<int>(r.threads));
  }
  return kOk;
}

}  // namespace

void add_train_command(CLI::App& app, Context& ctx) {
  auto ta = std::make_shared<TrainArgs>();
  CLI::App* t = app.add_subcommand("train", "pretrain a model from a TOML config");
  t->add_option("--config", ta->config, "training config (TOML)")->required();
  t->add_option("--set", ta->set, "override a config key: section.key=value (repeatable)");
  t->add_flag("--resume", ta->run.resume, "continue from the newest checkpoint in [checkpoint] dir");
  t->add_option("--stop-at", ta->run.stop_at, "checkpoint and stop after this step (resume later)")
      ->check(CLI::Range(int64_t{1}, INT64_MAX));
  t->add_flag("--quiet", ta->run.quiet, "no progress output (the JSONL log is still written)");
  t->callback([&ctx, ta] { ctx.exit_code = run_train(*ta); });
}

void add_bench_train_command(CLI::App* bench, Context& ctx) {
  auto ba = std::make_shared<BenchTrainArgs>();
  CLI::App* t = bench->add_subcommand("train", "time training steps on a TOML config (random tokens unless data)");
  t->add_option("--config", ba->config, "training config (TOML)")->required();
  t->add_option("--steps", ba->steps, "timed steps (median reported)")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}))
      ->capture_default_str();
  t->add_option("--warmup", ba->warmup, "untimed warm-up steps")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000}))
      ->capture_default_str();
  t->add_option("--threads", ba->threads, "override [training] threads")->check(CLI::Range(1, 1024));
  t->add_option("--set", ba->set, "override a config key: section.key=value (repeatable)");
  t->add_flag("--json", ctx.json, "one JSON object: tokens_per_s, step_ms_median, peak_rss_mb, params, mfu, ...");
  t->callback([&ctx, ba] { ctx.exit_code = run_bench_train(*ba, ctx.json); });
}

}  // namespace lmforge::cli
