#include "lmforge/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace lmforge {

namespace {

ByteProgress::Mode resolve(ByteProgress::Mode m, FILE* out) {
  if (m != ByteProgress::Mode::kAuto) return m;
  if (const char* env = std::getenv("LMFORGE_PROGRESS")) {
    if (std::strcmp(env, "bar") == 0) return ByteProgress::Mode::kBar;
    if (std::strcmp(env, "lines") == 0) return ByteProgress::Mode::kLines;
    if (std::strcmp(env, "off") == 0) return ByteProgress::Mode::kOff;
  }
  return ::isatty(::fileno(out)) ? ByteProgress::Mode::kBar : ByteProgress::Mode::kLines;
}

}  // namespace

ByteProgress::ByteProgress(std::string what, int64_t total_bytes, Mode mode, std::string items, FILE* out)
    : what_(std::move(what)),
      items_name_(std::move(items)),
      total_(total_bytes),
      mode_(resolve(mode, out)),
      out_(out),
      t0_(std::chrono::steady_clock::now()) {
  // A bar shows at once; log lines only once the work has run for an interval, so short runs log nothing extra.
  last_shown_ = mode_ == Mode::kBar ? -1e9 : 0.0;
}

std::string ByteProgress::clock(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const auto t = static_cast<long long>(s + 0.5);
  char b[32];
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%lldh%02lldm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(b, sizeof b, "%lldm%02llds", t / 60, t % 60);
  return b;
}

std::string ByteProgress::line(int64_t bytes, int64_t items, double elapsed) const {
  const double mb = static_cast<double>(bytes) / 1e6;
  const double rate = elapsed > 0 ? mb / elapsed : 0.0;
  char total[48] = "";
  char eta[48] = "";
  if (total_ > 0) {
    std::snprintf(total, sizeof total, "/%.1f MB (%.0f%%)", static_cast<double>(total_) / 1e6,
                  100.0 * std::min(1.0, static_cast<double>(bytes) / static_cast<double>(total_)));
    const double left = rate > 0 ? (static_cast<double>(total_ - bytes) / 1e6) / rate : -1;
    std::snprintf(eta, sizeof eta, ", ETA %s", clock(std::max(0.0, left)).c_str());
  } else {
    std::snprintf(total, sizeof total, " MB");
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s: %.1f%s, %.1f MB/s, %lld %s%s", what_.c_str(), mb, total, rate,
                static_cast<long long>(items), items_name_.c_str(), eta);
  return buf;
}

void ByteProgress::update(int64_t bytes, int64_t items, bool force) {
  if (mode_ == Mode::kOff) return;
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double interval = mode_ == Mode::kBar ? 0.2 : line_interval_s_;
  if (!force && t - last_shown_ < interval) return;
  last_shown_ = t;
  const std::string text = line(bytes, items, t);
  if (mode_ == Mode::kBar) {
    constexpr int kWidth = 20;
    std::string bar;
    if (total_ > 0) {
      const int filled = static_cast<int>(
          kWidth * std::min(1.0, static_cast<double>(bytes) / static_cast<double>(std::max<int64_t>(1, total_))));
      bar = "[" + std::string(static_cast<size_t>(filled), '=') +
            (filled < kWidth ? ">" + std::string(static_cast<size_t>(kWidth - filled - 1), ' ') : "") + "] ";
    }
    // \r and clear-to-end-of-line: the new state replaces the old one in place.
    std::fprintf(out_, "\r%s%s\033[K", bar.c_str(), text.c_str());
    dirty_ = true;
  } else {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
}

void ByteProgress::finish() {
  if (!dirty_) return;
  std::fputc('\n', out_);
  std::fflush(out_);
  dirty_ = false;
}

}  // namespace lmforge
