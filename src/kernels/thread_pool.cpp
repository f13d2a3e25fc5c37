#include "lmforge/kernels/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
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

// The claim word packs (generation:32 | chunks:16 | next chunk:16). A thread claims a chunk with one CAS, so it
// can only ever take a chunk of the job that is live at that moment; the job's fields are read after a successful
// claim, when the caller is still waiting for that chunk and cannot have moved on.
constexpr uint64_t pack(uint64_t gen, uint64_t chunks, uint64_t next) {
  return gen << 32 | chunks << 16 | next;
}
constexpr uint64_t chunks_of(uint64_t w) {
  return (w >> 16) & 0xffff;
}
constexpr uint64_t next_of(uint64_t w) {
  return w & 0xffff;
}
}  // namespace

// A fork-join pool. The caller publishes a job and takes chunks itself; workers that are awake take chunks too.
// The caller waits only for chunks that were claimed, never for a worker that is asleep or descheduled (the
// machine is shared). Workers spin briefly after a job, since kernels come in quick succession, then sleep on a
// condition variable so an idle pool costs no CPU.
struct ThreadPool::Impl {
  std::vector<std::thread> threads;
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<uint64_t> generation{0};
  std::atomic<uint64_t> claim{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> quit{false};
  std::atomic<int> sleepers{0};
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  const int64_t* bounds = nullptr;  // chunk c is [bounds[c], bounds[c + 1]); nullptr: even chunks of n
  static constexpr int kMaxGuided = 128;
  int64_t guided[kMaxGuided + 1];
  // The head chunks of a guided job (chunks [0, heads)): (generation:32 | mask of those not yet taken). Thread i
  // takes head i first, then chunks from `claim` (which starts after the heads), then any head still untaken (its
  // thread asleep or descheduled). The generation keeps a CAS made against one job's word from landing on the next.
  std::atomic<uint64_t> heads{0};

  // Idle prefetch hints (prefetch_when_idle), one per worker: a version bumped by each new hint, then its streams.
  struct Hint {
    std::atomic<uint64_t> version{0};
    std::atomic<const char*> start[kMaxPrefetchStreams] = {};
    std::atomic<int> streams{0};
    std::atomic<int64_t> bytes{0};
  };
  std::unique_ptr<Hint[]> hints;

  void run(int64_t c) {
    if (bounds) {
      (*fn)(bounds[c], bounds[c + 1]);
    } else {
      const auto chunks = static_cast<int64_t>(chunks_of(claim.load(std::memory_order_relaxed)));
      (*fn)(c * n / chunks, (c + 1) * n / chunks);
    }
    done.fetch_add(1, std::memory_order_acq_rel);
  }

  // Takes head chunk i of the live job if it is still there.
  bool take_head(uint64_t& w, int i) {
    const uint64_t bit = uint64_t{1} << i;
    while (w & bit)
      if (heads.compare_exchange_weak(w, w & ~bit, std::memory_order_acq_rel, std::memory_order_acquire)) return true;
    return false;
  }

  // Claims and runs chunks until none is left: thread `index`'s own head chunk, then the claimed ones, then heads
  // nobody took. Returns when the live job has no unclaimed chunk.
  void run_chunks(int index) {
    uint64_t h = heads.load(std::memory_order_acquire);
    if (index < 32 && take_head(h, index)) run(index);
    uint64_t w = claim.load(std::memory_order_acquire);
    while (next_of(w) < chunks_of(w)) {
      if (!claim.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      run(static_cast<int64_t>(next_of(w)));
      w = claim.load(std::memory_order_acquire);
    }
    h = heads.load(std::memory_order_acquire);
    for (int i = 0; i < 32; ++i)
      if (take_head(h, i)) run(i);
  }

  // A worker with no chunk to run: prefetches the next lines of its hint's streams (worker_loop calls this between
  // its looks at `generation`, until a job comes or the hint is done). Returns whether it issued any prefetch.
  struct Cursor {
    uint64_t version = 0;
    int64_t at = 0;
  };
  bool prefetch_some(int index, Cursor& cur) {
#if defined(__x86_64__)
    Hint& hint = hints[static_cast<size_t>(index)];
    const uint64_t v = hint.version.load(std::memory_order_acquire);
    if (v != cur.version) cur = {v, 0};
    const int64_t bytes = hint.bytes.load(std::memory_order_relaxed);
    if (cur.at >= bytes) return false;
    const int streams = hint.streams.load(std::memory_order_relaxed);
    // Four lines of each stream a step, then the caller looks at `generation` again. The addresses are computed as
    // integers: a hint may point anywhere (prefetches never fault), even at memory freed since.
    for (int k = 0; k < streams; ++k) {
      const auto p = reinterpret_cast<uintptr_t>(hint.start[k].load(std::memory_order_relaxed)) + cur.at;
      for (uintptr_t o = 0; o < 256; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
    }
    cur.at += 256;
    return true;
#else
    (void)index, (void)cur;
    return false;
#endif
  }
};

ThreadPool& ThreadPool::global() {
  static ThreadPool pool;
  return pool;
}

ThreadPool::ThreadPool() {
  start(default_threads());
}
ThreadPool::~ThreadPool() {
  stop();
}

void ThreadPool::start(int n) {
  num_threads_ = std::max(1, n);
  impl_ = new Impl();
  impl_->hints = std::make_unique<Impl::Hint[]>(static_cast<size_t>(num_threads_));
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

bool ThreadPool::in_parallel_region() const {
  return t_in_region;
}

void ThreadPool::worker_loop(int index) {
  t_in_region = true;
  Impl& s = *impl_;
  uint64_t seen = 0;
  Impl::Cursor cursor;
  for (;;) {
    uint64_t g = s.generation.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < 20000; ++spin) {
      if (!s.prefetch_some(index, cursor)) cpu_relax();
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
    s.run_chunks(index);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = (n + grain - 1) / grain;
  if (num_threads_ == 1 || t_in_region || max_chunks == 1) {
    fn(0, n);
    return;
  }
  // A few chunks per thread balance a machine whose cores are shared with other work.
  const int64_t chunks = std::min<int64_t>({max_chunks, static_cast<int64_t>(num_threads_) * 4, 0xffff});
  run_job(n, chunks, 0, nullptr, fn);
}

void ThreadPool::parallel_for_guided(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn,
                                     int64_t head) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  if (num_threads_ == 1 || t_in_region || n <= min_chunk) {
    fn(0, n);
    return;
  }
  int64_t* b = impl_->guided;  // written only here, by the one caller outside a region, before the job is published
  int64_t chunks = 0;
  b[0] = 0;
  const int64_t div = 2 * static_cast<int64_t>(num_threads_);
  head = guided_head(n, min_chunk, head);
  if (head > 0)
    for (int t = 0; t < num_threads_; ++t, ++chunks) b[chunks + 1] = b[chunks] + head;
  const int64_t heads = chunks;
  while (b[chunks] < n) {
    const int64_t left = n - b[chunks];
    const int64_t len = chunks + 1 == Impl::kMaxGuided ? left : std::max(min_chunk, (left + div - 1) / div);
    b[chunks + 1] = b[chunks] + std::min(left, len);
    ++chunks;
  }
  run_job(n, chunks, heads, b, fn);
}

int64_t ThreadPool::guided_head(int64_t n, int64_t min_chunk, int64_t head) const {
  if (num_threads_ == 1 || num_threads_ > 32 || n <= std::max<int64_t>(1, min_chunk)) return 0;
  head = std::min(head, n * 4 / 5 / num_threads_);
  return head >= std::max<int64_t>(1, min_chunk) ? head : 0;
}

void ThreadPool::prefetch_when_idle(int thread, const void* const* starts, int streams, int64_t bytes) {
  if (thread <= 0 || thread >= num_threads_ || !impl_) return;
  Impl::Hint& h = impl_->hints[static_cast<size_t>(thread)];
  streams = std::clamp(streams, 0, kMaxPrefetchStreams);
  for (int k = 0; k < streams; ++k) h.start[k].store(static_cast<const char*>(starts[k]), std::memory_order_relaxed);
  h.streams.store(streams, std::memory_order_relaxed);
  h.bytes.store(std::max<int64_t>(0, bytes), std::memory_order_relaxed);
  h.version.fetch_add(1, std::memory_order_release);
}

void ThreadPool::run_job(int64_t n, int64_t chunks, int64_t heads, const int64_t* bounds,
                         const std::function<void(int64_t, int64_t)>& fn) {
  Impl& s = *impl_;
  s.fn = &fn;
  s.n = n;
  s.bounds = bounds;
  s.done.store(0, std::memory_order_relaxed);
  const uint64_t gen = (s.generation.load(std::memory_order_relaxed) + 1) & 0xffffffffu;
  s.heads.store(gen << 32 | ((uint64_t{1} << heads) - 1), std::memory_order_release);
  s.claim.store(pack(gen, static_cast<uint64_t>(chunks), static_cast<uint64_t>(heads)), std::memory_order_release);
  {
    std::lock_guard<std::mutex> lk(s.mu);  // orders the publish against a worker about to sleep
    s.generation.store(gen, std::memory_order_release);
  }
  if (s.sleepers.load() > 0) s.cv.notify_all();
  t_in_region = true;
  s.run_chunks(0);
  t_in_region = false;
  while (s.done.load(std::memory_order_acquire) < chunks) cpu_relax();
}

}  // namespace lmforge
