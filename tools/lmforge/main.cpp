// lmforge: one binary, one subcommand per stage of a model's life (DESIGN.md section 5).
#include <cstdio>
#include <exception>
#include <iostream>

#include "lmforge/commands.h"
#include "lmforge/core/error.h"
#include "lmforge/version.h"

namespace {

int run(int argc, char** argv) {
  using namespace lmforge::cli;
  CLI::App app{
      "lmforge: data, tokenizer, pretraining, fine-tuning, evaluation, quantization, export and serving "
      "for DeepSeek-style language models, in one native binary.",
      "lmforge"};
  app.set_version_flag("--version", std::string("lmforge ") + LMFORGE_VERSION);
  // At most one subcommand; "none" is reported after parsing so an unknown flag is named first.
  app.require_subcommand(0, 1);
  Context ctx;
  add_tokenizer_command(app, ctx);
  add_bench_command(app, ctx);
  add_model_commands(app, ctx);
  add_data_command(app, ctx);
  add_train_command(app, ctx);
  add_export_commands(app, ctx);
  add_eval_command(app, ctx);
  add_quantize_command(app, ctx);
  add_imatrix_command(app, ctx);
  add_prune_command(app, ctx);
  add_generate_command(app, ctx);
  add_placeholder_commands(app, ctx);
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      std::fprintf(stderr, "lmforge: a subcommand is required (see lmforge --help)\n");
      return kUsageError;
    }
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kUsageError;  // bad usage: always 2, whatever CLI11's own code
  } catch (const lmforge::Error& e) {
    std::fprintf(stderr, "lmforge: error: %s\n", e.what());
    return kUsageError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lmforge: failed: %s\n", e.what());
    return kRuntimeError;
  }
  return ctx.exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (...) {  // setting up the command line itself failed (e.g. out of memory)
    std::fprintf(stderr, "lmforge: failed before parsing the command line\n");
    return lmforge::cli::kRuntimeError;
  }
}
