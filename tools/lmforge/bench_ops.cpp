// `lmforge bench ops`: each case times our kernel and its reference interleaved (ours, ref, ref, ours, ...), after
// an uncounted warm-up of each, and reports both medians. References:
//   matmul     raw cblas_sgemm on the same shapes, OpenBLAS threaded at the same thread count (our gemm keeps
//              OpenBLAS single-threaded and splits panels over our pool).
//   attention  what PyTorch's manual attention does: materialised [H, T, T] scores by per-head gemm (OpenBLAS
//              threaded), causal mask fill, row softmax, P V; backward with materialised P and dP.
//   the rest   a STREAM-like copy moving the same number of bytes, so ratio = fraction of copy bandwidth.
// Memory-bound cases rotate over enough copies of their tensors (256 MiB, 8x the 32 MiB L3) that every repetition
// reads from DRAM, and the copy probe cycles through the same footprint.
#include "bench_ops.h"

#include <cblas.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <thread>

#include "lmforge/core/error.h"
#include "lmforge/core/half.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/cpu_features.h"
#include "lmforge/kernels/thread_pool.h"

#if LMF_HAVE_X86
#include <immintrin.h>
#endif

// OpenBLAS (pthread build) stops its worker threads; the next openblas_set_num_threads starts them again. Weak:
// absent from other BLAS builds, where parking is skipped.
extern "C" __attribute__((weak)) int blas_thread_shutdown_(void);

namespace lmforge::bench {

namespace {

namespace k = kernels::cpu;

constexpr double kMiB = 1024.0 * 1024.0;
// Working sets of memory-bound cases (ours and the copy probe alike) are rotated over at least this many bytes,
// 8x the 32 MiB L3, so each pass reads from DRAM: with 3x, a fair part still hit the L3 here. --quick: 64 MiB.
constexpr double kColdBytes = 256 * kMiB;
constexpr double kColdBytesQuick = 32 * kMiB;  // --quick trades accuracy for time (CI, demo)
// A timed sample lasts at least this long: shorter calls are timed in batches of back-to-back calls (as kernels
// run in a training step), which keeps timer and scheduling noise out of the median. --quick: 2 ms.
constexpr double kMinSampleMs = 5.0;
constexpr double kMinSampleMsQuick = 2.0;

// ---- buffers ----

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

// 64-byte aligned float array, filled on creation (so its pages are touched before any timing).
class Buf {
 public:
  Buf() = default;
  explicit Buf(size_t n, uint64_t seed = 0, float lo = -1.0f, float hi = 1.0f) : n_(n) {
    const size_t bytes = (std::max<size_t>(n, 1) * sizeof(float) + 63) / 64 * 64;
    p_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!p_) throw std::bad_alloc();
    fill(seed, lo, hi);
  }
  float* data() const { return p_.get(); }
  size_t size() const { return n_; }

  // Uniform in [lo, hi) from a per-block xorshift stream; parallel so large arrays fill quickly.
  void fill(uint64_t seed, float lo, float hi) {
    float* p = p_.get();
    parallel_for(static_cast<int64_t>(n_), 1 << 16, [&](int64_t b, int64_t e) {
      uint64_t s = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(b) * 0xD1B54A32D192ED03ull);
      s |= 1;
      for (int64_t i = b; i < e; ++i) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = lo + (hi - lo) * static_cast<float>(s >> 40) * (1.0f / 16777216.0f);
      }
    });
  }

 private:
  size_t n_ = 0;
  std::unique_ptr<float[], FreeDeleter> p_;
};

// ---- timing ----

using Clock = std::chrono::steady_clock;

struct Medians {
  double ours = 0, ref = 0;
};

// Two pools share two cores here: ours, and OpenBLAS's own threads in the references. Each spins after a job
// before it sleeps -- our workers ~0.5 ms; OpenBLAS's (sched_yield) for ~2^28 cycles, about 0.1 s, long enough to
// take a core from our next kernel and halve it (measured: our gemm at 95 instead of 210 GFLOP/s right after a
// threaded cblas_sgemm). So around a reference that uses OpenBLAS threads the machine is left to settle: its
// OpenBLAS threads are shut down after it (started again, outside the timed region, before the next one) and our
// workers are left to go to sleep before it.
void park_blas_threads() {
  if (blas_thread_shutdown_) blas_thread_shutdown_();
}
void settle() {
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

// Brings our pool to the state it has in a run of back-to-back kernels -- every worker awake, on its own core --
// before a timed call. Needed after a sleep: the wake-up can land the worker on the caller's core, where it stays
// (spinning, taking the caller's time slices) until the scheduler moves it, ~10-20 ms later (measured: a 4 MiB
// copy at 1-2 ms instead of 0.25 ms for the first dozen calls). Spins short parallel jobs until the work really
// runs on min(threads, cores) distinct CPUs, or 100 ms have passed.
void wake_pool() {
  const int want = std::min<int>(ThreadPool::global().num_threads(), std::max(1u, std::thread::hardware_concurrency()));
  if (want <= 1) return;
  const auto deadline = Clock::now() + std::chrono::milliseconds(100);
  std::vector<int> cpu(static_cast<size_t>(want));
  do {
    parallel_for(want, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const auto until = Clock::now() + std::chrono::microseconds(50);
        while (Clock::now() < until) {
        }
        cpu[static_cast<size_t>(i)] = sched_getcpu();
      }
    });
    std::vector<int> distinct = cpu;
    std::sort(distinct.begin(), distinct.end());
    if (std::unique(distinct.begin(), distinct.end()) - distinct.begin() == want) return;
  } while (Clock::now() < deadline);
}

