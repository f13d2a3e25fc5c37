// The process's one thread pool (kernels layer: the lowest layer that splits work, so every layer may use it). Kernels
// split work with parallel_for; a call made from inside a parallel region runs inline, so work never nests or
// oversubscribes. OpenBLAS is kept single-threaded and called from inside our parallel regions (see docs/ENGINE.md).
#pragma once
#include <cstdint>
#include <functional>

namespace lmforge {

class ThreadPool {
 public:
  static ThreadPool& global();

  // Total threads doing work, the calling thread included. Defaults to $LMFORGE_THREADS or the number of cores.
  int num_threads() const { return num_threads_; }
  void set_num_threads(int n);

  // Calls fn(begin, end) over [0, n) in chunks of at least `grain` items; blocks until all are done. Which thread
  // runs which chunk is not fixed: reductions keep partials per fixed-size block, not per thread, so results do
  // not depend on the thread count.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // parallel_for with guided chunks: each next chunk is 1 / (2 * threads) of what is left, but at least
  // `min_chunk` items, so the first chunks are long (long streams for memory-bound work) and the last ones short
  // (threads finish together: the wait for the slowest is one small chunk, not an eighth of the job). For
  // memory-bound products called many times a second (decode). With head > 0 the first chunks, one per thread,
  // hold `head` items each (at most 4/5 of n between them) and the rest follows guided: one long run per thread
  // for work that pays a start-up cost at each chunk (streams that restart cold). Head chunk i is [i * h, (i + 1)
  // * h) with h = guided_head(n, min_chunk, head), and thread i (the caller is 0) runs it unless it is not there
  // to (then another thread does), so a thread can warm its cache for its head before the job (prefetch_when_idle).
  void parallel_for_guided(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn,
                           int64_t head = 0);
  // The head chunks' length parallel_for_guided would use now; 0: no head chunks (one thread, or too few items).
  int64_t guided_head(int64_t n, int64_t min_chunk, int64_t head) const;

  // A hint for worker `thread` (1 .. num_threads() - 1; others are ignored): whenever it has no chunk to run, it
  // prefetches the first `bytes` of each of the `streams` ranges at starts[k] into its cache (a few lines of each
  // at a time, stopping as soon as a job comes), until done or a later hint replaces this one. For memory-bound
  // work whose next job is known: the idle worker pulls in the start of its share while the caller does serial
  // work. Prefetches never fault, so a stale or wrong hint costs bandwidth, not correctness.
  static constexpr int kMaxPrefetchStreams = 8;
  void prefetch_when_idle(int thread, const void* const* starts, int streams, int64_t bytes);

  bool in_parallel_region() const;

  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  ThreadPool();
  void start(int n);
  void stop();
  void worker_loop(int index);
  void run_job(int64_t n, int64_t chunks, int64_t heads, const int64_t* bounds,
               const std::function<void(int64_t, int64_t)>& fn);
  struct Impl;
  Impl* impl_ = nullptr;
  int num_threads_ = 1;
};

inline void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  ThreadPool::global().parallel_for(n, grain, fn);
}
inline void parallel_for_guided(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn,
                                int64_t head = 0) {
  ThreadPool::global().parallel_for_guided(n, min_chunk, fn, head);
}

// Sets the pool's thread count for a scope and restores it afterwards (benchmarks, tests).
class ThreadCountScope {
 public:
  explicit ThreadCountScope(int n) : saved_(ThreadPool::global().num_threads()) {
    ThreadPool::global().set_num_threads(n);
  }
  ~ThreadCountScope() { ThreadPool::global().set_num_threads(saved_); }

 private:
  int saved_;
};

}  // namespace lmforge
