// `lmforge bench ops`: engine ops timed side by side with a reference in the same run (method:
// /work/shared/BENCHMARKS.md, figures: docs/PERFORMANCE.md). Each case interleaves our repetitions with the
// reference's, so both see the same noise on a shared machine, and reports the two medians and their ratio.
#pragma once
#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace lmforge::bench {

struct OpsOptions {
  int threads = 2;     // our pool's size, and OpenBLAS's own thread count while a reference gemm runs
  int repeats = 7;     // timed samples of each side (median); warm-up not counted
  bool quick = false;  // small shapes (CI, demo): the whole run takes a few seconds
  std::string filter;  // run only cases whose "op shape" contains this substring
};

struct OpResult {
  std::string op;     // starts with the op's name: matmul-fwd, attention-fwd-bwd, rmsnorm-bwd, copy, ...
  std::string shape;  // dimensions and, where it helps, which model tensor they come from
  int threads = 0;
  int repeats = 0;
  double ms = 0;          // our median
  double ref_ms = 0;      // the reference's median, measured interleaved with ours
  std::string unit;       // "gflops" (compute-bound) or "gbps" (memory-bound)
  double rate = 0;        // our GFLOP/s or GB/s
  std::string reference;  // what ref_ms timed; "probe" for the probe rows themselves (ratio 1)
  double ratio = 0;       // ref_ms / ms: above 1 means we are faster
};

// One case, known before it runs (so --filter can be checked up front).
struct OpCase {
  std::string op, shape;
  std::function<OpResult()> run;
};

// All cases for these options, in output order: probes first, then matmul, attention, memory-bound ops.
std::vector<OpCase> ops_cases(const OpsOptions& opt);

// Sets the pool to opt.threads, runs the cases that match opt.filter and hands each result over as soon as it is
// measured. Returns how many cases ran.
int run_ops(const OpsOptions& opt, const std::function<void(const OpResult&)>& on_result);

// The JSON-lines contract: {"op","shape","threads","ms","gflops"|"gbps","reference","ratio"}.
std::string to_json_line(const OpResult& r);
// Readable table (fixed-width columns).
std::string table_header();
std::string table_row(const OpResult& r);

// STREAM-like copy bandwidth in GB/s (bytes read + written per second; ordinary stores) over two arrays of
// `bytes_per_array`, split over the pool at `threads`; median of `repeats` passes. Used by bench generate.
double measure_copy_gb_s(int threads, size_t bytes_per_array, int repeats);
// Milliseconds f() takes (steady clock), and the median of samples (the mean of the middle two for an even count;
// 0 for none): the timing every benchmark command shares.
template <typename F>
double time_ms(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
double median(std::vector<double> v);

// Read-only bandwidth in GB/s (bytes read per second) over one array of `bytes`, split over the pool at `threads`;
// median of `repeats` passes, each thread's share read as four streams in lockstep as the decode products read
// (qgemm.cpp). Decode only reads its weights; one stream per core read less than the copy probe's read + write figure.
double measure_read_gb_s(int threads, size_t bytes, int repeats);
// STREAM "Copy" of n floats with ordinary stores (AVX2 where the CPU has it), split over the thread pool.
void stream_copy(float* d, const float* s, int64_t n);

}  // namespace lmforge::bench