// What a reference needs around it.
struct RefKind {
  int blas_threads = 0;   // > 0: OpenBLAS gets this many threads for the call, then is parked
  bool uses_pool = true;  // the reference itself splits work over our pool (wake it first)
};

int calls_per_sample(double one_call_ms, double min_sample_ms) {
  return std::clamp(static_cast<int>(std::ceil(min_sample_ms / std::max(one_call_ms, 1e-4))), 1, 100000);
}

// Interleaved repetitions, the order alternating so neither side always runs right after the other. Switching
// thread counts, parking and waking happen outside the timed region.
template <typename Ours, typename Ref>
Medians side_by_side(int repeats, double min_sample_ms, RefKind kind, Ours&& ours, Ref&& ref) {
  const bool blas = kind.blas_threads > 0;
  // Each returns the time of one call, averaged over a sample of `calls` back-to-back calls.
  auto timed_ours = [&](int calls) {
    if (blas) wake_pool();
    const double ms = time_ms([&] {
                        for (int c = 0; c < calls; ++c) ours();
                      }) /
                      calls;
    if (blas) settle();
    return ms;
  };
  auto timed_ref = [&](int calls) {
    if (blas) {
      k::blas_set_threads(kind.blas_threads);
      settle();
      if (kind.uses_pool) wake_pool();
    }
    const double ms = time_ms([&] {
                        for (int c = 0; c < calls; ++c) ref();
                      }) /
                      calls;
    if (blas) {
      k::blas_set_threads(1);
      park_blas_threads();
      settle();
    }
    return ms;
  };
  wake_pool();
  // Warm-up (not counted) and calibration: how many back-to-back calls make one sample; then one whole sample of
  // each side, also not counted (the first passes over fresh buffers ran slower here).
  const int n_ours = calls_per_sample(timed_ours(1), min_sample_ms);
  const int n_ref = calls_per_sample(timed_ref(1), min_sample_ms);
  timed_ours(n_ours);
  timed_ref(n_ref);
  std::vector<double> a, b;
  for (int i = 0; i < repeats; ++i) {
    if (i % 2 == 0) {
      a.push_back(timed_ours(n_ours));
      b.push_back(timed_ref(n_ref));
    } else {
      b.push_back(timed_ref(n_ref));
      a.push_back(timed_ours(n_ours));
    }
  }
  if (std::getenv("LMFORGE_BENCH_SAMPLES")) {  // debugging aid: every sample, ms per call
    std::fprintf(stderr, "  ours x%d:", n_ours);
    for (double x : a) std::fprintf(stderr, " %.3f", x);
    std::fprintf(stderr, "\n  ref  x%d:", n_ref);
    for (double x : b) std::fprintf(stderr, " %.3f", x);
    std::fprintf(stderr, "\n");
  }
  return {median(a), median(b)};
}

// One side alone (the probe rows). uses_pool: wake our pool first; otherwise leave it asleep.
template <typename F>
double repeated(int repeats, double min_sample_ms, bool uses_pool, F&& f) {
  if (uses_pool)
    wake_pool();
  else
    settle();
  const int calls = calls_per_sample(time_ms(f), min_sample_ms);
  for (int c = 0; c < calls; ++c) f();
  std::vector<double> a;
  a.reserve(static_cast<size_t>(repeats));
  for (int i = 0; i < repeats; ++i)
    a.push_back(time_ms([&] {
                  for (int c = 0; c < calls; ++c) f();
                }) /
                calls);
  return median(a);
}

// ---- copy-bandwidth probe ----

#if LMF_HAVE_X86
LMF_TARGET_AVX2 void copy_avx2(float* __restrict d, const float* __restrict s, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 a = _mm256_loadu_ps(s + i), b = _mm256_loadu_ps(s + i + 8);
    const __m256 c = _mm256_loadu_ps(s + i + 16), e = _mm256_loadu_ps(s + i + 24);
    _mm256_storeu_ps(d + i, a);
    _mm256_storeu_ps(d + i + 8, b);
    _mm256_storeu_ps(d + i + 16, c);
    _mm256_storeu_ps(d + i + 24, e);
  }
  for (; i < n; ++i) d[i] = s[i];
}
// Read-only pass, the decode products' access pattern without their arithmetic: the range cut into four parts read
// in lockstep, each prefetched 2 KiB ahead (one sequential stream per core reads 20-30% less here; qgemm.cpp).
LMF_TARGET_AVX2 float read_avx2(const float* s, int64_t n) {
  constexpr int kParts = 4;
  const int64_t part = n / kParts / 32 * 32;
  __m256 acc[kParts];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t i = 0; i < part; i += 16)
    for (int k = 0; k < kParts; ++k) {
      const float* p = s + k * part + i;
      _mm_prefetch(reinterpret_cast<const char*>(p) + 2048, _MM_HINT_T0);
      acc[k] = _mm256_add_ps(acc[k], _mm256_add_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)));
    }
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  float r = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
  for (int64_t i = kParts * part; i < n; ++i) r += s[i];
  return r;
}
#endif
float read_plain(const float* s, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += s[i + j];
  float r = 0;
  for (float v : acc) r += v;
  for (; i < n; ++i) r += s[i];
  return r;
}
#if LMF_HAVE_X86
void copy_sse(float* __restrict d, const float* __restrict s, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128 a = _mm_loadu_ps(s + i), b = _mm_loadu_ps(s + i + 4);
    _mm_storeu_ps(d + i, a);
    _mm_storeu_ps(d + i + 4, b);
  }
  for (; i < n; ++i) d[i] = s[i];
}
#endif

}  // namespace

