// Several corpus stages in one streaming pass (`lmforge data run`): each batch of documents goes through every
// stage in turn — map in parallel, then ordered in input order — and only a stage's survivors reach the next, so
// no intermediate file is written and the text is parsed once. Decisions are the same as running the stages one
// after another on files, because every stage decides in input order and map is per document.
//
// Each stage's report counts what that stage saw, as if it had read the previous stage's output: documents_in of
// stage k+1 = documents_out of stage k, drops by reason, its own counters. The reader's own counts (bad lines,
// UTF-8 repairs) are in the first stage's report only. `seconds` is the stage's own time (its map and ordered
// work); reading is charged to the first stage and writing to the last, so mb_per_s is per stage.
#pragma once
#include <string>
#include <vector>

#include "lmforge/data/corpus.h"

namespace lmforge::data {

struct PipelineStage {
  std::string name;
  StageFns fns;
};

// Runs the stages over the inputs; the last stage's survivors are written to `output` (JSONL, atomically; "" for
// none). Returns one report per stage, in order.
std::vector<StageReport> run_pipeline(const std::vector<PipelineStage>& stages, const std::vector<std::string>& inputs,
                                      const std::string& output, const ReadOptions& opt);

}  // namespace lmforge::data
