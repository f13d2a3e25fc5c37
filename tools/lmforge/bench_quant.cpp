// `lmforge bench quant`: the quantized weight products (weight_matmul) at decode and prefill shapes, batches of them
// timed interleaved with a STREAM-like copy probe that moves the same number of bytes, so the figure that matters --
// effective weight bandwidth as a fraction of copy bandwidth -- sees the same machine noise on both sides. The
// ggml reference times (BENCHMARKS.md: test-backend-ops, 2 threads, copy bandwidth 45 GB/s on that machine) are
// scaled by the same fraction so runs on faster or slower machines compare. With --ggml DIR, ggml's own kernels
// (a prebuilt library, ggml_ref.h) run the same product on this machine, interleaved with ours and the copy.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_ops.h"
#include "ggml_ref.h"
#include "lmforge/commands.h"
#include "lmforge/core/error.h"
#include "lmforge/core/weight_matrix.h"
#include "lmforge/kernels/cpu_features.h"
#include "lmforge/kernels/thread_pool.h"

#if LMF_HAVE_X86
#include <immintrin.h>
#endif

namespace lmforge::cli {

namespace {

constexpr double kRefCopyGbps = 45.0;  // BENCHMARKS.md, the machine ggml's figures were measured on

struct QuantBenchOptions {
  int threads = 2;
  int repeats = 15;
  int64_t m = 4096, k = 14336, prefill_n = 64;
  bool quick = false;
  std::string formats = "f32,f16,bf16,q8_0,q4_0,q4_g128,q4_g128_asym,int8,q4_K,q5_K,q6_K";
  std::string ggml_dir;  // --ggml: time ggml's kernels here too
};

double ggml_ms(WeightFormat f) {  // m=4096 k=14336 n=1, BENCHMARKS.md
  switch (f) {
    case WeightFormat::F32:
      return 8.86;
    case WeightFormat::F16:
      return 4.87;
    case WeightFormat::Q8_0:
      return 2.97;
    case WeightFormat::Q4_0:
      return 2.46;
    default:
      return 0;
  }
}

// Copies `bytes` (half read, half written: STREAM's count) cycling through two 256 MiB arrays, split over the pool.
class CopyProbe {
 public:
  CopyProbe() : src_(kFloats, 1.0f), dst_(kFloats, 2.0f) {}
  void copy(double bytes) {
    int64_t left = static_cast<int64_t>(bytes / 8);
    while (left > 0) {
      if (off_ >= kFloats) off_ = 0;
      const int64_t take = std::min(left, kFloats - off_);
      float* d = dst_.data() + off_;
      const float* s = src_.data() + off_;
      bench::stream_copy(d, s, take);
      off_ += take;
      left -= take;
    }
  }