// STREAM "Copy" (a[i] = b[i]) with ordinary stores, as our kernels write: no non-temporal stores, which would
// skip the write-allocate read that every one of our kernels pays. Split over the pool like our kernels.
void stream_copy(float* d, const float* s, int64_t n) {
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
#if LMF_HAVE_X86
    if (kernels::cpu_has_avx2())
      copy_avx2(d + b, s + b, e - b);
    else
      copy_sse(d + b, s + b, e - b);
#else
    std::memcpy(d + b, s + b, static_cast<size_t>(e - b) * sizeof(float));
#endif
  });
}

namespace {

// Two arrays far larger than the L3. copy_bytes(n, window) moves n bytes (n/2 read, n/2 written, STREAM's
// convention) starting where the last call stopped, cycling through the first `window` bytes of each array, so
// consecutive calls never find their data in cache. The window matches the footprint of the op it is compared
// with (measured here: the same small copies ran ~2x slower cycling through 1 GiB than through 256 MiB, for
// reasons of address translation rather than bandwidth).
class CopyProbe {
 public:
  explicit CopyProbe(size_t bytes_per_array)
      : src_(bytes_per_array / sizeof(float), 7), dst_(bytes_per_array / sizeof(float), 8) {}
  double array_bytes() const { return static_cast<double>(src_.size()) * sizeof(float); }

  void copy_bytes(double moved, double window = 0) {
    int64_t left = static_cast<int64_t>(moved / (2 * sizeof(float)));
    const int64_t size = static_cast<int64_t>(src_.size());
    const int64_t n = window > 0 ? std::clamp<int64_t>(static_cast<int64_t>(window / sizeof(float)), 1, size) : size;
    while (left > 0) {
      if (off_ >= n) off_ = 0;
      const int64_t take = std::min(left, n - off_);
      stream_copy(dst_.data() + off_, src_.data() + off_, take);
      off_ += take;
      left -= take;
    }
  }

 private:
  Buf src_, dst_;
  int64_t off_ = 0;
};

// ---- shared state of one run ----

struct Env {
  OpsOptions opt;
  std::unique_ptr<CopyProbe> probe;
  CopyProbe& copy_probe() {
    if (!probe)
      probe = std::make_unique<CopyProbe>(static_cast<size_t>((opt.quick ? 64 : 512) * kMiB));  // see copy_probe_shape
    return *probe;
  }
  double cold_bytes() const { return opt.quick ? kColdBytesQuick : kColdBytes; }
  double min_sample_ms() const { return opt.quick ? kMinSampleMsQuick : kMinSampleMs; }
};

OpResult make_result(const Env& env, std::string op, std::string shape, Medians m, const char* unit, double rate,
                     std::string reference) {
  OpResult r;
  r.op = std::move(op);
  r.shape = std::move(shape);
  r.threads = env.opt.threads;
  r.repeats = env.opt.repeats;
  r.ms = m.ours;
  r.ref_ms = m.ref;
  r.unit = unit;
  r.rate = rate;
  r.reference = std::move(reference);
  r.ratio = m.ours > 0 ? m.ref / m.ours : 0;
  return r;
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// ---- probes ----

std::string copy_probe_shape(const OpsOptions& opt) {
  return fmt("2 x %d MiB arrays, a[i] = b[i]", opt.quick ? 64 : 512);
}

OpResult copy_probe_case(Env& env) {
  CopyProbe& p = env.copy_probe();
  const double moved = 2 * p.array_bytes();
  const double ms = repeated(env.opt.repeats, env.min_sample_ms(), true, [&] { p.copy_bytes(moved); });
  return make_result(env, "copy", copy_probe_shape(env.opt), {ms, ms}, "gbps", moved / ms / 1e6, "probe");
}

constexpr const char* kSgemmShape = "M=N=K=2048, raw OpenBLAS, its own threads";

OpResult sgemm_probe_case(Env& env) {
  const int n = 2048;
  Buf a(size_t(n) * n, 1), b(size_t(n) * n, 2), c(size_t(n) * n, 3);
  k::blas_set_threads(env.opt.threads);
  const double ms = repeated(env.opt.repeats, env.min_sample_ms(), false, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  });
  k::blas_set_threads(1);
  park_blas_threads();
  settle();
  return make_result(env, "sgemm-2048", kSgemmShape, {ms, ms}, "gflops", 2.0 * n * n * n / ms / 1e6, "probe");
}

// ---- matmul ----

std::string gemm_dims(int64_t M, int64_t N, int64_t K) {
  return fmt(" (M=%lld N=%lld K=%lld)", (long long)M, (long long)N, (long long)K);
}

// One product C[M,N] = op(A) op(B) exactly as the engine issues it (ops::matmul forward and backward).
struct GemmShape {
  bool ta, tb;
  int64_t M, N, K;
};

// `weight_sets` > 1 rotates B over that many copies (decode: the weights of a real model never sit in cache).
OpResult matmul_case(Env& env, const std::string& op, const std::string& shape, GemmShape g, int weight_sets = 1,
                     bool report_gbps = false) {
  Buf a(size_t(g.M * g.K), 11), c(size_t(g.M * g.N), 13);
  std::vector<Buf> bs;
  bs.reserve(static_cast<size_t>(weight_sets));
  for (int i = 0; i < weight_sets; ++i) bs.emplace_back(size_t(g.K * g.N), 12 + 100 * i);
  const int64_t lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N, ldc = g.N;
  size_t ours_i = 0, ref_i = 0;
  const Medians m = side_by_side(
      env.opt.repeats, env.min_sample_ms(), RefKind{env.opt.threads, false},
      [&] {
        const float* b = bs[ours_i++ % bs.size()].data();
        k::gemm<float>(g.ta, g.tb, g.M, g.N, g.K, 1.0f, a.data(), lda, b, ldb, 0.0f, c.data(), ldc);
      },
      [&] {
        const float* b = bs[ref_i++ % bs.size()].data();
        cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, int(g.M),
                    int(g.N), int(g.K), 1.0f, a.data(), int(lda), b, int(ldb), 0.0f, c.data(), int(ldc));
      });
  if (report_gbps) {
    // Bytes: A, B read; C written.
    const double bytes = 4.0 * (g.M * g.K + g.K * g.N + g.M * g.N);
    return make_result(env, op, shape, m, "gbps", bytes / m.ours / 1e6, "openblas-threaded");
  }
  return make_result(env, op, shape, m, "gflops", 2.0 * g.M * g.N * g.K / m.ours / 1e6, "openblas-threaded");
}

