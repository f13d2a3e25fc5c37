// The pretraining loop: gradient accumulation to the global batch, clipping, AdamW with decay groups, the
// learning-rate schedule, MoE auxiliary loss and bias balancing, validation, checkpoints and exact resume, a
// NaN/inf guard, SIGINT/SIGTERM handling, a progress bar and a JSONL log of every metric.
//
// A run folder ([checkpoint] dir) holds:
//   log.jsonl                 one JSON object per logged step / validation / event
//   checkpoints/step-NNNNNNNN/ config.json + model.safetensors (a loadable model dir), optimizer.safetensors,
//                             trainer.json (step, data position, loss scale, sha256 of both files); written under
//                             a temporary name and renamed, so a checkpoint folder is complete or absent
//   final/                    the model after the last step
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lmforge/train/config.h"

namespace lmforge::train {

struct RunOptions {
  bool resume = false;
  int64_t stop_at = 0;  // > 0: checkpoint and stop after this step (as if interrupted there)
  bool quiet = false;   // no progress output (tests)
};

struct RunResult {
  int64_t steps_done = 0;  // optimizer steps completed in total (including before a resume)
  double last_loss = 0, last_val_loss = -1;
  bool interrupted = false;  // stopped by a signal or stop_at; a checkpoint was written
  int exit_code = 0;         // 0 ok, 1 stopped by the non-finite guard
};

RunResult run_training(const TrainConfig& cfg, const RunOptions& opt);

// Throughput measurement on the config (random tokens unless the config has data): `steps` timed steps after
// `warmup` untimed ones; no checkpoints or logs.
struct BenchResult {
  double tokens_per_s = 0, step_ms_median = 0, peak_rss_mb = 0, mfu = 0, sgemm_gflops = 0, flops_per_token = 0;
  int64_t params = 0, steps = 0, tokens_per_step = 0, threads = 0;
  double first_loss = 0, last_loss = 0;
  // Peak bytes of live tensor storage during the timed steps (allocator caches excluded), MB; and the precision.
  double peak_tensor_mb = 0;
  std::string precision;
  std::vector<double> step_ms;
};
BenchResult bench_training(const TrainConfig& cfg, int64_t steps, int64_t warmup);

// Peak resident set size of this process, MB.
double peak_rss_mb();

}  // namespace lmforge::train
