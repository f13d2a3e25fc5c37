// `lmforge data balance`: class balancing for labelled JSONL. Classes are read from a label field and brought to
// a target ratio (e.g. spam:1,ham:3) by under-sampling the larger classes (default) or over-sampling the smaller
// ones (documents written more than once). Which documents are kept or repeated is decided by a seeded hash of
// their text, so the result is deterministic; documents of classes not in the ratio are dropped
// (`unlisted_class`). Two passes over the inputs: counting, then selecting.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "lmforge/data/corpus.h"

namespace lmforge::data {

struct BalanceOptions {
  std::string label_field = "label";
  std::vector<std::pair<std::string, double>> ratio;  // class -> weight
  bool oversample = false;
  uint64_t seed = 0;
};

// Parses "a:1,b:3" (weights positive); errors name the flag and the entry.
std::vector<std::pair<std::string, double>> parse_class_ratio(const std::string& s);

// Counters in the report: per class "class_in.<label>" and "class_out.<label>".
StageReport balance_classes(const std::vector<std::string>& inputs, const std::string& output, const ReadOptions& read,
                            const BalanceOptions& opt);

}  // namespace lmforge::data
