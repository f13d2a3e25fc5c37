#include "lmforge/train/trainer.h"

#include <cblas.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "lmforge/core/ops.h"
#include "lmforge/core/optim.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/thread_pool.h"
#include "lmforge/model/model.h"
#include "lmforge/train/dataset.h"
#include "train/checkpoint.h"
#include "train/progress.h"
#include "train/report.h"

namespace lmforge::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int s) {
  g_signal.store(s);
}

// SIGINT / SIGTERM set a flag the loop checks after each step; the previous handlers come back afterwards.
class SignalGuard {
 public:
  SignalGuard() {
    g_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    install(SIGINT, sa, &old_int_);
    install(SIGTERM, sa, &old_term_);
  }
  ~SignalGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

 private:
  // A signal ignored on entry stays ignored (nohup, or SIGINT for a background job of a non-interactive shell).
  static void install(int sig, const struct sigaction& sa, struct sigaction* old) {
    sigaction(sig, nullptr, old);
    if (old->sa_handler != SIG_IGN) sigaction(sig, &sa, nullptr);
  }
  struct sigaction old_int_ {
  }, old_term_{};
};

model::CausalLM build_model(const TrainConfig& c) {
  if (!c.init_from.empty()) return model::CausalLM::load(c.init_from);
  model::CausalLM m(model::load_model_config(c.model_config));
  m.init_random(c.model_seed);
  return m;
}

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct StepStats {
  double loss = 0, aux = 0, grad_norm = 0;
  bool finite = true;
  bool overflow = false;  // fp16: the loss was finite but a scaled gradient overflowed
  std::vector<model::ExpertLoad> load;
  int64_t dropped = 0;
};

// One optimizer step's forward/backward over the accumulation micro-batches (gradients left on the params).
// precision: how activations are rounded and kept (bf16 / fp16 mixed precision; the master weights, their
// gradients and the optimizer state stay f32). loss_scale multiplies the loss before backward (fp16), and the
// gradients are divided by it again before clipping.
StepStats forward_backward(const model::CausalLM& m, const TrainConfig& c, Dataset& data, int64_t& position,
                           int64_t step, SavedPrecision precision, double loss_scale) {
  StepStats st;
  SavedPrecisionScope mixed(precision);  // also for backward: checkpointed blocks replay their forward
  const int64_t accum = c.accumulation();
  for (Var p : m.parameters()) p.zero_grad();
  for (int64_t a = 0; a < accum; ++a) {
    Batch b = data.next(c.micro_batch, position);
    model::ForwardOptions fo;
    fo.training = true;
    fo.checkpoint_blocks = c.activation_checkpointing;
    fo.seed = mix(c.model_seed, static_cast<uint64_t>(step * accum + a));
    Tape tape;
    Var total;
    {
      TapeScope scope(&tape);
      model::ForwardResult r = m.forward(b.inputs, fo);
      Var loss = model::next_token_loss(r.logits, b.targets);
      st.loss += loss.value().item() / static_cast<double>(accum);
      total = loss;
      if (r.aux_loss.defined()) {
        st.aux += r.aux_loss.value().item() / static_cast<double>(accum);
        total = ops::add(total, r.aux_loss);
      }
      if (accum > 1) total = ops::scale(total, 1.0 / static_cast<double>(accum));
      if (st.load.empty()) {
        st.load = r.expert_load;
      } else {
        for (size_t l = 0; l < st.load.size() && l < r.expert_load.size(); ++l) {
          for (size_t e = 0; e < st.load[l].tokens.size(); ++e) st.load[l].tokens[e] += r.expert_load[l].tokens[e];
          st.load[l].dropped += r.expert_load[l].dropped;
        }
      }
    }
    tape.backward(total, Tensor::full({1}, loss_scale, total.dtype()));
  }
  for (const auto& l : st.load) st.dropped += l.dropped;
  st.grad_norm = clip_grad_norm(m.parameters(), c.grad_clip > 0 ? c.grad_clip : INFINITY, loss_scale);
  st.finite = std::isfinite(st.loss) && std::isfinite(st.aux) && std::isfinite(st.grad_norm);
  st.overflow = loss_scale > 1.0 && !st.finite && std::isfinite(st.loss) && std::isfinite(st.aux);
  return st;
}

double validation_loss(const model::CausalLM& m, const std::vector<Batch>& batches) {
  TapeScope none(nullptr);
  double sum = 0;
  int64_t n = 0;
  for (const Batch& b : batches) {
    model::ForwardResult r = m.forward(b.inputs);
    const int64_t tokens = b.targets.numel();
    sum += model::next_token_loss(r.logits, b.targets).value().item() * static_cast<double>(tokens);
    n += tokens;
  }
  return n ? sum / static_cast<double>(n) : NAN;
}

