// lmforge bench generate: prefill and decode rates of the inference engine on a model directory, with the machine's
// limits measured in the same run (copy bandwidth for decode, raw OpenBLAS sgemm for prefill) and the ratios.
#include <cblas.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "bench_ops.h"
#include "ggml_ref.h"
#include "lmforge/commands.h"
#include "lmforge/eval/model_dir.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/cpu_features.h"
#include "lmforge/kernels/thread_pool.h"
#include "lmforge/model/engine.h"

namespace lmforge::cli {

namespace {

using Clock = std::chrono::steady_clock;

// ggml's f32 MUL_MAT at the decode shape (m=4096, k=14336, n=1, 2 threads) reads weights at 26.5 GB/s
// (/work/shared/BENCHMARKS.md): the decode rate ggml implies for a model is that over the bytes per token.
constexpr double kGgmlF32WeightGbS = 26.5;
// The same product's effective weight bandwidth at ggml's other formats (BENCHMARKS.md): a model is compared with
// the row of the format that holds most of its bytes per token.
double ggml_weight_gb_s(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32:
      return kGgmlF32WeightGbS;
    case WeightFormat::F16:
      return 24.1;
    case WeightFormat::Q8_0:
      return 21.0;
    case WeightFormat::Q4_0:
      return 13.4;
    default:
      return 0;  // no ggml figure for this format
  }
}

struct Args {
  std::string model;
  int64_t prompt_tokens = 512, gen_tokens = 128;
  int threads = 2, repeats = 1;
  int64_t batch = 1;
  uint64_t seed = 0;
  bool no_absorb = false;
  int copy_mib = 512;
  std::string kv_type = "f16";
  std::string ggml_dir;  // --ggml: measure ggml's kernel here too
};

using bench::median;

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

// Raw OpenBLAS with its own threads at the prefill's FFN shape (tokens x intermediate x hidden), median of 5.
double sgemm_gflops(int64_t M, int64_t N, int64_t K, int threads) {
  std::vector<float> a(static_cast<size_t>(M * K), 0.5f), b(static_cast<size_t>(K * N), 0.25f),
      c(static_cast<size_t>(M * N));
  kernels::cpu::blas_set_threads(threads);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, a.data(), int(K), b.data(),
                int(K), 0.0f, c.data(), int(N));
  };
  run();
  std::vector<double> ms;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = Clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  kernels::cpu::blas_set_threads(1);
  return 2.0 * double(M) * double(N) * double(K) / (median(ms) * 1e-3) / 1e9;
}

int32_t argmax(const float* x, int64_t n) {
  return static_cast<int32_t>(kernels::cpu::argmax(x, n));
}

