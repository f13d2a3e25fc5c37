// lmforge init-model / forward: making a model and running it on ids.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "lmforge/commands.h"
#include "lmforge/core/error.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/model/model.h"

namespace lmforge::cli {

namespace {

struct InitArgs {
  std::string config, out, dtype = "f32";
  uint64_t seed = 0;
};

int run_init(const InitArgs& a, bool json) {
  model::ModelConfig cfg = model::load_model_config(a.config);
  DType dt = a.dtype == "bf16" ? DType::BF16 : a.dtype == "f16" ? DType::F16 : DType::F32;
  model::CausalLM m(cfg);
  m.init_random(a.seed);
  m.save(a.out, dt);
  if (json) {
    std::printf("{\"out\":\"%s\",\"params\":%lld,\"model_type\":\"%s\"}\n", a.out.c_str(),
                static_cast<long long>(m.num_parameters()), cfg.model_type.c_str());
  } else {
    std::fprintf(stderr, "init-model: %s model, %lld parameters, seed %llu -> %s\n", cfg.model_type.c_str(),
                 static_cast<long long>(m.num_parameters()), static_cast<unsigned long long>(a.seed), a.out.c_str());
  }
  return kOk;
}

std::vector<int32_t> read_ids(const std::string& path, int64_t vocab) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open ids file");
  std::vector<int32_t> ids;
  std::string tok;
  while (f >> tok) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    LMF_CHECK(used == tok.size(), path, ": token ", ids.size(), " '", tok, "' is not an integer");
    LMF_CHECK(v >= 0 && v < vocab, path, ": token id ", tok, " (position ", ids.size(), ") outside [0, ", vocab,
              ") (vocab_size)");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) throw Error(path + ": no token ids");
  return ids;
}

struct ForwardArgs {
  std::string model, ids_file, out;
};

int run_forward(const ForwardArgs& a) {
  model::CausalLM m = model::CausalLM::load(a.model);
  const std::vector<int32_t> ids = read_ids(a.ids_file, m.config().vocab_size);
  const auto T = static_cast<int64_t>(ids.size());
  if (m.config().max_position_embeddings > 0 && T > m.config().max_position_embeddings)
    throw Error(a.ids_file + ": " + std::to_string(T) + " tokens exceed max_position_embeddings " +
                std::to_string(m.config().max_position_embeddings));
  Tensor logits;
  {
    TapeScope none(nullptr);
    logits = m.forward(Tensor::from_ints(ids, {1, T})).logits.value();
  }
  logits = logits.reshape({T, m.config().vocab_size}).to(DType::F32);
  io::save_safetensors(a.out, {{"logits", logits}}, {{"model", a.model}});
  return kOk;
}

}  // namespace

void add_model_commands(CLI::App& app, Context& ctx) {
  auto ia = std::make_shared<InitArgs>();
  CLI::App* init = app.add_subcommand("init-model", "write a randomly initialised model directory from a config.json");
  init->add_option("--config", ia->config, "HF config.json (model_type llama or deepseek_v3)")->required();
  init->add_option("--seed", ia->seed, "random seed (normal with initializer_range)")->capture_default_str();
  init->add_option("--out", ia->out, "model directory to write")->required();
  init->add_option("--dtype", ia->dtype, "weight dtype in model.safetensors")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
  init->add_flag("--json", ctx.json, "print a JSON summary");
  init->callback([&ctx, ia] { ctx.exit_code = run_init(*ia, ctx.json); });

  auto fa = std::make_shared<ForwardArgs>();
  CLI::App* fwd = app.add_subcommand("forward", "run a model on token ids and write the logits");
  fwd->add_option("--model", fa->model, "model directory")->required();
  fwd->add_option("--ids-file", fa->ids_file, "whitespace-separated token ids")->required();
  fwd->add_option("--out", fa->out, "safetensors file with one f32 tensor 'logits' [T, vocab_size]")->required();
  fwd->callback([&ctx, fa] { ctx.exit_code = run_forward(*fa); });
}

}  // namespace lmforge::cli
