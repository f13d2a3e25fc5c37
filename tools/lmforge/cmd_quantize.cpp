// lmforge quantize: a model dir in, a quantized model dir out (docs/QUANTIZATION.md).
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lmforge/commands.h"
#include "lmforge/core/error.h"
#include "lmforge/kernels/thread_pool.h"
#include "lmforge/quant/imatrix.h"
#include "lmforge/quant/methods.h"
#include "lmforge/quant/quantized_model.h"

namespace lmforge::cli {

namespace {

struct QuantizeArgs {
  std::string model, type, out, calib, lm_head, imatrix;
  int64_t calib_tokens = 4096, calib_ctx = 256, group_size = 128;
  bool asym = false, act_order = false, awq_clip = false, allow_requantize = false;
  double damp = 0.01;
  int threads = 0;
};

quant::CalibOptions calib_options(const std::string& data, const std::string& model, int64_t tokens, int64_t ctx) {
  quant::CalibOptions co;
  co.path = data;
  co.model_dir = model;
  co.tokens = tokens;
  co.ctx = ctx;
  return co;
}

constexpr const char* kTypes =
    "f16, bf16, q8_0, q4_0, q4_g128, q4_g128_asym, int8, q4_K, q5_K, q6_K, q4_K_S, q4_K_M, q5_K_S, q5_K_M, gptq-q4, "
    "awq-q4";

int run_quantize(const QuantizeArgs& a, bool json) {
  const bool gptq = a.type == "gptq-q4", awq = a.type == "awq-q4";
  // llama.cpp's mixes: q4_K_S / q4_K_M / q5_K_S / q5_K_M (any case).
  quant::KMix mix;
  const bool k_mix = quant::parse_k_mix(a.type, &mix);
  quant::QuantConfig qc;
  if (k_mix) {
    qc.format = mix.base;
  } else if (gptq || awq) {
    qc.format = a.asym ? WeightFormat::Q4_G128_ASYM : WeightFormat::Q4_G128;
    qc.method = gptq ? "gptq" : "awq";
  } else {
    try {
      qc.format = parse_weight_format(a.type);
    } catch (const Error&) {
      std::fprintf(stderr, "lmforge quantize: --type '%s' is not a quantization type (expected one of: %s)\n",
                   a.type.c_str(), kTypes);
      return kUsageError;
    }
    if (qc.format == WeightFormat::F32) {
      std::fprintf(stderr, "lmforge quantize: --type f32 is not a quantization (expected one of: %s)\n", kTypes);
      return kUsageError;
    }
    if (a.asym && qc.format == WeightFormat::Q4_G128) qc.format = WeightFormat::Q4_G128_ASYM;
  }
  if (a.group_size != 128) {
    std::fprintf(stderr, "lmforge quantize: --group-size %lld: only 128 is implemented\n",
                 static_cast<long long>(a.group_size));
    return kUsageError;
  }
  if ((gptq || awq) && a.calib.empty()) {
    std::fprintf(stderr, "lmforge quantize: --type %s needs --calib DATA (text, JSONL or token shards)\n",
                 a.type.c_str());
    return kUsageError;
  }
  // The output layer at 6 bits or more by default, as llama.cpp does (q6_K there): 4-bit logits cost far more
  // perplexity than 4-bit hidden projections. The k-quants take llama.cpp's q6_K, the other 4- and 8-bit types
  // q8_0; 16-bit types keep it at their own precision.
  const bool k_quant = is_k_quant(qc.format);
  qc.lm_head_format = qc.format == WeightFormat::F16 || qc.format == WeightFormat::BF16 ? qc.format
                      : k_quant                                                         ? WeightFormat::Q6_K
                                                                                        : WeightFormat::Q8_0;
  if (!a.lm_head.empty()) {
    try {
      qc.lm_head_format = parse_weight_format(a.lm_head);
    } catch (const Error& e) {
      std::fprintf(stderr, "lmforge quantize: --lm-head: %s\n", e.what());
      return kUsageError;
    }
  }
  namespace fs = std::filesystem;
  if (fs::exists(a.out) && fs::exists(a.model) && fs::equivalent(a.out, a.model)) {
    std::fprintf(stderr, "lmforge quantize: --out must differ from --model\n");
    return kUsageError;
  }
  // A quantized source: its values are already rounded, and rounding them again adds a second error (llama.cpp's
  // quantize refuses the same without --allow-requantize).
  const bool requantize = quant::is_quantized_dir(a.model);
  if (requantize && !a.allow_requantize) {
    std::fprintf(stderr,
                 "lmforge quantize: %s is a quantized model dir; quantize the f32, bf16 or f16 dir it was made from, "
                 "or pass --allow-requantize to dequantize it first (the two roundings' errors add up)\n",
                 (fs::path(a.model) / "config.json").string().c_str());
    return kUsageError;
  }
  if (k_mix) {  // the mix depends on the layer count
    quant::apply_k_mix(qc, model::load_model_config((fs::path(a.model) / "config.json").string()), mix);
    qc.extra["mix"] = quant::k_mix_name(mix);
    if (!a.lm_head.empty()) qc.lm_head_format = parse_weight_format(a.lm_head);
  }
  // Importance-weighted rounding (llama-quantize --imatrix) for q4_0 and the k-quants: from an imatrix file, or one
  // computed here from --calib.
  const bool weighted = WeightMatrix::uses_importance(qc.format) || WeightMatrix::uses_importance(qc.lm_head_format);
  if (!a.imatrix.empty() && (gptq || awq)) {
    std::fprintf(stderr, "lmforge quantize: --imatrix applies to q4_0 and the k-quants, not to %s\n", a.type.c_str());
    return kUsageError;
  }
  if (!a.imatrix.empty() && !a.calib.empty()) {
    std::fprintf(stderr, "lmforge quantize: give --imatrix FILE or --calib DATA (to compute one), not both\n");
    return kUsageError;
  }
  if (!gptq && !awq && (!a.imatrix.empty() || !a.calib.empty()) && !weighted)
    std::fprintf(stderr, "lmforge quantize: warning: %s does not use an importance matrix; %s ignored\n",
                 a.type.c_str(), a.imatrix.empty() ? "--calib" : "--imatrix");
  if (!gptq && !awq && !a.calib.empty() && weighted && requantize) {
    std::fprintf(stderr,
                 "lmforge quantize: --calib computes an importance matrix from the f32 / bf16 / f16 model; %s is "
                 "quantized (make one from the original with `lmforge imatrix` and pass --imatrix)\n",
                 a.model.c_str());
    return kUsageError;
  }
  if (a.threads > 0) ThreadPool::global().set_num_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();
  quant::Importance importance;
  std::string imatrix_from;
  if (!gptq && !awq && weighted && (!a.imatrix.empty() || !a.calib.empty())) {
    const model::ModelConfig cfg = model::load_model_config((fs::path(a.model) / "config.json").string());
    quant::Imatrix im;
    if (!a.imatrix.empty()) {
      im = quant::read_imatrix(a.imatrix);
      imatrix_from = a.imatrix;
    } else {
      const quant::CalibOptions co = calib_options(a.calib, a.model, a.calib_tokens, a.calib_ctx);
      quant::ImatrixOptions io;
      io.dataset = a.calib;
      im = quant::compute_imatrix(a.model, quant::load_calibration(co), io,
                                  [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
      imatrix_from = "computed from --calib " + a.calib;
    }
    importance = quant::importance_for(im, cfg, a.imatrix.empty() ? a.calib : a.imatrix);
    if (importance.empty())
      std::fprintf(stderr, "lmforge quantize: warning: the importance matrix names none of %s's weights\n",
                   a.model.c_str());
  }
  quant::QuantizedWeights q;
  size_t before = 0, after = 0;
  std::string requantized_from;
  const auto load_f32 = [&] {  // the f32 model: a quantized source dequantized
    if (!requantize) return model::CausalLM::load(a.model);
    const quant::QuantizedWeights src = quant::load_quantized_model(a.model);
    requantized_from = std::string(weight_format_name(src.quant.format));
    for (const auto& [name, w] : src.linear) before += w.nbytes();
    for (const auto& [name, t] : src.dense) before += t.nbytes();
    return quant::dequantize_to_causal_lm(src);
  };
  if (gptq || awq) {
    const quant::CalibOptions co = calib_options(a.calib, a.model, a.calib_tokens, a.calib_ctx);
    const std::vector<Tensor> calib = quant::load_calibration(co);
    const auto log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    quant::GptqOptions go;
    go.damp = a.damp;
    go.act_order = a.act_order;
    quant::AwqOptions ao;
    ao.clip_search = a.awq_clip;
    if (requantize) {  // calibration runs the dequantized f32 model (and overwrites its weights)
      model::CausalLM m = load_f32();
      q = gptq ? quant::quantize_gptq(m, qc, calib, go, log) : quant::quantize_awq(m, qc, calib, ao, log);
    } else {  // a decoder layer of f32 weights at a time, read from the files
      q = gptq ? quant::quantize_gptq_dir(a.model, qc, calib, go, log, &before)
               : quant::quantize_awq_dir(a.model, qc, calib, ao, log, &before);
    }
    q.quant.extra["calib"] = a.calib;
    q.quant.extra["calib_tokens"] = a.calib_tokens;
  } else if (requantize) {
    q = quant::quantize_rtn(load_f32(), qc, &importance);
  } else {
    // Tensor by tensor from the files: a bf16 7B checkpoint quantizes in about the memory of its result.
    q = quant::quantize_rtn_dir(a.model, qc, &before, &importance);
  }
  if (!imatrix_from.empty()) {
    q.quant.extra["imatrix"] = imatrix_from;
    q.quant.extra["imatrix_tensors"] = importance.size();
  }
  if (requantize) q.quant.extra["requantized_from"] = requantized_from;
  quant::save_quantized_model(a.out, q, a.model);
  for (const auto& [name, w] : q.linear) after += w.nbytes();
  for (const auto& [name, t] : q.dense) after += t.nbytes();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (json) {
    nlohmann::json j{
        {"model", a.model},
        {"out", a.out},
        {"type", a.type},
        {"format", std::string(weight_format_name(q.quant.format))},
        {"method", q.quant.method},
        {"lm_head_format", std::string(weight_format_name(q.quant.lm_head_format))},
        {"bytes_in", before},
        {"bytes_out", after},
        {"not_quantized", q.quant.not_quantized},
        {"requantized_from", requantized_from.empty() ? nlohmann::json() : nlohmann::json(requantized_from)},
        {"imatrix_tensors", importance.size()},
        {"seconds", secs}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("quantized %s -> %s: %s (%s), lm_head %s; weights %.1f MB -> %.1f MB in %.1f s\n", a.model.c_str(),
                a.out.c_str(), std::string(weight_format_name(q.quant.format)).c_str(), q.quant.method.c_str(),
                std::string(weight_format_name(q.quant.lm_head_format)).c_str(), before / 1e6, after / 1e6, secs);
    if (!q.quant.not_quantized.empty())
      std::printf("kept f32 (input size not a multiple of the block): %zu tensors\n", q.quant.not_quantized.size());
  }
  return kOk;
}

struct ImatrixArgs {
  std::string model, calib, out, format;
  int64_t calib_tokens = 4096, calib_ctx = 256;
  bool process_output = false;
  int threads = 0;
};

int run_imatrix(const ImatrixArgs& a, bool json) {
  namespace fs = std::filesystem;
  std::string format = a.format;
  if (format.empty()) format = fs::path(a.out).extension() == ".dat" ? "dat" : "gguf";
  if (quant::is_quantized_dir(a.model)) {
    std::fprintf(stderr,
                 "lmforge imatrix: %s is a quantized model dir; compute the importance matrix from the f32, bf16 or "
                 "f16 dir it was made from\n",
                 a.model.c_str());
    return kUsageError;
  }
  if (a.threads > 0) ThreadPool::global().set_num_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();
  const quant::CalibOptions co = calib_options(a.calib, a.model, a.calib_tokens, a.calib_ctx);
  const std::vector<Tensor> calib = quant::load_calibration(co);
  int64_t tokens = 0;
  for (const Tensor& t : calib) tokens += t.numel();
  quant::ImatrixOptions io;
  io.process_output = a.process_output;
  io.dataset = a.calib;
  const quant::Imatrix m = quant::compute_imatrix(
      a.model, calib, io, [json](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
  quant::write_imatrix(m, a.out, format == "dat");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (json) {
    std::printf("%s\n", nlohmann::json{{"model", a.model},
                                       {"out", a.out},
                                       {"format", format},
                                       {"entries", m.entries.size()},
                                       {"chunks", m.chunk_count},
                                       {"chunk_size", m.chunk_size},
                                       {"tokens", tokens},
                                       {"seconds", secs}}
                            .dump()
                            .c_str());
  } else {
    std::printf("imatrix %s -> %s (%s): %zu tensors, %lld tokens in %lld chunks, %.1f s\n", a.model.c_str(),
                a.out.c_str(), format.c_str(), m.entries.size(), static_cast<long long>(tokens),
                static_cast<long long>(m.chunk_count), secs);
  }
  return kOk;
}

}  // namespace

void add_imatrix_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<ImatrixArgs>();
  CLI::App* c = app.add_subcommand(
      "imatrix",
      "compute an importance matrix (llama.cpp's imatrix file) from calibration data, for quantize --imatrix");
  c->add_option("--model", a->model, "model directory (f32, bf16 or f16)")->required();
  c->add_option("--calib", a->calib, "calibration data: text, .jsonl or token-shard dir")->required();
  c->add_option("--out", a->out, "output file: GGUF (llama-imatrix's format) or .dat (its legacy format)")->required();
  c->add_option("--output-format", a->format, "gguf or dat (default: dat for a .dat name, else gguf)")
      ->check(CLI::IsMember({"gguf", "dat"}));
  c->add_option("--calib-tokens", a->calib_tokens, "calibration tokens")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 30))
      ->capture_default_str();
  c->add_option("--calib-ctx", a->calib_ctx, "tokens a chunk (sequence)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  c->add_flag("--process-output", a->process_output, "also collect the LM head's inputs (llama-imatrix's flag)");
  c->add_option("--threads", a->threads, "threads")->check(CLI::Range(1, 1024));
  c->add_flag("--json", ctx.json, "print a JSON summary");
  c->callback([&ctx, a] { ctx.exit_code = run_imatrix(*a, ctx.json); });
}

void add_quantize_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* q = app.add_subcommand(
      "quantize", "quantize a model dir: q8_0, q4_0, q4_g128[_asym], int8, k-quants (q4_K_M...), GPTQ, AWQ");
  q->add_option("--model", a->model, "model directory (config.json + model.safetensors)")->required();
  q->add_option("--type", a->type, std::string("quantization: ") + kTypes)->required();
  q->add_option("--out", a->out, "output model directory")->required();
  q->add_option("--calib", a->calib,
                "calibration data (text, .jsonl or token-shard dir): gptq-q4 / awq-q4 need it; with q4_0 and the "
                "k-quants it makes an importance matrix (as --imatrix)");
  q->add_option("--imatrix", a->imatrix,
                "importance matrix for q4_0 and the k-quants: llama.cpp's GGUF or .dat file (llama-imatrix, "
                "`lmforge imatrix`)");
  q->add_option("--calib-tokens", a->calib_tokens, "calibration tokens")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 30))
      ->capture_default_str();
  q->add_option("--calib-ctx", a->calib_ctx, "calibration sequence length")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  q->add_option("--group-size", a->group_size, "group size of the 4-bit group formats (128)")->capture_default_str();
  q->add_flag("--asym", a->asym, "asymmetric 4-bit groups (q4_g128_asym: scale and zero point)");
  q->add_flag("--act-order", a->act_order, "GPTQ: quantize columns in order of decreasing Hessian diagonal");
  q->add_option("--damp", a->damp, "GPTQ: damping as a fraction of the mean Hessian diagonal")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  q->add_flag("--awq-clip", a->awq_clip, "AWQ: also search a per-group clipping ratio");
  q->add_flag("--allow-requantize", a->allow_requantize,
              "accept a quantized model dir as --model: dequantized to f32 first (its rounding error stays and the new "
              "one adds to it)");
  q->add_option("--lm-head", a->lm_head,
                "format of lm_head.weight (default q8_0; q6_K for the k-quants; 16-bit types keep their own)");
  q->add_option("--threads", a->threads, "threads")->check(CLI::Range(1, 1024));
  q->add_flag("--json", ctx.json, "print a JSON summary");
  q->callback([&ctx, a] { ctx.exit_code = run_quantize(*a, ctx.json); });
}

}  // namespace lmforge::cli