 private:
  static constexpr int64_t kFloats = int64_t{64} << 20;
  std::vector<float> src_, dst_;
  int64_t off_ = 0;
};

using bench::median;
using bench::time_ms;

struct Row {
  std::string format, shape;
  double ms = 0, copy_ms = 0, bytes = 0, gbps = 0, copy_gbps = 0, frac = 0;
  double ggml_ms = 0, ggml_frac = 0, vs_ggml = 0;  // vs_ggml: our fraction of copy / ggml's
  // --ggml: ggml's kernel on this machine, interleaved with ours; vs = its ms / ours (above 1: we are faster).
  double ggml_here_ms = 0, vs_ggml_here = 0, ggml_here_rel_diff = 0;
};

Row run_case(const QuantBenchOptions& o, CopyProbe& probe, bench::Ggml* ggml, WeightFormat f, int64_t n) {
  const int64_t m = o.m, k = o.k;
  // Enough copies of the weight that each call reads it from DRAM (the L3 is 32 MiB).
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> wv(static_cast<size_t>(m * k));
  for (float& v : wv) v = nd(rng);
  const Tensor w = Tensor::from_vector(wv, {m, k});
  wv.clear();
  wv.shrink_to_fit();
  // In the layout the engine runs (q8_0 / q4_0 interleaved by four rows; the other formats as quantized).
  // Distinct bytes each: an f32 "quantization" shares the tensor it is given, so it gets a clone.
  const auto make = [&] {
    return WeightMatrix::quantize(f == WeightFormat::F32 ? w.clone() : w, f).interleave_rows4();
  };
  std::vector<WeightMatrix> mats;
  mats.push_back(make());
  const double bytes = static_cast<double>(mats[0].nbytes());
  while (static_cast<double>(mats.size()) * bytes < 96.0 * (1 << 20)) mats.push_back(make());
  std::vector<float> x(static_cast<size_t>(n * k)), y(static_cast<size_t>(n * m));
  for (float& v : x) v = nd(rng) * 50.0f;
  size_t next = 0;
  const auto ours = [&] {
    weight_matmul(mats[next], x.data(), n, y.data());
    next = (next + 1) % mats.size();
  };
  // ggml's side: the same weights in the GGUF layout, as many distinct copies as ours.
  std::unique_ptr<bench::GgmlMatmul> gm;
  if (ggml != nullptr && bench::Ggml::supports(f))
    gm = std::make_unique<bench::GgmlMatmul>(*ggml, WeightMatrix::quantize(w, f), static_cast<int>(mats.size()), n,
                                             x.data(), o.threads);
  const auto ggml_ms_once = [&] {
    // Our pool's workers spin briefly after a job before they sleep: let them, so they do not share ggml's cores.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return gm->run_ms();
  };
  // Each sample times a batch of consecutive products, as ggml's graph runs them (and the engine: a decode step is
  // ~100 products back to back): products in >= 256 MiB of weights, at least 4. Timed one at a time, a 1 MiB
  // product read 16 GB/s against 32 in a batch, the difference being a start-up the engine does not pay.
  // Prefill products are long already: their batches shrink with the activation rows.
  const int batch =
      std::max<int>(1, static_cast<int>(std::min<double>(1024, std::max(4.0, std::ceil(256.0 * (1 << 20) / bytes)))) /
                           static_cast<int>(n));
  for (int i = 0; i < 3; ++i) {  // warm-up: page faults, pool wake-up
    ours();
    probe.copy(bytes);
    if (gm && i == 0) ggml_ms_once();
  }
  std::vector<double> t_ours, t_copy, t_ggml;
  for (int r = 0; r < o.repeats; ++r) {
    t_ours.push_back(time_ms([&] {
                       for (int b = 0; b < batch; ++b) ours();
                     }) /
                     batch);
    t_copy.push_back(time_ms([&] { probe.copy(bytes * batch); }) / batch);
    if (gm) t_ggml.push_back(ggml_ms_once());
  }
  Row row;
  row.format = std::string(weight_format_name(f));
  row.shape = "m=" + std::to_string(m) + " k=" + std::to_string(k) + " n=" + std::to_string(n);
  row.ms = median(t_ours);
  row.copy_ms = median(t_copy);
  row.bytes = bytes;
  row.gbps = bytes / row.ms / 1e6;
  row.copy_gbps = bytes / row.copy_ms / 1e6;
  row.frac = row.gbps / row.copy_gbps;
  if (n == 1 && m == 4096 && k == 14336 && ggml_ms(f) > 0) {
    row.ggml_ms = ggml_ms(f);
    row.ggml_frac = bytes / row.ggml_ms / 1e6 / kRefCopyGbps;
    row.vs_ggml = row.frac / row.ggml_frac;
  }
  if (gm) {
    row.ggml_here_ms = median(t_ggml);
    row.vs_ggml_here = row.ggml_here_ms / row.ms;
    // The two computed the same product (ggml rounds activations to q8_0 for q8_0 / q4_0 weights, to f16 for f16):
    // a wrong type code or layout here would time something else.
    weight_matmul(mats[0], x.data(), n, y.data());
    const std::vector<float> yg = gm->output();
    double diff = 0, scale = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(yg[i] - y[i])));
      scale = std::max(scale, static_cast<double>(std::abs(y[i])));
    }
    row.ggml_here_rel_diff = scale > 0 ? diff / scale : diff;
    LMF_CHECK(row.ggml_here_rel_diff < 0.05, "bench quant: ggml's ", row.format, " product differs from ours by ",
              row.ggml_here_rel_diff, " of the largest output");
  }
  return row;
}

