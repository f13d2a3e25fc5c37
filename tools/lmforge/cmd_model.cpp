// lmforge init-model / forward: making a model and running it on ids.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "lmforge/commands.h"
#include "lmforge/core/error.h"
#include "lmforge/eval/model_dir.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/model/engine.h"
#include "lmforge/model/model.h"
#include "lmforge/quant/quantized_model.h"

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
  std::string model, ids_file, out, kv_type = "f32";
  bool engine = false, decode = false;
};

// Logits for every position: the f32 model (quantized dirs dequantized) by default, or the inference engine on the
// weights as stored (quantized products, the KV cache type asked for), which is what generate and serve run.
int run_forward(const ForwardArgs& a) {
  Tensor logits;
  int64_t vocab = 0;
  std::vector<int32_t> ids;
  auto check_len = [&](const model::ModelConfig& c) {
    ids = read_ids(a.ids_file, c.vocab_size);
    vocab = c.vocab_size;
    const auto T = static_cast<int64_t>(ids.size());
    if (c.max_position_embeddings > 0 && T > c.max_position_embeddings)
      throw Error(a.ids_file + ": " + std::to_string(T) + " tokens exceed max_position_embeddings " +
                  std::to_string(c.max_position_embeddings));
  };
  if (a.decode && !a.engine) throw Error("forward: --decode needs --engine");
  if (a.engine) {
    model::EngineOptions eo;
    eo.kv_dtype = kv_dtype(a.kv_type);
    model::Engine e = eval::load_engine(a.model, eo);
    check_len(e.config());
    const model::SeqId seq = e.add_sequence();
    if (a.decode) {  // one decode step a token, as generation runs after its prompt
      std::vector<Tensor> rows;
      for (int32_t id : ids) rows.push_back(e.decode({seq}, {id}));
      logits = Tensor::empty({static_cast<int64_t>(ids.size()), e.config().vocab_size}, DType::F32);
      for (size_t i = 0; i < rows.size(); ++i)
        std::memcpy(logits.data<float>() + static_cast<int64_t>(i) * e.config().vocab_size,
                    rows[i].contiguous().data<float>(), static_cast<size_t>(e.config().vocab_size) * sizeof(float));
    } else {
      logits = e.prefill(seq, ids, /*all_logits=*/true);
    }
  } else {
    model::CausalLM m = quant::load_causal_lm_any(a.model);
    check_len(m.config());
    TapeScope none(nullptr);
    logits = m.forward(Tensor::from_ints(ids, {1, static_cast<int64_t>(ids.size())})).logits.value();
  }
  logits = logits.reshape({static_cast<int64_t>(ids.size()), vocab}).to(DType::F32);
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
  fwd->add_flag("--engine", fa->engine,
                "run the inference engine (the weights' own formats, as generate and serve do) instead of the f32 "
                "model");
  fwd->add_flag("--decode", fa->decode,
                "with --engine: each position's logits from its own decode step (the kernels generation runs), not one "
                "prefill");
  add_kv_type_option(fwd, fa->kv_type);
  fwd->callback([&ctx, fa] { ctx.exit_code = run_forward(*fa); });
}

}  // namespace lmforge::cli
