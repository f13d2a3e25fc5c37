// ByteProgress: a bar redrawn in place with MB/s and ETA, log lines at an interval, nothing when off.
#include "lmforge/core/progress.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace lmforge {
namespace {

// Runs fn with a ByteProgress writing into a memory buffer; returns what was written.
template <typename Fn>
std::string capture(ByteProgress::Mode mode, int64_t total, Fn fn) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  {
    ByteProgress p("data clean", total, mode, "documents", f);
    fn(p);
  }
  std::fclose(f);
  std::string out(buf, len);
  std::free(buf);
  return out;
}

TEST(ByteProgress, BarRedrawsInPlaceWithRateAndEta) {
  bool within = false;  // whether the second update really came within the 0.2 s (a loaded machine may stall)
  const std::string out = capture(ByteProgress::Mode::kBar, 100'000'000, [&within](ByteProgress& p) {
    const auto t0 = std::chrono::steady_clock::now();
    p.update(25'000'000, 1000);
    p.update(26'000'000, 1001);  // within 0.2 s of the last draw: skipped
    within = std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(150);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    p.update(50'000'000, 2000, true);
  });
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;  // one line, ended by finish()
  EXPECT_NE(out.find("\r[=====>"), std::string::npos) << out;
  EXPECT_NE(out.find("\r[==========>"), std::string::npos) << out;
  if (within) {
    EXPECT_EQ(out.find("1001 documents"), std::string::npos) << out;
  }
  EXPECT_NE(out.find("data clean: 50.0/100.0 MB (50%)"), std::string::npos) << out;
  EXPECT_NE(out.find("MB/s, 2000 documents, ETA "), std::string::npos) << out;
}

TEST(ByteProgress, LinesAtAnIntervalAndNothingWhenOff) {
  std::string out = capture(ByteProgress::Mode::kLines, 0, [](ByteProgress& p) {
    p.update(1'000'000, 10);  // before the first interval: nothing
    p.set_line_interval(0);
    p.update(2'000'000, 20);
    p.update(3'000'000, 30);
  });
  EXPECT_EQ(out.find('\r'), std::string::npos) << out;
  // (the whole prefix: a rate such as "15000001.0 MB/s" also contains "1.0 MB")
  EXPECT_EQ(out.find("data clean: 1.0 MB"), std::string::npos) << out;
  EXPECT_NE(out.find("data clean: 2.0 MB, "), std::string::npos) << out;
  EXPECT_NE(out.find("data clean: 3.0 MB, "), std::string::npos) << out;
  EXPECT_EQ(out.find("ETA"), std::string::npos) << out;  // total unknown
  out = capture(ByteProgress::Mode::kOff, 10, [](ByteProgress& p) { p.update(5, 1, true); });
  EXPECT_EQ(out, "");
}

TEST(ByteProgress, Clock) {
  EXPECT_EQ(ByteProgress::clock(0), "0m00s");
  EXPECT_EQ(ByteProgress::clock(75), "1m15s");
  EXPECT_EQ(ByteProgress::clock(4000), "1h06m");
  EXPECT_EQ(ByteProgress::clock(-1), "?");
}

}  // namespace
}  // namespace lmforge