struct Linear {
  const char* name;
  int64_t N, K;  // weight [N, K]: y = x W^T
};

void add_matmul_cases(std::vector<OpCase>& out, const std::shared_ptr<Env>& env) {
  const bool quick = env->opt.quick;
  // train-dense: 2,048 tokens a step; d 512, q/k/v/o 512 x 512 (8 heads x 64, no GQA), SwiGLU 1408, vocab 8192.
  const int64_t Mt = quick ? 256 : 2048;
  std::vector<Linear> train = {
      {"attn-proj", 512, 512}, {"ffn-up", 1408, 512}, {"ffn-down", 512, 1408}, {"lm-head", 8192, 512}};
  if (quick) train = {{"ffn-up", 1408, 512}, {"lm-head", 8192, 512}};
  for (const Linear& l : train) {
    const std::string tag = std::string("train-dense ") + l.name;
    struct Product {
      const char* op;
      GemmShape g;
    };
    const Product products[] = {
        {"matmul-fwd", {false, true, Mt, l.N, l.K}},      // Y = X W^T
        {"matmul-bwd-dx", {false, false, Mt, l.K, l.N}},  // dX = dY W
        {"matmul-bwd-dw", {true, false, l.N, l.K, Mt}},   // dW = dY^T X
    };
    for (const Product& p : products) {
      const std::string shape = tag + gemm_dims(p.g.M, p.g.N, p.g.K);
      out.push_back(
          {p.op, shape, [env, op = std::string(p.op), shape, g = p.g] { return matmul_case(*env, op, shape, g); }});
    }
  }
  // infer-250m prefill (prompt of 512 tokens): d 1024, q/o 1024 x 1024, k/v 256 x 1024 (4 KV heads of 64),
  // SwiGLU 2816, vocab 32000. Forward only: this config is served, not trained.
  const int64_t Mp = quick ? 64 : 512;
  std::vector<Linear> infer = {{"q-o-proj", 1024, 1024},
                               {"kv-proj", 256, 1024},
                               {"ffn-up", 2816, 1024},
                               {"ffn-down", 1024, 2816},
                               {"lm-head", 32000, 1024}};
  if (quick) infer = {{"ffn-up", 2816, 1024}};
  for (const Linear& l : infer) {
    const std::string shape = std::string("infer-250m prefill ") + l.name + gemm_dims(Mp, l.N, l.K);
    out.push_back({"matmul-fwd", shape, [env, shape, g = GemmShape{false, true, Mp, l.N, l.K}] {
                     return matmul_case(*env, "matmul-fwd", shape, g);
                   }});
  }
  // Decode (one token): memory-bound, so GB/s of weights streamed from DRAM (rotated past the L3).
  std::vector<Linear> decode = {{"ffn-up", 2816, 1024}, {"lm-head", 32000, 1024}};
  if (quick) decode = {{"ffn-up", 2816, 1024}};
  for (const Linear& l : decode) {
    const std::string shape = std::string("infer-250m decode ") + l.name + gemm_dims(1, l.N, l.K);
    const int sets = std::clamp(int(std::ceil(env->cold_bytes() / (4.0 * l.N * l.K))), 1, 32);
    out.push_back({"matmul-decode", shape, [env, shape, sets, g = GemmShape{false, true, 1, l.N, l.K}] {
                     return matmul_case(*env, "matmul-decode", shape, g, sets, true);
                   }});
  }
}

// ---- attention ----

