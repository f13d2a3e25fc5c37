#include "lmforge/kernels/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "lmforge/kernels/cpu.h"

namespace lmforge {
namespace {

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadCountScope scope(threads);
    for (int64_t n : {0, 1, 7, 1000, 100003}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      parallel_for(n, 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
}

// Guided chunks: every index once, chunks never shorter than min_chunk except the last, first chunks the longest,
// and more than the 128-chunk cap still covered; then even and guided jobs alternate on the same pool.
TEST(ThreadPool, GuidedCoversEveryIndexOnceLongChunksFirst) {
  for (int threads : {1, 2, 3}) {
    ThreadCountScope scope(threads);
    for (int64_t n : {0, 1, 4, 5, 17, 1408, 8000, 1000003}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::mutex mu;
      std::vector<std::pair<int64_t, int64_t>> ranges;
      parallel_for_guided(n, 4, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
        std::lock_guard<std::mutex> lk(mu);
        ranges.emplace_back(b, e);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
      std::sort(ranges.begin(), ranges.end());
      for (size_t c = 0; c < ranges.size(); ++c) {
        const int64_t len = ranges[c].second - ranges[c].first;
        if (c + 1 < ranges.size()) {
          EXPECT_GE(len, 4) << "n=" << n << " chunk " << c;
          EXPECT_GE(len, ranges[c + 1].second - ranges[c + 1].first) << "n=" << n << " chunk " << c;
        }
      }
      if (threads > 1 && n >= 1408) {
        EXPECT_GT(ranges.size(), 8u) << "n=" << n;
        EXPECT_LE(ranges.front().second, n / 2) << "n=" << n;
      }
    }
    std::atomic<int64_t> total{0};
    for (int rep = 0; rep < 200; ++rep) {
      parallel_for(100, 1, [&](int64_t b, int64_t e) { total += e - b; });
      parallel_for_guided(100, 4, [&](int64_t b, int64_t e) { total += e - b; });
    }
    EXPECT_EQ(total.load(), 200 * 200);
  }
}

// Guided with a head: each thread's first chunk holds `head` items (at most 4/5 of n between them), the rest is
// guided as before, and every index still runs once.
TEST(ThreadPool, GuidedHeadGivesEachThreadOneLongFirstChunk) {
  for (int threads : {1, 2, 3}) {
    ThreadCountScope scope(threads);
    for (int64_t n : {5, 100, 1408, 8000}) {
      for (int64_t head : {int64_t{0}, int64_t{3}, int64_t{200}, n}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::mutex mu;
        std::vector<std::pair<int64_t, int64_t>> ranges;
        parallel_for_guided(
            n, 4,
            [&](int64_t b, int64_t e) {
              for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
              std::lock_guard<std::mutex> lk(mu);
              ranges.emplace_back(b, e);
            },
            head);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " head=" << head << " i=" << i;
        std::sort(ranges.begin(), ranges.end());
        const int64_t expect = std::min(head, n * 4 / 5 / threads);
        if (threads > 1 && n > 4 && expect >= 4) {
          ASSERT_GT(ranges.size(), static_cast<size_t>(threads));
          for (int t = 0; t < threads; ++t)
            EXPECT_EQ(ranges[t].second - ranges[t].first, expect) << "n=" << n << " head=" << head << " chunk " << t;
          for (size_t c = threads; c + 1 < ranges.size(); ++c)
            EXPECT_GE(ranges[c].second - ranges[c].first, 4) << "n=" << n << " head=" << head << " chunk " << c;
        }
      }
    }
  }
}

// Head chunk i runs on thread i (the caller is 0), so a worker can warm its cache for it before the job
// (prefetch_when_idle): over many jobs each head runs on one and the same thread, a different one for each. The
// heads each wait (up to 10 s) until all have started, so no thread can take two of them unless one is missing. A
// prefetch hint, even one that points nowhere, changes no result.
TEST(ThreadPool, HeadChunkIRunsOnThreadI) {
  ThreadCountScope scope(3);
  ThreadPool& pool = ThreadPool::global();
  const int64_t n = 1000, head = pool.guided_head(n, 4, 200);
  ASSERT_EQ(head, 200);
  EXPECT_EQ(pool.guided_head(n, 4, 900), n * 4 / 5 / 3);
  EXPECT_EQ(pool.guided_head(n, 500, 200), 0);
  const std::vector<char> data(1 << 20);
  const void* starts[2] = {data.data(), reinterpret_cast<const void*>(uintptr_t{64})};  // the second is no address
  std::thread::id first[3];
  for (int rep = 0; rep < 40; ++rep) {
    for (int t = 1; t < 3; ++t) pool.prefetch_when_idle(t, starts, 2, int64_t{1} << 20);
    std::atomic<int> started{0};
    std::thread::id ran[3];
    std::atomic<int64_t> total{0};
    parallel_for_guided(
        n, 4,
        [&](int64_t b, int64_t e) {
          total += e - b;
          if (b >= 3 * head) return;
          ASSERT_EQ(b % head, 0);
          ASSERT_EQ(e - b, head);
          ran[b / head] = std::this_thread::get_id();
          started.fetch_add(1);
          const auto t0 = std::chrono::steady_clock::now();
          while (started.load() < 3 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10))
            std::this_thread::yield();
        },
        head);
    ASSERT_EQ(total.load(), n);
    EXPECT_EQ(ran[0], std::this_thread::get_id()) << "rep " << rep;
    EXPECT_NE(ran[1], ran[0]) << "rep " << rep;
    EXPECT_NE(ran[2], ran[0]) << "rep " << rep;
    EXPECT_NE(ran[1], ran[2]) << "rep " << rep;
    if (rep == 0) std::copy(ran, ran + 3, first);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(ran[i], first[i]) << "head " << i << " moved threads at rep " << rep;
  }
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadCountScope scope(2);
  std::atomic<int64_t> total{0};
  parallel_for(8, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      EXPECT_TRUE(ThreadPool::global().in_parallel_region());
      parallel_for(100, 1, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
    }
  });
  EXPECT_EQ(total.load(), 800);
}

TEST(ThreadPool, ManyShortJobs) {
  ThreadCountScope scope(2);
  int64_t sum = 0;
  for (int rep = 0; rep < 20000; ++rep) {
    std::atomic<int64_t> s{0};
    parallel_for(64, 1, [&](int64_t b, int64_t e) { s += e - b; });
    sum += s.load();
  }
  EXPECT_EQ(sum, 20000 * 64);
}

TEST(ThreadPool, ReductionsDoNotDependOnThreadCount) {
  std::vector<float> x(1 << 20);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.001 * i));
  double s1, s2;
  {
    ThreadCountScope scope(1);
    s1 = kernels::cpu::sum(x.data(), static_cast<int64_t>(x.size()));
  }
  {
    ThreadCountScope scope(2);
    s2 = kernels::cpu::sum(x.data(), static_cast<int64_t>(x.size()));
  }
  EXPECT_EQ(s1, s2);
}

}  // namespace
}  // namespace lmforge
