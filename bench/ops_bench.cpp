// Google Benchmark cases for the engine's hot kernels: gemm at train-dense shapes, fused attention at T=1024,
// rmsnorm and the AdamW step. Threads: the process pool ($LMFORGE_THREADS, default all cores; OpenBLAS stays
// single-threaded). Counters: FLOPS (per second) for compute-bound cases, bytes_per_second for memory-bound ones.
//
//   ./build/bin/ops_bench --benchmark_min_time=0.5 --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/thread_pool.h"

namespace k = lmforge::kernels::cpu;

namespace {

std::vector<float> random_vec(size_t n, float lo = -1.0f, float hi = 1.0f, unsigned seed = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// gemm(ta, tb, M, N, K) as ops::matmul issues it. Args: M, N, K, ta, tb.
void BM_gemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const bool ta = state.range(3) != 0, tb = state.range(4) != 0;
  auto a = random_vec(size_t(M * K), -1, 1, 1), b = random_vec(size_t(K * N), -1, 1, 2);
  std::vector<float> c(size_t(M * N));
  for (auto _ : state) {
    k::gemm<float>(ta, tb, M, N, K, 1.0f, a.data(), ta ? M : K, b.data(), tb ? K : N, 0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["FLOPS"] =
      benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
// train-dense (2,048 tokens): FFN up forward, its dX and dW, LM head forward.
BENCHMARK(BM_gemm)
    ->ArgNames({"M", "N", "K", "ta", "tb"})
    ->Args({2048, 1408, 512, 0, 1})
    ->Args({2048, 512, 1408, 0, 0})
    ->Args({1408, 512, 2048, 1, 0})
    ->Args({2048, 8192, 512, 0, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Causal attention, B=1, 8 heads of 64. Arg: T; second arg 1 = forward + backward.
void BM_attention(benchmark::State& state) {
  const int64_t T = state.range(0), H = 8, D = 64;
  const bool backward = state.range(1) != 0;
  k::AttentionDims d;
  d.B = 1, d.Tq = T, d.Tk = T, d.Hq = H, d.Hkv = H, d.Dk = D, d.Dv = D, d.causal = true;
  d.scale = 1.0 / std::sqrt(double(D));
  const size_t n = size_t(T * H * D);
  auto q = random_vec(n, -1, 1, 1), kk = random_vec(n, -1, 1, 2), v = random_vec(n, -1, 1, 3);
  auto dout = random_vec(n, -1, 1, 4);
  std::vector<float> out(n), lse(size_t(H * T)), dq(n), dk(n), dv(n);
  for (auto _ : state) {
    k::attention<float>(d, q.data(), kk.data(), v.data(), out.data(), lse.data());
    if (backward)
      k::attention_backward<float>(d, q.data(), kk.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(),
                                   dk.data(), dv.data());
    benchmark::DoNotOptimize(out.data());
  }
  // Useful causal FLOPs: T(T+1)·D per product per head; 2 products forward, 4 backward.
  const double flops = (backward ? 6.0 : 2.0) * double(T) * (T + 1) * D * H;
  state.counters["FLOPS"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_attention)
    ->ArgNames({"T", "bwd"})
    ->Args({1024, 0})
    ->Args({1024, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// RMSNorm over [rows, d]. Args: rows, d, backward. Bytes: fwd reads x, writes y (2 R d floats); bwd reads dy, x,
// writes dx (3 R d floats); the per-row and per-column vectors are ignored.
void BM_rmsnorm(benchmark::State& state) {
  const int64_t R = state.range(0), d = state.range(1);
  const bool backward = state.range(2) != 0;
  auto x = random_vec(size_t(R * d), -1, 1, 1), w = random_vec(size_t(d), 0.5f, 1.5f, 2);
  auto dy = random_vec(size_t(R * d), -1, 1, 3);
  std::vector<float> y(static_cast<size_t>(R * d)), rstd(static_cast<size_t>(R)), dx(static_cast<size_t>(R * d)),
      dw(static_cast<size_t>(d));
  k::rmsnorm<float>(x.data(), w.data(), y.data(), rstd.data(), R, d, 1e-5);
  for (auto _ : state) {
    if (backward)
      k::rmsnorm_backward<float>(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), R, d);
    else
      k::rmsnorm<float>(x.data(), w.data(), y.data(), rstd.data(), R, d, 1e-5);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * (backward ? 3 : 2) * R * d * int64_t(sizeof(float)));
}
BENCHMARK(BM_rmsnorm)
    ->ArgNames({"rows", "d", "bwd"})
    ->Args({2048, 512, 0})
    ->Args({2048, 512, 1})
    ->Args({2048, 1024, 0})
    ->Args({2048, 1024, 1})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// One AdamW step over n parameters (train-dense: 27,662,848). Bytes: read p, g, m, v; write p, m, v.
void BM_adamw(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto p = random_vec(size_t(n), -1, 1, 1), g = random_vec(size_t(n), -1, 1, 2);
  std::vector<float> m(size_t(n), 0.0f), v(size_t(n), 0.0f);
  int64_t step = 0;
  for (auto _ : state) {
    k::adamw<float>(p.data(), g.data(), m.data(), v.data(), n, 3e-4, 0.9, 0.95, 1e-8, 0.1, ++step);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * 7 * n * int64_t(sizeof(float)));
}
BENCHMARK(BM_adamw)->ArgNames({"n"})->Arg(27662848)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
