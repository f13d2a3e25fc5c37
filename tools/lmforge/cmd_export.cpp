// lmforge export gguf / import gguf: model directories to and from llama.cpp's GGUF (docs/FORMATS.md).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lmforge/commands.h"
#include "lmforge/export/gguf_export.h"

namespace lmforge::cli {

namespace {

struct ExportArgs {
  std::string model, out;
  exporter::GgufExportOptions opt;
  std::vector<std::string> tensor_types;  // --tensor-type PATTERN=TYPE, split in the callback
};

struct ImportArgs {
  std::string in, out, dtype = "f32";
};

std::string types_str(const std::map<std::string, int64_t>& types) {
  std::string s;
  for (const auto& [name, n] : types) s += (s.empty() ? "" : ", ") + name + " " + std::to_string(n);
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

int run_export(const ExportArgs& a, bool json) {
  const auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "export gguf: %s -> %s (%s)\n", a.model.c_str(), a.out.c_str(), a.opt.type.c_str());
  exporter::GgufExportOptions opt = a.opt;
  // Progress by tensor written: redrawn in place on a terminal; otherwise a line at most every 5 s, so logs stay short.
  const bool tty = ::isatty(2) != 0;
  auto last = t0;
  opt.progress = [&](int64_t done, int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (tty) {
      std::fprintf(stderr, "\rexport gguf: tensor %lld/%lld", static_cast<long long>(done),
                   static_cast<long long>(total));
      if (done == total) std::fputc('\n', stderr);
    } else if (std::chrono::duration<double>(now - last).count() >= 5.0 && done < total) {
      std::fprintf(stderr, "export gguf: tensor %lld/%lld, %.0f s\n", static_cast<long long>(done),
                   static_cast<long long>(total), seconds_since(t0));
      last = now;
    }
  };
  const exporter::GgufExportSummary s = exporter::export_gguf(a.model, a.out, opt);
  if (json) {
    nlohmann::json j = {{"out", a.out},
                        {"architecture", s.architecture},
                        {"type", a.opt.type},
                        {"pre", s.pre},
                        {"tensors", s.tensors},
                        {"quantized_tensors", s.quantized},
                        {"blocks_copied", s.blocks_copied},
                        {"imatrix_tensors", s.imatrix_used},
                        {"bytes", s.bytes},
                        {"seconds", seconds_since(t0)}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::fprintf(stderr,
                 "export gguf: architecture %s, %lld tensors (%lld in %s, the rest f32), tokenizer pre \"%s\", "
                 "%.1f MB in %.1f s\n",
                 s.architecture.c_str(), static_cast<long long>(s.tensors), static_cast<long long>(s.quantized),
                 a.opt.type.c_str(), s.pre.c_str(), static_cast<double>(s.bytes) / 1e6, seconds_since(t0));
  }
  return kOk;
}

int run_import(const ImportArgs& a, bool json) {
  const auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "import gguf: %s -> %s\n", a.in.c_str(), a.out.c_str());
  const bool keep = a.dtype == "keep";
  const exporter::GgufImportSummary s =
      exporter::import_gguf(a.in, a.out, keep ? DType::F32 : parse_dtype(a.dtype), keep);
  if (json) {
    nlohmann::json j = {{"out", a.out},
                        {"architecture", s.architecture},
                        {"model_type", s.model_type},
                        {"tensors", s.tensors},
                        {"dtype", a.dtype},
                        {"source_types", s.source_types},
                        {"blocks_copied", s.copied},
                        {"requantized", s.requantized},
                        {"tokenizer", s.tokenizer},
                        {"seconds", seconds_since(t0)}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::string how = a.dtype;
    if (a.dtype == "q8_0" || a.dtype == "q4_0" || keep)
      how += "; " + std::to_string(s.copied) + " projections' blocks copied, " + std::to_string(s.requantized) +
             " requantized";
    std::fprintf(stderr, "import gguf: %s -> model_type %s, %lld tensors (%s, from %s)%s, %.1f s\n",
                 s.architecture.c_str(), s.model_type.c_str(), static_cast<long long>(s.tensors), how.c_str(),
                 types_str(s.source_types).c_str(), s.tokenizer ? ", tokenizer.json" : ", no tokenizer in the file",
                 seconds_since(t0));
  }
  return kOk;
}

}  // namespace

void add_export_commands(CLI::App& app, Context& ctx) {
  CLI::App* exp = app.add_subcommand("export", "export a model directory to another format (GGUF, ONNX)");
  exp->require_subcommand(1);
  add_export_onnx_command(exp, ctx);
  auto ea = std::make_shared<ExportArgs>();
  CLI::App* g =
      exp->add_subcommand("gguf", "write a GGUF v3 file llama.cpp loads (architectures llama, qwen2, deepseek2)");
  g->add_option("--model", ea->model,
                "model directory (config.json, model.safetensors, tokenizer.json); a quantized dir's q8_0 / q4_0 / "
                "k-quant blocks are copied where --type gives a tensor their type")
      ->required();
  g->add_option("--out", ea->out, "GGUF file to write (atomically)")->required();
  g->add_option("--type", ea->opt.type,
                "weight matrix type: f32, f16, q8_0, q4_0, q4_K, q5_K, q6_K (the k-quants' output layer q6_K), "
                "q4_K_S, q4_K_M, q5_K_S, q5_K_M (llama.cpp's mixes), or keep (each tensor as the dir stores it; "
                "lmforge's g128 / int8 "
                "formats as "
                "q8_0); norms, biases and the MoE router stay f32")
      ->check(CLI::IsMember(
          {"f32", "f16", "q8_0", "q4_0", "q4_K", "q5_K", "q6_K", "q4_K_S", "q4_K_M", "q5_K_S", "q5_K_M", "keep"}))
      ->capture_default_str();
  g->add_option("--pre", ea->opt.pre,
                "tokenizer.ggml.pre (default: matched from tokenizer.json: deepseek-v3, llama-bpe, qwen2, gpt-2)");
  g->add_option("--name", ea->opt.name, "general.name (default: the model directory's name)");
  g->add_option(
      "--imatrix", ea->opt.imatrix,
      "importance matrix (llama.cpp GGUF or .dat) for the q4_0 / k-quant tensors, as llama-quantize --imatrix");
  // llama-quantize's type overrides, under its flag names.
  g->add_option("--output-tensor-type", ea->opt.output_type, "output.weight's type (f32 f16 q8_0 q4_0 q4_K q5_K q6_K)");
  g->add_option("--token-embedding-type", ea->opt.token_embd_type,
                "token_embd.weight's type (as --output-tensor-type)");
  g->add_option(
      "--tensor-type", ea->tensor_types,
      "PATTERN=TYPE (repeatable): weights whose GGUF name matches the regular expression take TYPE; the first "
      "matching pattern wins and the mix's rules are skipped for it");
  g->add_flag("--pure", ea->opt.pure,
              "the base type for every weight matrix: no mix, output.weight not raised to q6_K");
  g->add_flag("--leave-output-tensor", ea->opt.leave_output, "output.weight as the source stores it (not quantized)");
  g->add_flag("--json", ctx.json, "print a JSON summary on stdout");
  g->callback([&ctx, ea] {
    for (const std::string& tt : ea->tensor_types) {
      const size_t eq = tt.rfind('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == tt.size()) {
        std::fprintf(stderr, "lmforge export gguf: --tensor-type %s: expected PATTERN=TYPE\n", tt.c_str());
        ctx.exit_code = kUsageError;
        return;
      }
      ea->opt.tensor_types.emplace_back(tt.substr(0, eq), tt.substr(eq + 1));
    }
    ctx.exit_code = run_export(*ea, ctx.json);
  });

  CLI::App* imp = app.add_subcommand("import", "import a model from another format (GGUF) as a model directory");
  imp->require_subcommand(1);
  auto ia = std::make_shared<ImportArgs>();
  CLI::App* gi = imp->add_subcommand("gguf",
                                     "read a llama, qwen2 or deepseek2 GGUF (f32, f16, bf16, q4_0..q8_0, k-quants, "
                                     "iq4_nl/iq4_xs) into config.json, model.safetensors, tokenizer.json");
  gi->add_option("--in", ia->in, "GGUF file")->required();
  gi->add_option("--out", ia->out, "model directory to write")->required();
  gi->add_option(
        "--dtype", ia->dtype,
        "weight type: f32, bf16, f16 (every tensor dequantized), or q8_0, q4_0 (a quantized model dir: "
        "projections already in that type keep the file's blocks, the rest are requantized), or keep (each "
        "projection in the file's own type where lmforge runs it: f32, f16, bf16, q8_0, q4_0, q4_K, q5_K, q6_K; "
        "others requantized to q6_K)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "q8_0", "q4_0", "keep"}))
      ->capture_default_str();
  gi->add_flag("--json", ctx.json, "print a JSON summary on stdout");
  gi->callback([&ctx, ia] { ctx.exit_code = run_import(*ia, ctx.json); });
}

}  // namespace lmforge::cli
