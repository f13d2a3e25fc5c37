// Subcommands whose stage is not built yet. Each is listed in --help with what it will do and the issue that
// builds it, and exits 1 with that message when run, so nobody mistakes it for a working stage.
#include <cstdio>
#include <string>
#include <vector>

#include "lmforge/commands.h"

namespace lmforge::cli {

namespace {
struct Planned {
  const char* name;
  const char* what;
  const char* issue;
};
void add_planned(CLI::App* parent, Context& ctx, const Planned& p) {
  CLI::App* sub = parent->add_subcommand(p.name, std::string(p.what) + " [not built yet]");
  sub->allow_extras();
  sub->callback([&ctx, p, parent] {
    std::fprintf(stderr, "lmforge %s%s: not built yet; it will %s (issue %s)\n",
                 parent->get_parent() ? (parent->get_name() + " ").c_str() : "", p.name, p.what, p.issue);
    ctx.exit_code = kRuntimeError;
  });
}

}  // namespace

void add_placeholder_commands(CLI::App& app, Context& ctx) {
  static const std::vector<Planned> planned = {
      {"finetune", "SFT, LoRA, DPO and EWC fine-tuning", "a later fine-tuning issue"},
      {"serve", "OpenAI-compatible HTTP server", "a later serving issue"},
      {"runs", "list and compare experiment runs", "a later tracking issue"},
      {"report", "HTML report of a run", "a later tracking issue"},
      {"pipeline", "run the whole chain from one TOML file", "a later pipeline issue"},
  };
  for (const Planned& p : planned) add_planned(&app, ctx, p);
}

}  // namespace lmforge::cli
