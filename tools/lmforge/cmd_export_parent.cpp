// The `export` parent command, as long as this branch has only `export onnx`. Branch `export` brings
// tools/lmforge/cmd_export.cpp with the real parent and `export gguf`; at the merge this file is deleted and that
// parent calls add_export_onnx_command(export_cmd, ctx).
#include "lmforge/commands.h"

namespace lmforge::cli {

void add_export_command(CLI::App& app, Context& ctx) {
  CLI::App* e = app.add_subcommand("export", "export a model to other tools' formats (onnx)");
  e->require_subcommand(1);
  add_export_onnx_command(e, ctx);
}

}  // namespace lmforge::cli