nlohmann::json load_json(const std::vector<model::ExpertLoad>& load) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& l : load) a.push_back({{"layer", l.layer}, {"tokens", l.tokens}, {"dropped", l.dropped}});
  return a;
}

SavedPrecision precision_of(const TrainConfig& c) {
  if (c.precision == "bf16") return SavedPrecision::BF16;
  if (c.precision == "fp16") return SavedPrecision::F16;
  return SavedPrecision::F32;
}

void set_threads(int threads) {
  if (threads > 0) ThreadPool::global().set_num_threads(threads);
}

}  // namespace

RunResult run_training(const TrainConfig& c, const RunOptions& opt) {
  const SavedPrecision precision = precision_of(c);
  const bool scaled = precision == SavedPrecision::F16;
  set_threads(c.threads);
  model::CausalLM m = build_model(c);
  const model::ModelConfig& mc = m.config();
  std::unique_ptr<Dataset> data = c.random_tokens
                                      ? std::make_unique<Dataset>(mc.vocab_size, c.seq_len, c.data_seed)
                                      : std::make_unique<Dataset>(c.data_dir, c.seq_len, c.data_seed, mc.vocab_size);
  AdamWOptions ao;
  ao.lr = c.lr;
  ao.beta1 = c.beta1;
  ao.beta2 = c.beta2;
  ao.eps = c.eps;
  AdamW optim(decay_groups(m.parameters(), c.weight_decay), ao);
  const double bias_speed = c.bias_update_speed >= 0 ? c.bias_update_speed : mc.moe_bias_update_speed;

  Checkpoints ckpt(c.checkpoint_dir, c.keep_last);
  RunState state;
  if (opt.resume) {
    if (!ckpt.latest()) throw Error(c.checkpoint_dir + ": --resume given but there is no checkpoint to resume from");
    state = ckpt.load(*ckpt.latest(), m, optim);
  } else if (ckpt.latest()) {
    throw Error(c.checkpoint_dir +
                ": holds checkpoints from an earlier run; pass --resume to continue it, or choose "
                "another [checkpoint] dir");
  }
  if (scaled && state.loss_scale <= 0) state.loss_scale = c.loss_scale;
  if (!scaled) state.loss_scale = 0;
  fs::create_directories(c.checkpoint_dir);
  JsonlLog log((fs::path(c.checkpoint_dir) / "log.jsonl").string(), opt.resume ? state.step : -1);
  if (opt.resume)
    log.write({{"event", "resume"}, {"step", state.step}, {"data_position", state.data_position}});
  else
    log.write({{"event", "start"},
               {"params", m.num_parameters()},
               {"model_type", mc.model_type},
               {"max_steps", c.max_steps},
               {"tokens_per_step", c.global_batch * c.seq_len},
               {"config", c.source}});

  const std::vector<Batch> val = data->validation(c.val_batches, c.micro_batch);
  Progress progress(c.progress, opt.quiet, c.max_steps, state.step);
  SignalGuard signals;
  RunResult res;
  const int64_t tokens_per_step = c.global_batch * c.seq_len;
  auto t_last = Clock::now();
  int64_t steps_since_log = 0;
  auto save = [&](const char* why) {
    const std::string path = ckpt.save(state, m, optim);
    log.write({{"event", "checkpoint"}, {"step", state.step}, {"path", path}, {"reason", why}});
  };

  while (state.step < c.max_steps) {
    const double lr = c.lr_at(state.step);
    const int64_t pos_before = state.data_position;
    StepStats st =
        forward_backward(m, c, *data, state.data_position, state.step, precision, scaled ? state.loss_scale : 1.0);
    if (st.overflow && state.loss_scale > 1.0) {
      // fp16 dynamic loss scaling (torch.cuda.amp.GradScaler's rule): an overflow skips the step and halves the
      // scale; growth_interval good steps in a row double it. Not a non-finite step for the guard.
      for (Var p : m.parameters()) p.zero_grad();
      state.loss_scale = std::max(1.0, state.loss_scale * 0.5);
      state.good_steps = 0;
      log.write({{"event", "overflow"}, {"step", state.step}, {"loss_scale", state.loss_scale}});
      ++state.step;  // the batch is consumed, the weights do not move
      continue;
    }
    if (!st.finite) {
      ++state.nonfinite_streak;
      for (Var p : m.parameters()) p.zero_grad();
      log.write({{"event", "nonfinite"},
                 {"step", state.step},
                 {"loss", std::isfinite(st.loss) ? nlohmann::json(st.loss) : nlohmann::json("nan/inf")},
                 {"grad_norm", std::isfinite(st.grad_norm) ? nlohmann::json(st.grad_norm) : nlohmann::json("nan/inf")},
                 {"streak", state.nonfinite_streak},
                 {"data_position", pos_before}});
      progress.message("step " + std::to_string(state.step + 1) + ": non-finite loss or gradient, step skipped (" +
                       std::to_string(state.nonfinite_streak) + " in a row)");
      if (state.nonfinite_streak >= c.max_nonfinite_steps) {
        log.write({{"event", "stopped"}, {"reason", "non-finite steps"}, {"step", state.step}});
        progress.message("stopping: " + std::to_string(state.nonfinite_streak) +
                         " non-finite steps in a row; the last good checkpoint is kept as it was");
        write_report(c.checkpoint_dir);
        res.exit_code = 1;
        res.steps_done = state.step;
        return res;
      }
      ++state.step;  // the batch is consumed; the step counts, the weights do not move
      continue;
    }
    state.nonfinite_streak = 0;
    if (scaled && ++state.good_steps >= c.loss_scale_growth_interval) {
      state.loss_scale = std::min(state.loss_scale * 2.0, 1e12);
      state.good_steps = 0;
    }
    optim.set_lr(lr);
    optim.step();
    if (bias_speed > 0 && mc.topk_method == "noaux_tc") m.update_expert_bias(st.load, bias_speed);
    ++state.step;
    ++steps_since_log;
    res.last_loss = st.loss;

    if (state.step % c.log_every == 0 || state.step == c.max_steps) {
      const double secs = std::chrono::duration<double>(Clock::now() - t_last).count();
      const double tps = static_cast<double>(tokens_per_step * steps_since_log) / std::max(secs, 1e-9);
      nlohmann::json rec = {
          {"step", state.step},        {"loss", st.loss},     {"lr", lr},
          {"grad_norm", st.grad_norm}, {"tokens_per_s", tps}, {"tokens_seen", state.step * tokens_per_step}};
      if (!st.load.empty()) {
        rec["aux_loss"] = st.aux;
        rec["expert_load"] = load_json(st.load);
        rec["dropped"] = st.dropped;
      }
      log.write(rec);
      progress.update(state.step, st.loss, lr, tps);
      t_last = Clock::now();
      steps_since_log = 0;
    }
    if (c.val_every > 0 && !val.empty() && (state.step % c.val_every == 0 || state.step == c.max_steps)) {
      const double vl = validation_loss(m, val);
      res.last_val_loss = vl;
      log.write({{"step", state.step}, {"val_loss", vl}, {"val_ppl", std::exp(vl)}});
      progress.message("step " + std::to_string(state.step) + ": val_loss " + std::to_string(vl) + " ppl " +
                       std::to_string(std::exp(vl)));
    }
    const bool stop_here = opt.stop_at > 0 && state.step >= opt.stop_at && state.step < c.max_steps;
    const int sig = g_signal.load();
    if (sig != 0 || stop_here) {
      save(sig ? "signal" : "stop_at");
      log.write({{"event", "interrupted"}, {"step", state.step}, {"signal", sig}});
      write_report(c.checkpoint_dir);
      progress.message("stopped at step " + std::to_string(state.step) + "; checkpoint saved; continue with --resume");
      res.interrupted = true;
      res.steps_done = state.step;
      return res;
    }
    if (c.checkpoint_every > 0 && state.step % c.checkpoint_every == 0 && state.step < c.max_steps) save("every");
  }
  save("final");
  m.save((fs::path(c.checkpoint_dir) / "final").string());
  log.write({{"event", "done"}, {"step", state.step}, {"final_loss", res.last_loss}, {"val_loss", res.last_val_loss}});
  write_report(c.checkpoint_dir);
  progress.finish();
  res.steps_done = state.step;
  return res;
}

