// lmforge export onnx: a model directory to an ONNX decoder with past-key-values (see docs/FORMATS.md, ## ONNX).
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lmforge/commands.h"
#include "lmforge/export/onnx.h"
#include "lmforge/model/model.h"
#include "lmforge/quant/quantized_model.h"

namespace lmforge::cli {

namespace {

struct OnnxArgs {
  std::string model, out, external_data = "auto", moe_dispatch = "sparse";
  bool quiet = false;
};

int run_export_onnx(const OnnxArgs& a, bool json) {
  const auto t0 = std::chrono::steady_clock::now();
  auto log = [&](const std::string& line) {
    if (!a.quiet && !json) std::fprintf(stderr, "export onnx: %s\n", line.c_str());
  };
  log("loading " + a.model);
  // A quantized dir exports its dequantized weights (the graph is f32): the values the quantized model computes with.
  const bool quantized = quant::is_quantized_dir(a.model);
  model::CausalLM m = quant::load_causal_lm_any(a.model);
  if (quantized) log("a quantized model dir: its weights go into the graph dequantized to f32");
  exporter::OnnxExportOptions opt;
  opt.external_data = a.external_data == "always"  ? exporter::OnnxExportOptions::ExternalData::Always
                      : a.external_data == "never" ? exporter::OnnxExportOptions::ExternalData::Never
                                                   : exporter::OnnxExportOptions::ExternalData::Auto;
  opt.moe_dispatch = a.moe_dispatch == "dense" ? exporter::OnnxExportOptions::MoeDispatch::Dense
                                               : exporter::OnnxExportOptions::MoeDispatch::Sparse;
  log("building and checking the graph (" + m.config().model_type + ", " +
      std::to_string(m.config().num_hidden_layers) + " layers, " + std::to_string(m.num_parameters()) + " parameters)");
  const exporter::OnnxExportResult r = exporter::export_onnx(m, a.out, opt);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (json) {
    const nlohmann::json j{{"out", a.out},
                           {"external_data", r.external_file},
                           {"nodes", r.nodes},
                           {"initializers", r.initializers},
                           {"weight_bytes", r.weight_bytes},
                           {"onnx_bytes", r.onnx_bytes},
                           {"opset", r.opset},
                           {"ir_version", r.ir_version},
                           {"dequantized", quantized},
                           {"seconds", secs}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    log("wrote " + a.out + " (" + std::to_string(r.nodes) + " nodes, opset " + std::to_string(r.opset) + ", " +
        std::to_string(r.weight_bytes) + " bytes of weights" +
        (r.external_file.empty() ? " inline" : " in " + r.external_file) + "; passed onnx::checker)");
  }
  return kOk;
}

}  // namespace

void add_export_onnx_command(CLI::App* export_cmd, Context& ctx) {
  auto a = std::make_shared<OnnxArgs>();
  CLI::App* sub = export_cmd->add_subcommand(
      "onnx",
      "ONNX decoder with past-key-values (optimum names: input_ids, attention_mask, position_ids, "
      "past_key_values.N.key/value -> logits, present.N.key/value), opset 17, float32");
  sub->add_option("--model", a->model, "model directory (config.json + model.safetensors)")->required();
  sub->add_option("--out", a->out, "ONNX file to write")->required();
  sub->add_option("--external-data", a->external_data,
                  "weights in OUT.data beside OUT: auto (when over 2 GB), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  sub->add_option("--moe-dispatch", a->moe_dispatch,
                  "deepseek_v3 experts: sparse (each expert on the tokens that chose it) or dense (every expert on "
                  "every token, weight 0 where not chosen; static shapes)")
      ->check(CLI::IsMember({"sparse", "dense"}))
      ->capture_default_str();
  sub->add_flag("--quiet", a->quiet, "no log lines");
  sub->add_flag("--json", ctx.json, "print a JSON summary on stdout");
  sub->callback([&ctx, a] { ctx.exit_code = run_export_onnx(*a, ctx.json); });
}

}  // namespace lmforge::cli
