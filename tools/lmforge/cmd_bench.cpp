// lmforge bench: benchmarks with side-by-side references (see bench/README.md and docs/PERFORMANCE.md).
#include <cstdio>
#include <memory>
#include <string>

#include "bench_ops.h"
#include "bench_tokenizer.h"
#include "lmforge/commands.h"

namespace lmforge::cli {

namespace {

struct BenchOpsArgs {
  bench::OpsOptions opt;
  bool repeats_given = false;
};

int run_bench_ops(const BenchOpsArgs& args, bool json) {
  bench::OpsOptions opt = args.opt;
  if (opt.quick && !args.repeats_given) opt.repeats = 3;
  bool any = false;
  for (const bench::OpCase& c : bench::ops_cases(opt))
    if (opt.filter.empty() || (c.op + " " + c.shape).find(opt.filter) != std::string::npos) any = true;
  if (!any) {
    std::fprintf(stderr, "lmforge bench ops: --filter '%s' matches no benchmark (try 'matmul', 'attention', 'adamw')\n",
                 opt.filter.c_str());
    return kUsageError;
  }
  if (!json) {
    std::printf(
        "lmforge bench ops: %d thread(s); median of %d samples per side, ours and reference interleaved, "
        "warm-up not counted; calls under 5 ms are timed in back-to-back batches\n",
        opt.threads, opt.repeats);
    std::printf("ratio = reference ms / ours ms (above 1: ours faster; for GB/s rows: fraction of copy bandwidth)\n\n");
    std::printf("%s\n", bench::table_header().c_str());
    std::fflush(stdout);
  }
  bench::run_ops(opt, [json](const bench::OpResult& r) {
    std::printf("%s\n", json ? bench::to_json_line(r).c_str() : bench::table_row(r).c_str());
    std::fflush(stdout);
  });
  return kOk;
}

int run_bench_tokenizer(const bench::TokenizerBenchOptions& opt, bool json) {
  auto rows = bench::run_tokenizer_bench(opt);
  double ours1 = 0, hf1 = 0, oursn = 0, hfn = 0;
  for (const auto& r : rows) {
    if (r.side == "lmforge") (r.threads == 1 && r.what.find("1 thread") != std::string::npos ? ours1 : oursn) = r.mb_s;
    if (r.side == "hf") (r.what.find("1 thread") != std::string::npos ? hf1 : hfn) = r.mb_s;
  }
  if (json) {
    for (const auto& r : rows)
      std::printf("{\"side\":\"%s\",\"what\":\"%s\",\"threads\":%d,\"mb_s\":%.3f,\"tokens\":%zu}\n", r.side.c_str(),
                  r.what.c_str(), r.threads, r.mb_s, r.tokens);
    return kOk;
  }
  std::printf("lmforge bench tokenizer: %s on %s (first %zu bytes, documents of ~%zu bytes); best of %d\n\n",
              opt.tokenizer.c_str(), opt.input.c_str(), opt.max_bytes, opt.doc_bytes, opt.repeats);
  std::printf("%-8s %-22s %7s %10s %10s\n", "side", "what", "threads", "MB/s", "tokens");
  for (const auto& r : rows)
    std::printf("%-8s %-22s %7d %10.2f %10zu\n", r.side.c_str(), r.what.c_str(), r.threads, r.mb_s, r.tokens);
  if (hf1 > 0) std::printf("\nratio (lmforge / hf): 1 thread %.2fx, batch %.2fx\n", ours1 / hf1, oursn / hfn);
  return kOk;
}

}  // namespace

void add_bench_command(CLI::App& app, Context& ctx) {
  CLI::App* bench = app.add_subcommand("bench", "measure lmforge against references, side by side");
  bench->require_subcommand(1);
  CLI::App* ops = bench->add_subcommand(
      "ops", "time engine ops against raw OpenBLAS, naive materialised attention and copy bandwidth");
  auto args = std::make_shared<BenchOpsArgs>();
  ops->add_flag("--json", ctx.json, "one JSON object per line: op, shape, threads, ms, gflops|gbps, reference, ratio");
  ops->add_option("--threads", args->opt.threads, "threads for ours and for OpenBLAS in the reference")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  CLI::Option* repeats = ops->add_option("--repeats", args->opt.repeats, "timed repetitions per side; median reported")
                             ->check(CLI::Range(1, 100000))
                             ->capture_default_str();
  ops->add_flag("--quick", args->opt.quick, "small shapes and 3 repeats (CI, demo; a few seconds)");
  ops->add_option("--filter", args->opt.filter, "only cases whose 'op shape' contains this substring");
  auto tok = std::make_shared<bench::TokenizerBenchOptions>();
  CLI::App* t =
      bench->add_subcommand("tokenizer", "encode MB/s of lmforge and HF tokenizers (Node binding), side by side");
  t->add_option("--tokenizer", tok->tokenizer, "tokenizer.json")->required()->check(CLI::ExistingFile);
  t->add_option("--input", tok->input, "text file to encode")->required()->check(CLI::ExistingFile);
  t->add_option("--doc-bytes", tok->doc_bytes, "document size (cut after a newline)")->capture_default_str();
  t->add_option("--max-bytes", tok->max_bytes, "bytes of the input to use")->capture_default_str();
  t->add_option("--threads", tok->threads, "threads for the batch rows")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  t->add_option("--repeats", tok->repeats, "timed runs of ours; best reported")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  t->add_option("--hf-script", tok->hf_script, "bench_hf.js for the HF side; empty: skip it")->capture_default_str();
  t->add_flag("--json", ctx.json, "one JSON object per row");
  t->callback([&ctx, tok] { ctx.exit_code = run_bench_tokenizer(*tok, ctx.json); });
  ops->callback([&ctx, args, repeats] {
    args->repeats_given = repeats->count() > 0;
    ctx.exit_code = run_bench_ops(*args, ctx.json);
  });
  add_bench_train_command(bench, ctx);
  add_bench_quant_command(bench, ctx);
  add_bench_generate_command(bench, ctx);
}

}  // namespace lmforge::cli
