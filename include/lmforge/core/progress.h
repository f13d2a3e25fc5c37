// Progress of long byte-streaming work (DESIGN.md section 5): on a terminal a bar redrawn in place (bytes done of
// the total, MB/s, items, ETA); otherwise a plain log line every few seconds, so logs of long runs show they are
// alive without filling up; nothing when off. LMFORGE_PROGRESS=bar|lines|off overrides the terminal check.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace lmforge {

class ByteProgress {
 public:
  enum class Mode { kAuto, kBar, kLines, kOff };

  // total_bytes <= 0: unknown (no bar fill, no ETA). `items` names what update() counts ("documents", "lines").
  ByteProgress(std::string what, int64_t total_bytes, Mode mode = Mode::kAuto, std::string items = "documents",
               FILE* out = stderr);
  ~ByteProgress() { finish(); }
  ByteProgress(const ByteProgress&) = delete;
  ByteProgress& operator=(const ByteProgress&) = delete;

  // Shows the state at most every 0.2 s (bar) or every `line_interval_s` (lines) unless forced.
  void update(int64_t bytes_done, int64_t items, bool force = false);
  // Ends the bar's line so that what follows starts on its own line. Safe to call more than once.
  void finish();

  bool enabled() const { return mode_ != Mode::kOff; }
  Mode mode() const { return mode_; }
  void set_line_interval(double seconds) { line_interval_s_ = seconds; }
  void set_total(int64_t total_bytes) { total_ = total_bytes; }

  // 75 -> "1m15s", 4000 -> "1h06m"; "?" for negative or absurd values.
  static std::string clock(double seconds);

 private:
  std::string line(int64_t bytes, int64_t items, double elapsed) const;

  std::string what_, items_name_;
  int64_t total_;
  Mode mode_;
  FILE* out_;
  double line_interval_s_ = 5.0;
  std::chrono::steady_clock::time_point t0_;
  double last_shown_ = -1e9;
  bool dirty_ = false;  // a bar is on screen without its newline
};

}  // namespace lmforge