namespace {

double measure_sgemm_gflops(int64_t M, int64_t N, int64_t K, int threads) {
  std::vector<float> a(static_cast<size_t>(M * K), 0.5f), b(static_cast<size_t>(K * N), 0.25f),
      cm(static_cast<size_t>(M * N));
  kernels::cpu::blas_set_threads(threads);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
                1.0f, a.data(), static_cast<int>(K), b.data(), static_cast<int>(K), 0.0f, cm.data(),
                static_cast<int>(N));
  };
  run();
  std::vector<double> ms;
  for (int r = 0; r < 7; ++r) {
    auto t0 = Clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  kernels::cpu::blas_set_threads(1);
  std::sort(ms.begin(), ms.end());
  return 2.0 * static_cast<double>(M * N * K) / (ms[ms.size() / 2] * 1e-3) / 1e9;
}

// Training FLOPs per token: 6 x (non-embedding parameters a token passes through: routed experts count top_k of
// n_routed) + attention 6 x layers x seq x heads x (qk_dim + v_dim) (the PaLM convention, no causal halving).
double flops_per_token(const model::CausalLM& m, int64_t seq) {
  const model::ModelConfig& c = m.config();
  double active = 0;
  for (const Var& p : m.parameters()) {
    const std::string& n = p.name();
    const auto numel = static_cast<double>(p.value().numel());
    if (n == "model.embed_tokens.weight") {
      if (c.tie_word_embeddings) active += numel;  // it is also the LM head
      continue;
    }
    if (n.find(".mlp.experts.") != std::string::npos) {
      active += numel * static_cast<double>(c.num_experts_per_tok) / static_cast<double>(c.n_routed_experts);
      continue;
    }
    active += numel;
  }
  const int64_t qk = c.is_deepseek() ? c.qk_nope_head_dim + c.qk_rope_head_dim : c.head_dim;
  const int64_t v = c.is_deepseek() ? c.v_head_dim : c.head_dim;
  const double attn = 6.0 * static_cast<double>(c.num_hidden_layers * seq * c.num_attention_heads * (qk + v));
  return 6.0 * active + attn;
}

}  // namespace