int run_bench_quant(const QuantBenchOptions& o, bool json) {
  std::vector<WeightFormat> formats;
  std::string list = o.formats;
  for (size_t p = 0; p <= list.size();) {
    const size_t e = std::min(list.find(',', p), list.size());
    const std::string name = list.substr(p, e - p);
    try {
      formats.push_back(parse_weight_format(name));
    } catch (const Error& err) {
      std::fprintf(stderr, "lmforge bench quant: --formats: %s\n", err.what());
      return kUsageError;
    }
    p = e + 1;
  }
  ThreadCountScope threads(o.threads);
  std::unique_ptr<bench::Ggml> ggml;
  if (!o.ggml_dir.empty()) {
    try {
      ggml = bench::Ggml::open(o.ggml_dir);
    } catch (const Error& err) {
      std::fprintf(stderr, "lmforge bench quant: %s\n", err.what());
      return kUsageError;
    }
  }
  CopyProbe probe;
  if (!json) {
    std::printf(
        "lmforge bench quant: weight_matmul, %s kernels, %d thread(s), median of %d, interleaved with a copy of the "
        "same bytes\n"
        "frac = our weight GB/s / copy GB/s; vs-ggml = frac / ggml's frac (its ms at %.0f GB/s copy, "
        "BENCHMARKS.md)\n\n",
        kernels::cpu_kernels_name(), o.threads, o.repeats, kRefCopyGbps);
    if (ggml)
      std::printf("here: ggml's own kernel on this machine (%s), interleaved; vs-here = its ms / ours\n\n",
                  ggml->variant().c_str());
    std::printf("%-13s %-24s %9s %9s %9s %7s %9s %8s", "format", "shape", "ms", "GB/s", "copyGB/s", "frac", "ggml ms",
                "vs-ggml");
    if (ggml) std::printf(" %9s %8s", "here ms", "vs-here");
    std::printf("\n");
  }
  for (int64_t n : {int64_t{1}, o.prefill_n}) {
    for (WeightFormat f : formats) {
      const Row r = run_case(o, probe, ggml.get(), f, n);
      if (json) {
        std::printf(
            "{\"format\":\"%s\",\"shape\":\"%s\",\"threads\":%d,\"repeats\":%d,\"ms\":%.4f,\"weight_bytes\":%.0f,"
            "\"gbps\":%.3f,\"copy_gbps\":%.3f,\"frac_of_copy\":%.4f,\"ggml_ms\":%.3f,\"ggml_frac_of_copy\":%.4f,"
            "\"vs_ggml\":%.4f,\"cpu_kernels\":\"%s\"",
            r.format.c_str(), r.shape.c_str(), o.threads, o.repeats, r.ms, r.bytes, r.gbps, r.copy_gbps, r.frac,
            r.ggml_ms, r.ggml_frac, r.vs_ggml, kernels::cpu_kernels_name());
        if (r.ggml_here_ms > 0)
          std::printf(
              ",\"ggml_variant\":\"%s\",\"ggml_measured_ms\":%.4f,\"vs_ggml_measured\":%.4f,"
              "\"ggml_rel_diff\":%.3g",
              ggml->variant().c_str(), r.ggml_here_ms, r.vs_ggml_here, r.ggml_here_rel_diff);
        std::printf("}\n");
      } else {
        std::printf("%-13s %-24s %9.3f %9.2f %9.2f %7.3f %9s %8s", r.format.c_str(), r.shape.c_str(), r.ms, r.gbps,
                    r.copy_gbps, r.frac, r.ggml_ms > 0 ? std::to_string(r.ggml_ms).substr(0, 5).c_str() : "-",
                    r.vs_ggml > 0 ? (std::to_string(r.vs_ggml).substr(0, 4) + "x").c_str() : "-");
        if (ggml) {
          if (r.ggml_here_ms > 0)
            std::printf(" %9.3f %7.2fx", r.ggml_here_ms, r.vs_ggml_here);
          else
            std::printf(" %9s %8s", "-", "-");
        }
        std::printf("\n");
      }
      std::fflush(stdout);
    }
  }
  return kOk;
}

}  // namespace

void add_bench_quant_command(CLI::App* bench, Context& ctx) {
  auto o = std::make_shared<QuantBenchOptions>();
  CLI::App* q = bench->add_subcommand(
      "quant", "quantized weight products (decode n=1 and prefill) against copy bandwidth and ggml's figures");
  q->add_option("--threads", o->threads, "threads")->check(CLI::Range(1, 1024))->capture_default_str();
  q->add_option("--repeats", o->repeats, "timed repetitions per side; median")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  q->add_option("--rows", o->m, "output features m")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  q->add_option("--cols", o->k, "input features k (a multiple of 128)")
      ->check(CLI::Range(128, 1 << 20))
      ->capture_default_str();
  q->add_option("--prefill", o->prefill_n, "activation rows of the prefill case")
      ->check(CLI::Range(2, 4096))
      ->capture_default_str();
  q->add_option("--formats", o->formats, "comma-separated weight formats")->capture_default_str();
  q->add_option("--ggml", o->ggml_dir,
                "directory of a prebuilt ggml (libggml-base.so, libggml-cpu-*.so): also time ggml's own kernel for "
                "each format it has, here, interleaved with ours");
  q->add_flag("--json", ctx.json, "one JSON object per row");
  q->callback([&ctx, o] {
    if (o->k % 128 != 0) {
      std::fprintf(stderr, "lmforge bench quant: --cols must be a multiple of 128, got %lld\n",
                   static_cast<long long>(o->k));
      ctx.exit_code = kUsageError;
      return;
    }
    ctx.exit_code = run_bench_quant(*o, ctx.json);
  });
}

}  // namespace lmforge::cli
