// Options and reporting shared by the `lmforge data` stage commands.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/commands.h"
#include "lmforge/core/progress.h"
#include "lmforge/data/corpus.h"

namespace lmforge::cli {

struct CommonArgs {
  std::vector<std::string> inputs;
  std::string config, output, report, field = "text", invalid_utf8 = "repair", unit = "file";
  bool skip_bad = false, quiet = false;
  std::string stage;  // the subcommand's name, for progress lines
  // The stage's progress on stderr (bar on a terminal, a line every 5 s otherwise); made by read_options unless
  // --quiet, ended by finish_stage / end_progress.
  mutable std::shared_ptr<ByteProgress> progress;
};

// --config --input --output (when `output`) --report --field --invalid-utf8 --text-unit --skip-bad --quiet --json
void add_common_data_options(CLI::App* sub, CommonArgs& a, Context& ctx, bool output);
// The reader options the flags give; with progress (and not --quiet) the reader reports to a.progress.
data::ReadOptions read_options(const CommonArgs& a, bool progress = true);
// Ends the progress line so that the summary starts on its own line.
void end_progress(const CommonArgs& a);
// Fills options not given on the command line from --config (data_config.cpp), then checks --input/--output.
void apply_data_config(CLI::App* sub, CommonArgs& a, bool output);
// Writes --report, prints the summary on stderr and, with --json, the report on stdout.
int finish_stage(const data::StageReport& r, const CommonArgs& a, const Context& ctx);

// What a stage command does, as functions: `data STAGE` runs it alone (run_plan); `data run` collects the plans of
// its stages and chains them in one pass (cmd_data_run.cpp, data/pipeline.h).
struct StagePlan {
  std::string name;
  data::StageFns fns;
  const CommonArgs* common = nullptr;  // inputs, output, report, read options (owned through `keep`)
  bool writes_jsonl = true;            // false for stats and shard, which write other things
  // After the last document: adds the stage's counters, writes its report and anything else it writes, prints
  // its summary; returns the exit code.
  std::function<int(data::StageReport&)> finish;
  std::shared_ptr<void> keep;  // the stage's arguments and state, alive as long as the plan
};
// When given, a stage command hands its plan here instead of running it.
using PlanSink = std::function<void(StagePlan)>;
int run_plan(const StagePlan& p);
void dispatch(StagePlan p, Context& ctx, const PlanSink* sink);

// The stage commands (clean, dedup, filter, balance, stats, shard) under `data`; with a sink they only plan.
void add_data_stage_commands(CLI::App* data, Context& ctx, const PlanSink* sink);
void add_data_clean_command(CLI::App* data, Context& ctx, const PlanSink* sink);
void add_data_dedup_command(CLI::App* data, Context& ctx, const PlanSink* sink);
void add_data_filter_command(CLI::App* data, Context& ctx, const PlanSink* sink);
void add_data_balance_command(CLI::App* data, Context& ctx, const PlanSink* sink);
void add_data_stats_command(CLI::App* data, Context& ctx, const PlanSink* sink);
void add_data_shard_command(CLI::App* data, Context& ctx, const PlanSink* sink);
void add_data_run_command(CLI::App* data, Context& ctx);

}  // namespace lmforge::cli