BenchResult bench_training(const TrainConfig& c, int64_t steps, int64_t warmup) {
  set_threads(c.threads);
  model::CausalLM m = build_model(c);
  const model::ModelConfig& mc = m.config();
  std::unique_ptr<Dataset> data = c.random_tokens || c.data_dir.empty()
                                      ? std::make_unique<Dataset>(mc.vocab_size, c.seq_len, c.data_seed)
                                      : std::make_unique<Dataset>(c.data_dir, c.seq_len, c.data_seed, mc.vocab_size);
  AdamWOptions ao;
  ao.lr = c.lr;
  ao.beta1 = c.beta1;
  ao.beta2 = c.beta2;
  ao.eps = c.eps;
  AdamW optim(decay_groups(m.parameters(), c.weight_decay), ao);
  BenchResult r;
  r.params = m.num_parameters();
  r.threads = ThreadPool::global().num_threads();
  // The sgemm probe runs before and after the steps; the better figure is the machine's capability (a probe
  // that overlapped with another process's burst would otherwise inflate the MFU).
  const auto sgemm = [&] {
    return measure_sgemm_gflops(c.micro_batch * c.seq_len, mc.intermediate_size, mc.hidden_size,
                                static_cast<int>(r.threads));
  };
  r.sgemm_gflops = sgemm();
  r.tokens_per_step = c.global_batch * c.seq_len;
  int64_t position = 0;
  r.precision = c.precision;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    if (s == warmup) Storage::reset_peak_live_bytes();
    auto t0 = Clock::now();
    const SavedPrecision precision = precision_of(c);
    StepStats st =
        forward_backward(m, c, *data, position, s, precision, precision == SavedPrecision::F16 ? c.loss_scale : 1.0);
    optim.set_lr(c.lr_at(s));
    if (st.finite) optim.step();
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (s == 0) r.first_loss = st.loss;
    r.last_loss = st.loss;
    if (s >= warmup) r.step_ms.push_back(ms);
  }
  std::vector<double> sorted = r.step_ms;
  std::sort(sorted.begin(), sorted.end());
  r.steps = steps;
  r.step_ms_median = sorted.empty()
                         ? 0
                         : (sorted.size() % 2 ? sorted[sorted.size() / 2]
                                              : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]));
  r.tokens_per_s = r.step_ms_median > 0 ? static_cast<double>(r.tokens_per_step) / (r.step_ms_median * 1e-3) : 0;
  r.peak_rss_mb = peak_rss_mb();
  r.peak_tensor_mb = static_cast<double>(Storage::peak_live_bytes()) / (1024.0 * 1024.0);
  r.flops_per_token = flops_per_token(m, c.seq_len);
  r.sgemm_gflops = std::max(r.sgemm_gflops, sgemm());
  r.mfu = r.sgemm_gflops > 0 ? r.flops_per_token * r.tokens_per_s / (r.sgemm_gflops * 1e9) : 0;
  return r;
}

}  // namespace lmforge::train
