// ggml's own CPU matrix products, timed on this machine in the same run as ours (`bench quant --ggml DIR`,
// `bench generate --ggml DIR`). ggml is not a dependency: the library is loaded at run time from a directory that
// holds a prebuilt libggml-base.so and its CPU variants libggml-cpu-<arch>.so -- node-llama-cpp's, which
// scripts/install-deps.sh installs for the llama.cpp interop test under
// tests/reference/llamacpp/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64. The variant is picked as ggml's
// own loader picks it (the highest ggml_backend_score() on this CPU), and products run through
// ggml_graph_compute_with_ctx, as test-backend-ops' perf mode (BENCHMARKS.md's ggml rows) runs them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/core/weight_matrix.h"

namespace lmforge::bench {

class Ggml {
 public:
  // Loads the libraries from `dir`; throws lmforge::Error naming the directory and what is missing.
  static std::unique_ptr<Ggml> open(const std::string& dir);
  ~Ggml();
  Ggml(const Ggml&) = delete;
  Ggml& operator=(const Ggml&) = delete;

  const std::string& variant() const { return variant_; }  // e.g. "libggml-cpu-haswell.so"
  // Whether ggml has this weight format (f32, f16, bf16, q8_0, q4_0).
  static bool supports(WeightFormat f);

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  Ggml() = default;
  std::unique_ptr<Impl> impl_;
  std::string variant_;
};

// y[n, m] = x[n, k] · Wᵀ with ggml's mul_mat on `copies` distinct copies of one weight (so each product reads its
// weight from DRAM, as a decode step does), `ops` products to a graph so ggml's per-graph thread start-up is
// amortised as in test-backend-ops.
class GgmlMatmul {
 public:
  // `w` in the GGUF layout (not interleaved); x is [n, k] f32.
  GgmlMatmul(Ggml& g, const WeightMatrix& w, int copies, int64_t n, const float* x, int threads);
  ~GgmlMatmul();
  GgmlMatmul(const GgmlMatmul&) = delete;
  GgmlMatmul& operator=(const GgmlMatmul&) = delete;

  // Runs one graph of `ops` products (rotating over the copies) and returns the milliseconds per product.
  double run_ms();
  // The last product's output, [n, m].
  std::vector<float> output() const;
  int ops() const { return ops_; }

 private:
  Ggml& g_;
  void* ctx_ = nullptr;
  void* work_ctx_ = nullptr;
  void* graph_ = nullptr;
  void* last_ = nullptr;
  int64_t m_ = 0, n_ = 0;
  int ops_ = 0, threads_ = 1;
};

// ggml's decode-shaped product (n = 1) of a random m x k weight in format `f` on `threads` threads, its weights
// spread over copies totalling >= 96 MiB so each product reads DRAM: BENCHMARKS.md's ggml rows are its effective
// weight bandwidth at m = 4096, k = 14336 on that machine. `bench generate --ggml` samples it between its decode
// runs, so both see the same machine.
class GgmlDecodeProbe {
 public:
  GgmlDecodeProbe(Ggml& g, WeightFormat f, int threads, int64_t m = 4096, int64_t k = 14336);
  // One graph's milliseconds per product (after a 2 ms pause that lets lmforge's pool workers go to sleep).
  double sample_ms();
  double weight_bytes() const { return bytes_; }

 private:
  double bytes_ = 0;
  std::unique_ptr<GgmlMatmul> mm_;
};

}  // namespace lmforge::bench
