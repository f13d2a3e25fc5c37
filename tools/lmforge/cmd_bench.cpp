// lmforge bench: benchmarks with side-by-side references (see bench/README.md and docs/PERFORMANCE.md).
#include <cstdio>
#include <memory>
#include <string>

#include "bench_ops.h"
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
  ops->callback([&ctx, args, repeats] {
    args->repeats_given = repeats->count() > 0;
    ctx.exit_code = run_bench_ops(*args, ctx.json);
  });
  add_bench_train_command(bench, ctx);
}

}  // namespace lmforge::cli
