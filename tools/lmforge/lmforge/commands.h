// Subcommand registration. Each command file adds its subcommand to the app and returns the exit code through
// the shared `exit_code` slot when it runs.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "lmforge/core/dtype.h"

namespace lmforge::cli {

// Exit codes (DESIGN.md section 5).
constexpr int kOk = 0;
constexpr int kRuntimeError = 1;
constexpr int kUsageError = 2;

struct Context {
  int exit_code = kOk;
  bool json = false;  // --json: machine-readable result on stdout
};

void add_bench_command(CLI::App& app, Context& ctx);
void add_tokenizer_command(CLI::App& app, Context& ctx);
void add_tokenizer_train_command(CLI::App& tokenizer_cmd, Context& ctx);
void add_placeholder_commands(CLI::App& app, Context& ctx);
void add_model_commands(CLI::App& app, Context& ctx);  // init-model, forward
void add_data_command(CLI::App& app, Context& ctx);    // data shard (+ planned stages)
void add_data_shard_command(CLI::App* data, Context& ctx);
void add_train_command(CLI::App& app, Context& ctx);          // train
void add_bench_train_command(CLI::App* bench, Context& ctx);  // bench train
void add_bench_quant_command(CLI::App* bench, Context& ctx);  // bench quant
void add_quantize_command(CLI::App& app, Context& ctx);       // quantize
void add_imatrix_command(CLI::App& app, Context& ctx);        // imatrix
void add_prune_command(CLI::App& app, Context& ctx);          // prune
void add_export_commands(CLI::App& app, Context& ctx);        // export gguf, import gguf

// export onnx (cmd_export_onnx.cpp), under the `export` parent of cmd_export.cpp.
void add_export_onnx_command(CLI::App* export_cmd, Context& ctx);

// --kv-type f16|f32 (the engine's KV cache element type) on a command that runs the engine; `value` starts as the
// command's default.
void add_kv_type_option(CLI::App* cmd, std::string& value);
// "f16" -> DType::F16, otherwise DType::F32 (the option's check admits only the two).
DType kv_dtype(const std::string& value);

// Inference (issue 5): bench generate, generate, eval perplexity | choice | generate.
void add_bench_generate_command(CLI::App* bench, Context& ctx);
void add_generate_command(CLI::App& app, Context& ctx);
void add_eval_command(CLI::App& app, Context& ctx);

}  // namespace lmforge::cli
