// lmforge prune: structured FFN pruning by L1 norm into a normal f32 model dir that `lmforge train` can fine-tune.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lmforge/commands.h"
#include "lmforge/io/atomic_file.h"
#include "lmforge/quant/methods.h"

namespace lmforge::cli {

namespace {

struct PruneArgs {
  std::string model, out;
  double ratio = 0.2;
};

int run_prune(const PruneArgs& a, bool json) {
  namespace fs = std::filesystem;
  if (fs::exists(a.out) && fs::exists(a.model) && fs::equivalent(a.out, a.model)) {
    std::fprintf(stderr, "lmforge prune: --out must differ from --model\n");
    return kUsageError;
  }
  const model::CausalLM m = model::CausalLM::load(a.model);
  quant::PruneReport r;
  const model::CausalLM p = quant::prune_ffn(m, a.ratio, &r);
  p.save(a.out);
  for (const char* f :
       {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"}) {
    const fs::path src = fs::path(a.model) / f;
    if (!fs::exists(src)) continue;
    std::ifstream in(src, std::ios::binary);
    io::write_file_atomic((fs::path(a.out) / f).string(),
                          std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
  }
  if (json) {
    nlohmann::json j{{"model", a.model},
                     {"out", a.out},
                     {"ratio", a.ratio},
                     {"intermediate_size", {r.intermediate_before, r.intermediate_after}},
                     {"moe_intermediate_size", {r.moe_intermediate_before, r.moe_intermediate_after}},
                     {"params", {r.params_before, r.params_after}}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("pruned %s -> %s: intermediate_size %lld -> %lld", a.model.c_str(), a.out.c_str(),
                static_cast<long long>(r.intermediate_before), static_cast<long long>(r.intermediate_after));
    if (r.moe_intermediate_before > 0)
      std::printf(", moe_intermediate_size %lld -> %lld", static_cast<long long>(r.moe_intermediate_before),
                  static_cast<long long>(r.moe_intermediate_after));
    std::printf("; parameters %lld -> %lld\n", static_cast<long long>(r.params_before),
                static_cast<long long>(r.params_after));
  }
  return kOk;
}

}  // namespace

void add_prune_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<PruneArgs>();
  CLI::App* p = app.add_subcommand("prune", "remove the smallest-L1 FFN channels (structured pruning)");
  p->add_option("--model", a->model, "model directory")->required();
  p->add_option("--ratio", a->ratio, "fraction of FFN channels to remove, e.g. 0.2")->capture_default_str();
  p->add_option("--out", a->out, "output model directory (f32)")->required();
  p->add_flag("--json", ctx.json, "print a JSON summary");
  p->callback([&ctx, a] {
    if (a->ratio <= 0.0 || a->ratio >= 1.0) {
      std::fprintf(stderr, "lmforge prune: --ratio must be strictly between 0 and 1, got %g\n", a->ratio);
      ctx.exit_code = kUsageError;
      return;
    }
    ctx.exit_code = run_prune(*a, ctx.json);
  });
}

}  // namespace lmforge::cli
