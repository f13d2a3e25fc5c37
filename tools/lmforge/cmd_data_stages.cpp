// lmforge data dedup | filter | stats.
#include <cstdio>
#include <string>

#include "data_cli.h"

namespace lmforge::cli {

namespace {
void planned(CLI::App* data, Context& ctx, const char* name, const char* what) {
  CLI::App* sub = data->add_subcommand(name, std::string(what) + " [not built yet]");
  sub->allow_extras();
  sub->callback([&ctx, name] {
    std::fprintf(stderr, "lmforge data %s: not built yet (issue #4)\n", name);
    ctx.exit_code = kRuntimeError;
  });
}
}  // namespace

void add_data_dedup_command(CLI::App* data, Context& ctx) {
  planned(data, ctx, "dedup", "exact and MinHash near-duplicate removal");
}
void add_data_filter_command(CLI::App* data, Context& ctx) {
  planned(data, ctx, "filter", "length, language, quality and domain filters");
}
void add_data_stats_command(CLI::App* data, Context& ctx) {
  planned(data, ctx, "stats", "corpus statistics");
}

}  // namespace lmforge::cli
