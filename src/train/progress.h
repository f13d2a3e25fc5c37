// Progress on stderr: a one-line bar redrawn in place on a terminal, plain log lines otherwise.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace lmforge::train {

class Progress {
 public:
  // mode: auto | bar | lines | off
  Progress(const std::string& mode, bool quiet, int64_t total, int64_t start)
      : total_(total), start_step_(start), t0_(std::chrono::steady_clock::now()) {
    if (quiet || mode == "off") {
      kind_ = Kind::Off;
    } else if (mode == "bar" || (mode == "auto" && ::isatty(2))) {
      kind_ = Kind::Bar;
    } else {
      kind_ = Kind::Lines;
    }
  }

  void update(int64_t step, double loss, double lr, double tokens_per_s) {
    if (kind_ == Kind::Off) return;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double per_step = step > start_step_ ? secs / static_cast<double>(step - start_step_) : 0;
    const std::string eta = clock(per_step * static_cast<double>(total_ - step));
    char buf[256];
    if (kind_ == Kind::Bar) {
      constexpr int kWidth = 24;
      const int filled = static_cast<int>(kWidth * step / std::max<int64_t>(1, total_));
      std::string bar(static_cast<size_t>(filled), '=');
      if (filled < kWidth) bar += '>' + std::string(static_cast<size_t>(kWidth - filled - 1), ' ');
      std::snprintf(buf, sizeof(buf), "\r[%s] step %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %s   ", bar.c_str(),
                    static_cast<long long>(step), static_cast<long long>(total_), loss, lr, tokens_per_s, eta.c_str());
      std::fputs(buf, stderr);
      dirty_ = true;
    } else {
      std::snprintf(buf, sizeof(buf), "step %lld/%lld loss %.4f lr %.2e %.0f tok/s eta %s\n",
                    static_cast<long long>(step), static_cast<long long>(total_), loss, lr, tokens_per_s, eta.c_str());
      std::fputs(buf, stderr);
    }
    std::fflush(stderr);
  }

  void message(const std::string& m) {
    if (kind_ == Kind::Off) return;
    if (dirty_) std::fputc('\n', stderr);
    dirty_ = false;
    std::fprintf(stderr, "%s\n", m.c_str());
    std::fflush(stderr);
  }

  void finish() {
    if (dirty_) std::fputc('\n', stderr);
    dirty_ = false;
  }

 private:
  static std::string clock(double s) {
    if (!(s >= 0) || s > 1e7) return "?";
    const auto t = static_cast<long long>(s + 0.5);
    char b[32];
    if (t >= 3600) {
      std::snprintf(b, sizeof(b), "%lldh%02lldm", t / 3600, (t / 60) % 60);
    } else {
      std::snprintf(b, sizeof(b), "%lldm%02llds", t / 60, t % 60);
    }
    return b;
  }

  enum class Kind { Off, Bar, Lines };
  Kind kind_ = Kind::Lines;
  int64_t total_, start_step_;
  std::chrono::steady_clock::time_point t0_;
  bool dirty_ = false;
};

}  // namespace lmforge::train
