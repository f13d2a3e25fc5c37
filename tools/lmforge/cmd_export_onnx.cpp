// lmforge export onnx: a model directory to an ONNX decoder with past-key-values (see docs/FORMATS.md, ## ONNX).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "lmforge/commands.h"
#include "lmforge/export/onnx.h"
#include "lmforge/model/model.h"

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
  model::CausalLM m = model::CausalLM::load(a.model);
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
    std::printf(
        "{\"out\":\"%s\",\"external_data\":\"%s\",\"nodes\":%lld,\"initializers\":%lld,\"weight_bytes\":%lld,"
        "\"onnx_bytes\":%lld,\"opset\":%lld,\"ir_version\":%lld,\"seconds\":%.3f}\n",
        a.out.c_str(), r.external_file.c_str(), static_cast<long long>(r.nodes), static_cast<long long>(r.initializers),
        static_cast<long long>(r.weight_bytes), static_cast<long long>(r.onnx_bytes), static_cast<long long>(r.opset),
        static_cast<long long>(r.ir_version), secs);
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