struct AttnData {
  static constexpr int64_t H = 8, D = 64;
  int64_t T;
  Buf q, k, v, out, lse, dout, dq, dk, dv;
  Buf P, dP;  // reference only: [H, T, T]
  explicit AttnData(int64_t t)
      : T(t),
        q(size_t(T * H * D), 21),
        k(size_t(T * H * D), 22),
        v(size_t(T * H * D), 23),
        out(size_t(T * H * D), 24),
        lse(size_t(H * T), 25),
        dout(size_t(T * H * D), 26),
        dq(size_t(T * H * D), 27),
        dk(size_t(T * H * D), 28),
        dv(size_t(T * H * D), 29),
        P(size_t(H * T * T), 30),
        dP(size_t(H * T * T), 31) {}
  k::AttentionDims dims() const {
    k::AttentionDims d;
    d.B = 1, d.Tq = T, d.Tk = T, d.Hq = H, d.Hkv = H, d.Dk = D, d.Dv = D;
    d.causal = true;
    d.scale = 1.0 / std::sqrt(double(D));
    return d;
  }
};

void ours_attention_fwd(AttnData& a) {
  k::attention<float>(a.dims(), a.q.data(), a.k.data(), a.v.data(), a.out.data(), a.lse.data());
}
void ours_attention_bwd(AttnData& a) {
  k::attention_backward<float>(a.dims(), a.q.data(), a.k.data(), a.v.data(), a.out.data(), a.lse.data(), a.dout.data(),
                               a.dq.data(), a.dk.data(), a.dv.data());
}

// Fills the strictly upper triangle of each [T, T] block of m (rows of H heads stacked) with `value`: PyTorch's
// masked_fill in the forward (-inf) and its backward (0). Parallel over rows, as PyTorch's kernels are.
void fill_upper(float* m, int64_t H, int64_t T, float value) {
  parallel_for(H * T, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r % T;
      std::fill(m + r * T + i + 1, m + (r + 1) * T, value);
    }
  });
}

// q/k/v live in [B, T, H, D] (the projections' layout, as in PyTorch after .view(B, T, H, D).transpose(1, 2)), so
// each head is a strided row-major matrix with leading dimension H*D that BLAS reads directly. The scale is
// folded into the gemm's alpha (PyTorch spends a separate pass on it): slightly favours the reference.
void ref_attention_fwd(AttnData& a) {
  const int64_t T = a.T, H = a.H, D = a.D, ld = H * D;
  const float scale = float(1.0 / std::sqrt(double(D)));
  for (int64_t h = 0; h < H; ++h)  // S = scale Q K^T, all T x T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(T), int(D), scale, a.q.data() + h * D, int(ld),
                a.k.data() + h * D, int(ld), 0.0f, a.P.data() + h * T * T, int(T));
  fill_upper(a.P.data(), H, T, -std::numeric_limits<float>::infinity());
  k::softmax<float>(a.P.data(), a.P.data(), H * T, T);  // vectorised, parallel over rows (like ATen's)
  for (int64_t h = 0; h < H; ++h)                       // O = P V
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(D), int(T), 1.0f, a.P.data() + h * T * T, int(T),
                a.v.data() + h * D, int(ld), 0.0f, a.out.data() + h * D, int(ld));
}

void ref_attention_bwd(AttnData& a) {
  const int64_t T = a.T, H = a.H, D = a.D, ld = H * D;
  const float scale = float(1.0 / std::sqrt(double(D)));
  for (int64_t h = 0; h < H; ++h) {
    // dP = dO V^T; dV = P^T dO
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(T), int(D), 1.0f, a.dout.data() + h * D, int(ld),
                a.v.data() + h * D, int(ld), 0.0f, a.dP.data() + h * T * T, int(T));
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(T), int(D), int(T), 1.0f, a.P.data() + h * T * T, int(T),
                a.dout.data() + h * D, int(ld), 0.0f, a.dv.data() + h * D, int(ld));
  }
  k::softmax_backward<float>(a.P.data(), a.dP.data(), a.dP.data(), H * T, T);  // dS = P * (dP - rowsum(P dP))
  fill_upper(a.dP.data(), H, T, 0.0f);                                         // masked_fill backward
  for (int64_t h = 0; h < H; ++h) {
    // dQ = scale dS K; dK = scale dS^T Q
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(D), int(T), scale, a.dP.data() + h * T * T,
                int(T), a.k.data() + h * D, int(ld), 0.0f, a.dq.data() + h * D, int(ld));
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(T), int(D), int(T), scale, a.dP.data() + h * T * T, int(T),
                a.q.data() + h * D, int(ld), 0.0f, a.dk.data() + h * D, int(ld));
  }
}

OpResult attention_case(Env& env, const std::string& op, const std::string& shape, int64_t T, bool backward) {
  AttnData a(T);
  // Useful (causal) FLOPs: each product over the T(T+1)/2 visible pairs costs T(T+1) D per head; the forward has
  // two products (Q K^T, P V), the backward four (dP, dV, dQ, dK; our recomputed Q K^T is not counted).
  const double per_product = double(T) * (T + 1) * a.D * a.H;
  const double flops = (backward ? 6 : 2) * per_product;
  const Medians m = side_by_side(
      env.opt.repeats, env.min_sample_ms(), RefKind{env.opt.threads, true},
      [&] {
        ours_attention_fwd(a);
        if (backward) ours_attention_bwd(a);
      },
      [&] {
        ref_attention_fwd(a);
        if (backward) ref_attention_bwd(a);
      });
  return make_result(env, op, shape, m, "gflops", flops / m.ours / 1e6, "naive-materialised");
}

