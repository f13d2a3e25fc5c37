#include "lmforge/kernels/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace lmforge {

namespace {
thread_local bool t_in_region = false;

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

int default_threads() {
  if (const char* env = std::getenv("LMFORGE_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}
}  // namespace

// A fork-join pool: the caller publishes a job, wakes the workers, takes chunks itself, then waits.
// Workers spin briefly after a job (kernels come in quick succession) and then sleep on a condition variable,
// so an idle pool costs no CPU that OpenBLAS or another process could use.
struct ThreadPool::Impl {
  std::vector<std::thread> threads;
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<uint64_t> generation{0};
  std::atomic<bool> quit{false};
  std::atomic<int> sleepers{0};

  // The current job.
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t chunks = 0;
  std::atomic<int64_t> next_chunk{0};
  std::atomic<int> acks{0};  // workers that finished the current generation

  void run_chunks() {
    for (;;) {
      int64_t c = next_chunk.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) break;
      int64_t b = c * n / chunks, e = (c + 1) * n / chunks;
      (*fn)(b, e);
    }
  }
};

ThreadPool& ThreadPool::global() {
  static ThreadPool pool;
  return pool;
}

ThreadPool::ThreadPool() { start(default_threads()); }
ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::start(int n) {
  num_threads_ = std::max(1, n);
  impl_ = new Impl();
  for (int i = 1; i < num_threads_; ++i) impl_->threads.emplace_back([this, i] { worker_loop(i); });
}

void ThreadPool::stop() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->quit = true;
    impl_->generation.fetch_add(1);
  }
  impl_->cv.notify_all();
  for (auto& t : impl_->threads) t.join();
  delete impl_;
  impl_ = nullptr;
}

void ThreadPool::set_num_threads(int n) {
  n = std::max(1, n);
  if (n == num_threads_) return;
  stop();
  start(n);
}

bool ThreadPool::in_parallel_region() const { return t_in_region; }

void ThreadPool::worker_loop(int /*index*/) {
  t_in_region = true;
  Impl& s = *impl_;
  uint64_t seen = 0;
  for (;;) {
    // Spin a little, then sleep.
    uint64_t g = s.generation.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < 20000; ++spin) {
      cpu_relax();
      g = s.generation.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lk(s.mu);
      s.sleepers.fetch_add(1);
      s.cv.wait(lk, [&] { return s.generation.load(std::memory_order_acquire) != seen; });
      s.sleepers.fetch_sub(1);
      g = s.generation.load(std::memory_order_acquire);
    }
    seen = g;
    if (s.quit.load()) return;
    s.run_chunks();
    s.acks.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t max_chunks = (n + grain - 1) / grain;
  if (num_threads_ == 1 || t_in_region || max_chunks == 1) {
    fn(0, n);
    return;
  }
  Impl& s = *impl_;
  // A few chunks per thread balance a machine whose cores are shared with other work.
  int64_t chunks = std::min<int64_t>(max_chunks, static_cast<int64_t>(num_threads_) * 4);
  s.fn = &fn;
  s.n = n;
  s.chunks = chunks;
  s.next_chunk.store(0, std::memory_order_relaxed);
  s.acks.store(0, std::memory_order_relaxed);
  {
    // Taking the lock orders the publish against a worker that is about to sleep.
    std::lock_guard<std::mutex> lk(s.mu);
    s.generation.fetch_add(1, std::memory_order_acq_rel);
  }
  if (s.sleepers.load() > 0) s.cv.notify_all();
  t_in_region = true;
  s.run_chunks();
  t_in_region = false;
  // Every worker acknowledges every job, so none can still hold a pointer to fn after we return.
  const int workers = num_threads_ - 1;
  while (s.acks.load(std::memory_order_acquire) < workers) cpu_relax();
  s.fn = nullptr;
}

}  // namespace lmforge