int run_bench_generate(const Args& a, bool json) {
  ThreadCountScope scope(a.threads);
  std::unique_ptr<bench::Ggml> ggml_lib;
  if (!a.ggml_dir.empty()) {  // before the model loads: a bad --ggml fails fast
    try {
      ggml_lib = bench::Ggml::open(a.ggml_dir);
    } catch (const Error& err) {
      std::fprintf(stderr, "lmforge bench generate: %s\n", err.what());
      return kUsageError;
    }
  }
  model::EngineOptions eo;
  eo.mla_absorb = !a.no_absorb;
  eo.kv_dtype = kv_dtype(a.kv_type);
  model::Engine e = eval::load_engine(a.model, eo);
  const model::ModelConfig& c = e.config();
  if (a.prompt_tokens + a.gen_tokens > c.max_position_embeddings) {
    std::fprintf(
        stderr, "lmforge bench generate: --prompt-tokens + --gen-tokens (%lld) exceed the model's context (%lld)\n",
        static_cast<long long>(a.prompt_tokens + a.gen_tokens), static_cast<long long>(c.max_position_embeddings));
    return kUsageError;
  }
  std::mt19937_64 rng(a.seed);
  std::vector<int32_t> prompt(static_cast<size_t>(a.prompt_tokens));
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(c.vocab_size));
  {  // warm-up: page in the weights and start the pool's threads
    const model::SeqId s = e.add_sequence();
    const Tensor l = e.prefill(s, std::span<const int32_t>(prompt.data(), std::min<size_t>(prompt.size(), 16)));
    for (int i = 0; i < 2; ++i) e.decode({s}, {argmax(l.data<float>(), c.vocab_size)});
    e.free_sequence(s);
  }
  // --ggml: ggml's own kernel for the model's main format (BENCHMARKS.md's shape and method), sampled after each
  // decode run so that both see the same machine.
  WeightFormat main_format = WeightFormat::F32;
  double main_bytes = -1;
  for (const auto& [f, bytes] : e.weight_bytes_by_format())
    if (bytes > main_bytes) main_format = f, main_bytes = bytes;
  std::unique_ptr<bench::GgmlDecodeProbe> ggml_probe;
  double rss = 0;  // peak RSS of the engine's runs, taken before ggml's weights or the probes' arrays exist
  std::vector<double> prefill_s, decode_s, ggml_ms;
  for (int r = 0; r < a.repeats; ++r) {
    // --batch B: B sequences, each prefilled with the prompt (one after another), then decoded together, one
    // token each per step, as the server's continuous batching runs them.
    std::vector<model::SeqId> seqs(static_cast<size_t>(a.batch));
    std::vector<int32_t> next(seqs.size());
    auto t0 = Clock::now();
    for (size_t b = 0; b < seqs.size(); ++b) {
      seqs[b] = e.add_sequence();
      const Tensor l = e.prefill(seqs[b], prompt);
      next[b] = argmax(l.data<float>(), c.vocab_size);
    }
    prefill_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    t0 = Clock::now();
    for (int64_t i = 0; i < a.gen_tokens; ++i) {
      const Tensor l = e.decode(seqs, next);
      for (size_t b = 0; b < seqs.size(); ++b)
        next[b] = argmax(l.data<float>() + static_cast<int64_t>(b) * c.vocab_size, c.vocab_size);
    }
    decode_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    for (model::SeqId s : seqs) e.free_sequence(s);
    if (r == 0 && ggml_lib && bench::Ggml::supports(main_format)) {  // every run peaks alike: the first tells
      rss = peak_rss_mb();
      ggml_probe = std::make_unique<bench::GgmlDecodeProbe>(*ggml_lib, main_format, a.threads);
    }
    for (int i = 0; ggml_probe && i < 3; ++i) ggml_ms.push_back(ggml_probe->sample_ms());
  }
  if (!ggml_probe) rss = peak_rss_mb();  // before the probes allocate their arrays
  const double prefill_tps = double(a.batch * a.prompt_tokens) / median(prefill_s);
  // Steps per second: each sequence's token rate. A step reads the weights once for the whole batch, so the
  // ceilings and ggml's implied rates are per step; decode_tokens_per_s counts every sequence's tokens.
  const double step_tps = double(a.gen_tokens) / median(decode_s);
  const double decode_tps = step_tps * double(a.batch);
  // Prefill FLOPs: the weight products for every prompt token, the LM head once (only the last token's logits are
  // computed), and causal attention (QKᵀ and PV: 4 x heads x head dims per visible key).
  const int64_t P = a.prompt_tokens;
  const double qk = c.is_deepseek() ? double(c.qk_nope_head_dim + c.qk_rope_head_dim) : double(c.head_dim);
  const double vd = c.is_deepseek() ? double(c.v_head_dim) : double(c.head_dim);
  double visible = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const int64_t w = c.is_sliding_layer(l) ? c.sliding_window : 0;
    for (int64_t t = 0; t < P; ++t) visible += double(w > 0 ? std::min(w, t + 1) : t + 1);
  }
  const double prefill_flops = e.matmul_flops_per_token() * double(P) + e.lm_head_flops() +
                               2.0 * double(c.num_attention_heads) * (qk + vd) * visible;
  const double prefill_gflops = double(a.batch) * prefill_flops / median(prefill_s) / 1e9;
  const double copy = bench::measure_copy_gb_s(a.threads, static_cast<size_t>(a.copy_mib) << 20, 5);
  const double read = bench::measure_read_gb_s(a.threads, static_cast<size_t>(a.copy_mib) << 21, 5);
  const double sgemm =
      sgemm_gflops(P, c.is_moe_layer(0) ? c.moe_intermediate_size : c.intermediate_size, c.hidden_size, a.threads);
  const double wb = e.weight_bytes_per_token();
  const double ceiling = copy * 1e9 / wb;
  const double ggml = kGgmlF32WeightGbS * 1e9 / wb;
  const double ggml_own = ggml_weight_gb_s(main_format) * 1e9 / wb;
  const double ggml_here_gb_s = ggml_ms.empty() ? 0 : ggml_probe->weight_bytes() / median(ggml_ms) / 1e6;
  const double ggml_here = ggml_here_gb_s * 1e9 / wb;
  nlohmann::json j = {
      {"model", a.model},
      {"threads", a.threads},
      {"prompt_tokens", P},
      {"gen_tokens", a.gen_tokens},
      {"repeats", a.repeats},
      {"mla_absorb", eo.mla_absorb},
      {"kv_type", a.kv_type},
      {"prefill_tokens_per_s", prefill_tps},
      {"decode_tokens_per_s", decode_tps},
      {"batch", a.batch},
      {"decode_steps_per_s", step_tps},
      {"peak_rss_mb", rss},
      {"weight_bytes", wb},
      {"copy_gb_s", copy},
      {"decode_ceiling_tokens_per_s", ceiling},
      {"decode_fraction_of_ceiling", step_tps / ceiling},
      {"read_gb_s", read},
      {"decode_fraction_of_read_ceiling", step_tps * wb / 1e9 / read},
      {"decode_weight_gb_s", step_tps * wb / 1e9},
      {"ggml_f32_implied_tokens_per_s", ggml},
      {"decode_vs_ggml_f32_implied", step_tps / ggml},
      {"weight_format", std::string(weight_format_name(main_format))},
      {"cpu_kernels", kernels::cpu_kernels_name()},
      {"ggml_implied_tokens_per_s", ggml_own > 0 ? nlohmann::json(ggml_own) : nlohmann::json()},
      {"decode_vs_ggml_implied", ggml_own > 0 ? nlohmann::json(step_tps / ggml_own) : nlohmann::json()},
      {"ggml_variant", ggml_lib ? nlohmann::json(ggml_lib->variant()) : nlohmann::json()},
      {"ggml_measured_weight_gb_s", ggml_here > 0 ? nlohmann::json(ggml_here_gb_s) : nlohmann::json()},
      {"ggml_measured_implied_tokens_per_s", ggml_here > 0 ? nlohmann::json(ggml_here) : nlohmann::json()},
      {"decode_vs_ggml_measured", ggml_here > 0 ? nlohmann::json(step_tps / ggml_here) : nlohmann::json()},
      {"sgemm_gflops", sgemm},
      {"prefill_gflops", prefill_gflops},
      {"prefill_fraction_of_sgemm", prefill_gflops / sgemm}};
  if (json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf(
        "bench generate %s: prefill %.1f tok/s (%.1f GFLOP/s, %.0f%% of sgemm %.1f), decode %.2f tok/s (%.0f%% of "
        "the %.2f tok/s ceiling at %.1f GB/s copy, %.0f%% of %.1f GB/s read-only; %.2fx the ggml f32-implied %.2f",
        a.model.c_str(), prefill_tps, prefill_gflops, 100 * prefill_gflops / sgemm, sgemm, step_tps,
        100 * step_tps / ceiling, ceiling, copy, 100 * step_tps * wb / 1e9 / read, read, step_tps / ggml, ggml);
    if (ggml_own > 0 && main_format != WeightFormat::F32)
      std::printf(", %.2fx the ggml %s-implied %.2f", step_tps / ggml_own,
                  std::string(weight_format_name(main_format)).c_str(), ggml_own);
    if (ggml_here > 0)
      std::printf("; %.2fx the %.2f tok/s ggml's %s kernel implies here, %.1f GB/s with %s", step_tps / ggml_here,
                  ggml_here, std::string(weight_format_name(main_format)).c_str(), ggml_here_gb_s,
                  ggml_lib->variant().c_str());
    std::printf(")");
    if (a.batch > 1)
      std::printf(" for each of %lld sequences decoded together: %.2f tok/s in all", static_cast<long long>(a.batch),
                  decode_tps);
    std::printf(
        ", %.1f MB weights/token (mostly %s), KV cache %s, peak RSS %.0f MB, %d threads, %s kernels, median of %d\n",
        wb / 1e6, std::string(weight_format_name(main_format)).c_str(), a.kv_type.c_str(), rss, a.threads,
        kernels::cpu_kernels_name(), a.repeats);
  }
  return kOk;
}

}  // namespace