void add_attention_cases(std::vector<OpCase>& out, const std::shared_ptr<Env>& env) {
  const std::vector<int64_t> lengths =
      env->opt.quick ? std::vector<int64_t>{128, 256} : std::vector<int64_t>{256, 1024, 2048};
  for (int64_t T : lengths) {
    const std::string shape = fmt("B=1 T=%lld H=8 D=64 causal", (long long)T);
    out.push_back(
        {"attention-fwd", shape, [env, shape, T] { return attention_case(*env, "attention-fwd", shape, T, false); }});
    out.push_back({"attention-fwd-bwd", shape,
                   [env, shape, T] { return attention_case(*env, "attention-fwd-bwd", shape, T, true); }});
  }
}

// ---- memory-bound ops ----

// Runs `run(set)` over rotating sets made by `make()`, against the copy probe moving `bytes` per call.
template <typename Make, typename Run>
OpResult bandwidth_case(Env& env, const std::string& op, const std::string& shape, double bytes, Make&& make,
                        Run&& run) {
  CopyProbe& probe = env.copy_probe();
  const int n_sets = std::clamp(int(std::ceil(env.cold_bytes() / bytes)), 1, 64);
  // The probe cycles through the same footprint: n_sets x bytes, half of it in each array.
  const double window = n_sets * bytes / 2;
  std::vector<decltype(make())> sets;
  sets.reserve(static_cast<size_t>(n_sets));
  for (int i = 0; i < n_sets; ++i) sets.push_back(make());
  // One pass over every set and over the probe's whole window before anything is timed.
  for (auto& set : sets) run(*set);
  probe.copy_bytes(window * 2, window);
  size_t next = 0;
  const Medians m = side_by_side(
      env.opt.repeats, env.min_sample_ms(), RefKind{0, true}, [&] { run(*sets[next++ % sets.size()]); },
      [&] { probe.copy_bytes(bytes, window); });
  return make_result(env, op, shape, m, "gbps", bytes / m.ours / 1e6, "copy-bandwidth");
}

struct RmsSet {
  Buf x, w, y, rstd, dy, dx, dw;
  RmsSet(int64_t R, int64_t d)
      : x(size_t(R * d), 41),
        w(size_t(d), 42, 0.5f, 1.5f),
        y(size_t(R * d), 43),
        rstd(size_t(R), 44, 0.5f, 1.5f),
        dy(size_t(R * d), 45),
        dx(size_t(R * d), 46),
        dw(size_t(d), 47) {}
};
struct AddSet {
  Buf a, b, y;
  explicit AddSet(int64_t n) : a(size_t(n), 51), b(size_t(n), 52), y(size_t(n), 53) {}
};
struct AdamSet {
  Buf p, g, m, v;
  explicit AdamSet(int64_t n) : p(size_t(n), 61), g(size_t(n), 62), m(size_t(n), 63), v(size_t(n), 64, 0.0f, 1e-4f) {}
};
struct SwigluSet {
  Buf g, u, y, dy, dg, du;
  explicit SwigluSet(int64_t n)
      : g(size_t(n), 71, -4, 4),
        u(size_t(n), 72),
        y(size_t(n), 73),
        dy(size_t(n), 74),
        dg(size_t(n), 75),
        du(size_t(n), 76) {}
};
struct RowsSet {  // softmax and cross-entropy over [R, V]
  Buf x, y, dy, dx, loss, lse;
  std::vector<int32_t> targets;
  RowsSet(int64_t R, int64_t V)
      : x(size_t(R * V), 81, -8, 8),
        y(size_t(R * V), 82),
        dy(size_t(R * V), 83),
        dx(size_t(R * V), 84),
        loss(size_t(R), 85),
        lse(size_t(R), 86),
        targets(size_t(R)) {
    for (int64_t r = 0; r < R; ++r) targets[size_t(r)] = int32_t((r * 2654435761u) % uint64_t(V));
  }
};

struct DecodeAttnSet {  // one decode step's query against a KV cache of T tokens (infer-250m's heads), head-major
  static constexpr int64_t Hq = 16, Hkv = 4, D = 64;
  int64_t T;
  Buf q, k, v, out, lse;
  explicit DecodeAttnSet(int64_t t)
      : T(t),
        q(size_t(Hq * D), 91),
        k(size_t(T * Hkv * D), 92),
        v(size_t(T * Hkv * D), 93),
        out(size_t(Hq * D), 94),
        lse(size_t(Hq), 95) {}
  void run() {
    k::AttentionDims d;
    d.B = 1, d.Tq = 1, d.Tk = T, d.Hq = Hq, d.Hkv = Hkv, d.Dk = D, d.Dv = D;
    d.q_offset = T - 1;
    d.scale = 1.0 / std::sqrt(double(D));
    d.k_head_stride = d.v_head_stride = T * D;  // the engine's head-major cache
    k::attention<float>(d, q.data(), k.data(), v.data(), out.data(), lse.data());
  }
};

// The same step over an f16 cache (the engine's --kv-type f16): half the bytes.
struct DecodeAttnF16Set : DecodeAttnSet {
  std::vector<uint16_t> hk, hv;
  explicit DecodeAttnF16Set(int64_t t) : DecodeAttnSet(t), hk(k.size()), hv(v.size()) {
    f32_to_f16_row(k.data(), hk.data(), static_cast<int64_t>(k.size()));
    f32_to_f16_row(v.data(), hv.data(), static_cast<int64_t>(v.size()));
    k = Buf(1), v = Buf(1);  // only the half copies are read
  }
  void run() {
    k::AttentionDims d;
    d.B = 1, d.Tq = 1, d.Tk = T, d.Hq = Hq, d.Hkv = Hkv, d.Dk = D, d.Dv = D;
    d.q_offset = T - 1;
    d.scale = 1.0 / std::sqrt(double(D));
    d.k_head_stride = d.v_head_stride = T * D;
    if (!k::attention_f16kv(d, q.data(), hk.data(), hv.data(), out.data(), lse.data()))
      throw Error("attention_f16kv does not apply on this CPU");
  }
};

