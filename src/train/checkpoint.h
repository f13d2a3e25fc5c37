// Training checkpoints and the JSONL run log (see trainer.h for the run folder layout).
#pragma once
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "lmforge/core/optim.h"
#include "lmforge/model/model.h"

namespace lmforge::train {

struct RunState {
  int64_t step = 0;           // optimizer steps done
  int64_t data_position = 0;  // windows served
  int64_t nonfinite_streak = 0;
  double loss_scale = 0;   // fp16 dynamic loss scale (0 when unused)
  int64_t good_steps = 0;  // fp16: steps since the scale last changed
};

class Checkpoints {
 public:
  Checkpoints(std::string run_dir, int64_t keep_last);
  // The newest complete checkpoint folder, if any.
  std::optional<std::string> latest() const;
  // Writes checkpoints/step-NNNNNNNN atomically (temporary folder + rename), then prunes to keep_last.
  std::string save(const RunState& s, const model::CausalLM& m, const Optimizer& opt) const;
  // Loads weights, optimizer state and run state; a damaged checkpoint is an Error naming the file and field,
  // and nothing on disk is changed.
  RunState load(const std::string& dir, model::CausalLM& m, Optimizer& opt) const;

 private:
  std::string run_dir_, ckpt_dir_;
  int64_t keep_last_;
};

// Appends JSON lines, flushed one by one. On resume from step S, lines of later steps (work the resumed run will
// redo) are dropped first, so the log reads as one uninterrupted run.
class JsonlLog {
 public:
  JsonlLog(const std::string& path, int64_t resume_step);
  void write(const nlohmann::json& rec);

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace lmforge::train