void add_bench_generate_command(CLI::App* bench, Context& ctx) {
  auto a = std::make_shared<Args>();
  CLI::App* g = bench->add_subcommand(
      "generate", "prefill and decode tokens/s of the inference engine, against copy bandwidth and sgemm");
  g->add_option("--model", a->model, "model directory (config.json + model.safetensors)")->required();
  g->add_option("--prompt-tokens", a->prompt_tokens, "random prompt ids")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))
      ->capture_default_str();
  g->add_option("--gen-tokens", a->gen_tokens, "greedy decode steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))
      ->capture_default_str();
  g->add_option("--threads", a->threads, "threads")->check(CLI::Range(1, 1024))->capture_default_str();
  g->add_option("--repeats", a->repeats, "timed runs; medians reported")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  g->add_option("--batch", a->batch,
                "sequences decoded together (each prefilled with the prompt first); decode_tokens_per_s counts all "
                "of them, the ceilings and ggml ratios are per step")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}))
      ->capture_default_str();
  g->add_option("--seed", a->seed, "prompt ids seed")->capture_default_str();
  g->add_option("--copy-mib", a->copy_mib, "size of each copy-probe array")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  add_kv_type_option(g, a->kv_type);
  g->add_option("--ggml", a->ggml_dir,
                "directory of a prebuilt ggml (libggml-base.so, libggml-cpu-*.so): also measure the decode rate ggml's "
                "own kernel implies on this machine (ggml_measured_* in the JSON)");
  g->add_flag("--no-absorb", a->no_absorb, "decode MLA layers by decompressing K/V (default: absorbed form)");
  g->add_flag("--json", ctx.json,
              "one JSON object: prefill_tokens_per_s, decode_tokens_per_s, peak_rss_mb, weight_bytes, copy_gb_s, ...");
  g->callback([&ctx, a] { ctx.exit_code = run_bench_generate(*a, ctx.json); });
}

}  // namespace lmforge::cli