template <typename S, typename... A>
auto maker(A... args) {
  return [=] { return std::make_unique<S>(args...); };
}

void add_bandwidth_cases(std::vector<OpCase>& out, const std::shared_ptr<Env>& env) {
  const bool quick = env->opt.quick;
  const int64_t R = quick ? 256 : 2048;
  using Make = std::function<OpResult()>;
  auto add = [&](std::string op, std::string shape, Make run) {
    out.push_back({std::move(op), std::move(shape), std::move(run)});
  };

  // A decode step's attention over the KV cache (infer-250m: 16 query heads over 4 KV heads, dim 64), the cache
  // rotated past the L3 as it is in a real decode (the weights stream through between layers). Bytes: K and V read.
  for (int64_t T : quick ? std::vector<int64_t>{512} : std::vector<int64_t>{512, 2048}) {
    const std::string shape = fmt("Tk=%lld Hq=16 Hkv=4 D=64 (infer-250m)", (long long)T);
    add("attention-decode", shape, [env, shape, T] {
      return bandwidth_case(*env, "attention-decode", shape, 8.0 * T * DecodeAttnSet::Hkv * DecodeAttnSet::D,
                            maker<DecodeAttnSet>(T), [](DecodeAttnSet& s) { s.run(); });
    });
    if (kernels::cpu_has_avx2())
      add("attention-decode-f16", shape, [env, shape, T] {
        return bandwidth_case(*env, "attention-decode-f16", shape, 4.0 * T * DecodeAttnSet::Hkv * DecodeAttnSet::D,
                              maker<DecodeAttnF16Set>(T), [](DecodeAttnF16Set& s) { s.run(); });
      });
  }
  for (int64_t d : {int64_t(512), int64_t(1024)}) {
    const std::string shape = fmt("rows=%lld d=%lld", (long long)R, (long long)d);
    // Forward bytes: read x [R,d], w [d]; write y [R,d], rstd [R].
    add("rmsnorm-fwd", shape, [env, shape, R, d] {
      return bandwidth_case(
          *env, "rmsnorm-fwd", shape, 4.0 * (2 * R * d + d + R), maker<RmsSet>(R, d),
          [R, d](RmsSet& s) { k::rmsnorm<float>(s.x.data(), s.w.data(), s.y.data(), s.rstd.data(), R, d, 1e-5); });
    });
    // Backward bytes: read dy, x [R,d], w [d], rstd [R]; write dx [R,d]; read+write dw [d].
    add("rmsnorm-bwd", shape, [env, shape, R, d] {
      return bandwidth_case(*env, "rmsnorm-bwd", shape, 4.0 * (3 * R * d + 3 * d + R), maker<RmsSet>(R, d),
                            [R, d](RmsSet& s) {
                              k::rmsnorm_backward<float>(s.dy.data(), s.x.data(), s.w.data(), s.rstd.data(),
                                                         s.dx.data(), s.dw.data(), R, d);
                            });
    });
  }
  {
    const int64_t n = quick ? (int64_t(1) << 21) : (int64_t(1) << 24);
    const std::string shape = fmt("n=%lld", (long long)n);
    // Bytes: read a, b; write y.
    add("add", shape, [env, shape, n] {
      return bandwidth_case(*env, "add", shape, 12.0 * n, maker<AddSet>(n),
                            [n](AddSet& s) { k::add<float>(s.a.data(), s.b.data(), s.y.data(), n); });
    });
  }
  {
    const int64_t n = quick ? (int64_t(1) << 21) : 27662848;  // train-dense parameter count
    const std::string shape = fmt("params=%lld%s", (long long)n, quick ? "" : " (train-dense)");
    // Bytes: read p, g, m, v; write p, m, v.
    add("adamw", shape, [env, shape, n] {
      int64_t step = 0;
      return bandwidth_case(*env, "adamw", shape, 28.0 * n, maker<AdamSet>(n), [n, step](AdamSet& s) mutable {
        k::adamw<float>(s.p.data(), s.g.data(), s.m.data(), s.v.data(), n, 3e-4, 0.9, 0.95, 1e-8, 0.1, ++step);
      });
    });
  }
  {
    const int64_t n = R * 1408;  // train-dense FFN hidden: tokens x 1408
    const std::string shape = fmt("tokens=%lld ffn=1408", (long long)R);
    // Forward bytes: read g, u; write y.
    add("swiglu-fwd", shape, [env, shape, n] {
      return bandwidth_case(*env, "swiglu-fwd", shape, 12.0 * n, maker<SwigluSet>(n),
                            [n](SwigluSet& s) { k::swiglu<float>(s.g.data(), s.u.data(), s.y.data(), n); });
    });
    // Backward bytes: read g, u, dy; write dg, du.
    add("swiglu-bwd", shape, [env, shape, n] {
      return bandwidth_case(*env, "swiglu-bwd", shape, 20.0 * n, maker<SwigluSet>(n), [n](SwigluSet& s) {
        k::swiglu_backward<float>(s.g.data(), s.u.data(), s.dy.data(), s.dg.data(), s.du.data(), n);
      });
    });
  }
  {
    const int64_t V = 8192;  // train-dense vocabulary: the logits
    const std::string shape = fmt("rows=%lld V=%lld", (long long)R, (long long)V);
    // Softmax forward bytes: read x; write y.
    add("softmax-fwd", shape, [env, shape, R, V] {
      return bandwidth_case(*env, "softmax-fwd", shape, 8.0 * R * V, maker<RowsSet>(R, V),
                            [R, V](RowsSet& s) { k::softmax<float>(s.x.data(), s.y.data(), R, V); });
    });
    // Softmax backward bytes: read y, dy; write dx.
    add("softmax-bwd", shape, [env, shape, R, V] {
      return bandwidth_case(*env, "softmax-bwd", shape, 12.0 * R * V, maker<RowsSet>(R, V), [R, V](RowsSet& s) {
        k::softmax_backward<float>(s.y.data(), s.dy.data(), s.dx.data(), R, V);
      });
    });
    // Cross-entropy forward bytes: read logits [R,V], targets [R]; write loss, lse [R].
    add("cross-entropy-fwd", shape, [env, shape, R, V] {
      return bandwidth_case(
          *env, "cross-entropy-fwd", shape, 4.0 * R * V + 12.0 * R, maker<RowsSet>(R, V), [R, V](RowsSet& s) {
            k::cross_entropy<float>(s.x.data(), s.targets.data(), s.loss.data(), s.lse.data(), R, V, -100);
          });
    });
    // Cross-entropy backward bytes: read logits, targets, lse; write dlogits.
    add("cross-entropy-bwd", shape, [env, shape, R, V] {
      return bandwidth_case(*env, "cross-entropy-bwd", shape, 8.0 * R * V + 8.0 * R, maker<RowsSet>(R, V),
                            [R, V](RowsSet& s) {
                              k::cross_entropy_backward<float>(s.x.data(), s.targets.data(), s.lse.data(),
                                                               1.0f / float(R), s.dx.data(), R, V, -100);
                            });
    });
  }
}

