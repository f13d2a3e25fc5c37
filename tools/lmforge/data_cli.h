// Options and reporting shared by the `lmforge data` stage commands.
#pragma once
#include <string>
#include <vector>

#include "lmforge/commands.h"
#include "lmforge/data/corpus.h"

namespace lmforge::cli {

struct CommonArgs {
  std::vector<std::string> inputs;
  std::string config, output, report, field = "text", invalid_utf8 = "repair", unit = "file";
  bool skip_bad = false, quiet = false;
};

// --config --input --output (when `output`) --report --field --invalid-utf8 --text-unit --skip-bad --quiet --json
void add_common_data_options(CLI::App* sub, CommonArgs& a, Context& ctx, bool output);
data::ReadOptions read_options(const CommonArgs& a);
// Fills options not given on the command line from --config (data_config.cpp), then checks --input/--output.
void apply_data_config(CLI::App* sub, CommonArgs& a, bool output);
// Writes --report, prints the summary on stderr and, with --json, the report on stdout.
int finish_stage(const data::StageReport& r, const CommonArgs& a, const Context& ctx);

void add_data_dedup_command(CLI::App* data, Context& ctx);
void add_data_filter_command(CLI::App* data, Context& ctx);
void add_data_balance_command(CLI::App* data, Context& ctx);
void add_data_stats_command(CLI::App* data, Context& ctx);
void add_data_run_command(CLI::App* data, Context& ctx);

}  // namespace lmforge::cli