// Rounded to `digits` decimals (x * 10^d rounded, then divided: prints as the short decimal, not 3.7531000000000003).
double round_to(double x, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(x * scale) / scale;
}

}  // namespace

std::vector<OpCase> ops_cases(const OpsOptions& opt) {
  auto env = std::make_shared<Env>();
  env->opt = opt;
  std::vector<OpCase> cases;
  cases.push_back({"copy", copy_probe_shape(opt), [env] { return copy_probe_case(*env); }});
  cases.push_back({"sgemm-2048", kSgemmShape, [env] { return sgemm_probe_case(*env); }});
  add_matmul_cases(cases, env);
  add_attention_cases(cases, env);
  add_bandwidth_cases(cases, env);
  return cases;
}

int run_ops(const OpsOptions& opt, const std::function<void(const OpResult&)>& on_result) {
  ThreadCountScope scope(opt.threads);
  k::blas_set_threads(1);
  int ran = 0;
  for (const OpCase& c : ops_cases(opt)) {
    if (!opt.filter.empty() && (c.op + " " + c.shape).find(opt.filter) == std::string::npos) continue;
    on_result(c.run());
    ++ran;
  }
  return ran;
}

std::string to_json_line(const OpResult& r) {
  nlohmann::ordered_json j;
  j["op"] = r.op;
  j["shape"] = r.shape;
  j["threads"] = r.threads;
  j["ms"] = round_to(r.ms, 4);
  j[r.unit] = round_to(r.rate, 2);
  j["reference"] = r.reference;
  j["ratio"] = round_to(r.ratio, 4);
  return j.dump();
}

std::string table_header() {
  return fmt("%-20s %-50s %3s %10s %10s %7s %9s %-6s  %s", "op", "shape", "thr", "ours ms", "ref ms", "ratio", "rate",
             "unit", "reference");
}

std::string table_row(const OpResult& r) {
  return fmt("%-20s %-50s %3d %10.3f %10.3f %7.3f %9.1f %-6s  %s", r.op.c_str(), r.shape.c_str(), r.threads, r.ms,
             r.ref_ms, r.ratio, r.rate, r.unit == "gflops" ? "GFLOP/s" : "GB/s", r.reference.c_str());
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double measure_read_gb_s(int threads, size_t bytes, int repeats) {
  ThreadCountScope scope(threads);
  const Buf a(bytes / sizeof(float), 3);
  const auto n = static_cast<int64_t>(bytes / sizeof(float));
  std::atomic<float> sink{0};
  auto pass = [&] {
    parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
#if LMF_HAVE_X86
      const float r = kernels::cpu_has_avx2() ? read_avx2(a.data() + b, e - b) : read_plain(a.data() + b, e - b);
#else
      const float r = read_plain(a.data() + b, e - b);
#endif
      sink.store(r, std::memory_order_relaxed);  // keeps the loads
    });
  };
  pass();  // first touch
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) ms.push_back(time_ms(pass));
  return static_cast<double>(n) * sizeof(float) / median(ms) / 1e6;
}

double measure_copy_gb_s(int threads, size_t bytes_per_array, int repeats) {
  ThreadCountScope scope(threads);
  CopyProbe p(bytes_per_array);
  const double moved = 2 * p.array_bytes();
  p.copy_bytes(moved);  // first touch
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) ms.push_back(time_ms([&] { p.copy_bytes(moved); }));
  return moved / median(ms) / 1e6;
}

}  // namespace lmforge::bench
