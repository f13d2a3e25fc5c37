// lmforge data run --config pipeline.toml: the stages listed in [pipeline], with the options of their sections.
// By default they run in one streaming pass in this process (data/pipeline.h): each stage is set up exactly as
// `lmforge data STAGE --config pipeline.toml ...` would set it up (the same command-line parser builds its plan),
// documents flow from stage to stage in memory, every stage writes its own report, and only the last JSONL stage
// writes its output. `--processes` (and any pipeline with balance, which reads its input twice) runs each stage as
// its own process on the previous stage's output file instead. Outputs go to [pipeline] work (STEP-STAGE.jsonl,
// STEP-STAGE.report.json; stats writes STEP-stats.json, shard the folder STEP-shard).
#include <sys/wait.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "data_cli.h"
#include "lmforge/core/error.h"
#include "lmforge/data/pipeline.h"

namespace lmforge::cli {

namespace {

struct RunArgs {
  std::string config;
  bool dry_run = false;
  bool processes = false;
  bool quiet = false;
};

int run_child(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("data run: fork failed");
  if (pid == 0) {
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : kRuntimeError;
}

// The stages in one pass. Each stage's plan comes from parsing the command line the process chain would run
// (so flags, config sections and checks are the same), with no --input for later stages: their input is the
// previous stage's survivors in memory. Only the last stage that writes JSONL writes its file.
int run_fused(const RunArgs& a, const std::vector<std::string>& names, const std::string& work) {
  std::vector<StagePlan> plans;
  std::vector<Context> contexts(names.size());
  PlanSink sink = [&plans](StagePlan p) { plans.push_back(std::move(p)); };
  int last_jsonl = -1;
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] != "stats" && names[i] != "shard") last_jsonl = static_cast<int>(i);
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string step = work + "/" + std::to_string(i + 1) + "-" + names[i];
    std::vector<std::string> args = {"data", names[i], "--config", a.config};
    if (a.quiet) args.push_back("--quiet");
    if (names[i] == "stats")
      args.insert(args.end(), {"--report", step + ".json"});
    else
      args.insert(args.end(),
                  {"--output", names[i] == "shard" ? step : step + ".jsonl", "--report", step + ".report.json"});
    std::string line = "lmforge";
    for (const auto& s : args) line += " " + s;
    if (!a.quiet || a.dry_run)
      std::fprintf(stderr, "data run: %s%s\n", line.c_str(),
                   names[i] == "shard" || names[i] == "stats" || static_cast<int>(i) == last_jsonl
                       ? ""
                       : "  (in memory: no file)");
    if (a.dry_run) continue;
    CLI::App app("lmforge");
    CLI::App* data = app.add_subcommand("data");
    add_data_stage_commands(data, contexts[i], &sink);
    std::vector<std::string> argv(args.rbegin(), args.rend());  // CLI11 takes arguments in reverse order
    try {
      app.parse(argv);
    } catch (const CLI::ParseError& e) {
      throw Error("data run: stage " + names[i] + " failed: " + a.config + ": " + e.what());
    } catch (const Error& e) {
      throw Error("data run: stage " + names[i] + " failed: " + e.what());
    }
    if (plans.size() != i + 1) throw Error(a.config + ": stage " + names[i] + " was not set up");
  }
  if (a.dry_run) return kOk;
  // Stages after the first read nothing themselves; the first stage's inputs and reader options serve all.
  CommonArgs first = *plans.front().common;
  first.stage = "run";
  std::vector<data::PipelineStage> stages;
  for (const StagePlan& p : plans) stages.push_back({p.name, p.fns});
  // stats and shard drop nothing, so the pass's survivors are the last JSONL stage's output.
  const std::string output = last_jsonl >= 0 ? plans[static_cast<size_t>(last_jsonl)].common->output : "";
  std::vector<data::StageReport> reports = data::run_pipeline(stages, first.inputs, output, read_options(first));
  end_progress(first);
  for (size_t i = 0; i < plans.size(); ++i) {
    const int rc = plans[i].finish(reports[i]);
    if (rc != kOk) return rc;
  }
  return kOk;
}

int run_pipeline(const RunArgs& a) {
  toml::table root;
  try {
    root = toml::parse_file(a.config);
  } catch (const toml::parse_error& e) {
    throw Error(a.config + ":" + std::to_string(e.source().begin.line) +
                ": invalid TOML: " + std::string(e.description()));
  }
  const toml::table* p = root["pipeline"].as_table();
  if (!p) throw Error(a.config + ": [pipeline] missing (stages = [...], work = \"folder\")");
  for (const auto& [k, v] : *p)
    if (k.str() != "stages" && k.str() != "work")
      throw Error(a.config + ": [pipeline] " + std::string(k.str()) + ": unknown key (stages, work)");
  const toml::array* stages = (*p)["stages"].as_array();
  if (!stages || stages->empty()) throw Error(a.config + ": [pipeline] stages: must be a non-empty array");
  const std::string work = (*p)["work"].value_or(std::string("data-work"));
  static const std::set<std::string> known = {"clean", "dedup", "filter", "balance", "shard", "stats"};
  std::vector<std::string> names;
  for (const auto& s : *stages) {
    const auto name = s.value<std::string>();
    if (!name || !known.count(*name))
      throw Error(a.config + ": [pipeline] stages: each must be one of clean, dedup, filter, balance, shard, stats");
    if (!names.empty() && (names.back() == "shard"))
      throw Error(a.config + ": [pipeline] stages: shard writes token shards and must come last");
    names.push_back(*name);
  }
  std::filesystem::create_directories(work);
  const bool has_balance = std::find(names.begin(), names.end(), "balance") != names.end();
  if (!a.processes && !has_balance) return run_fused(a, names, work);
  if (!a.processes) std::fprintf(stderr, "data run: balance reads its input twice: running each stage as a process\n");
  std::string input;  // empty: the stage takes [input] input from the config
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string step = work + "/" + std::to_string(i + 1) + "-" + names[i];
    std::vector<std::string> args = {"lmforge", "data", names[i], "--config", a.config};
    if (a.quiet) args.push_back("--quiet");
    if (!input.empty()) args.insert(args.end(), {"--input", input});
    if (names[i] != "stats") {
      const std::string out = names[i] == "shard" ? step : step + ".jsonl";
      args.insert(args.end(), {"--output", out, "--report", step + ".report.json"});
      input = out;
    } else {
      args.insert(args.end(), {"--report", step + ".json"});
    }
    std::string line;
    for (const auto& s : args) line += (line.empty() ? "" : " ") + s;
    if (!a.quiet || a.dry_run) std::fprintf(stderr, "data run: %s\n", line.c_str());
    if (a.dry_run) continue;
    const int rc = run_child(args);
    if (rc != 0) {
      std::fprintf(stderr, "data run: stage %s failed (exit %d); earlier outputs are kept under %s\n", names[i].c_str(),
                   rc, work.c_str());
      return rc;
    }
  }
  return kOk;
}

}  // namespace

void add_data_run_command(CLI::App* data, Context& ctx) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* sub = data->add_subcommand(
      "run", "run the stages listed in a config's [pipeline] in one streaming pass (--processes: one process each)");
  sub->add_option("--config", a->config, "TOML with [pipeline] stages and work, [input] and stage sections")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_flag("--dry-run", a->dry_run, "print the stage commands without running them");
  sub->add_flag("--quiet", a->quiet, "no progress and no stage summaries on stderr (passed to every stage)");
  sub->add_flag("--processes", a->processes,
                "run each stage as its own process on the previous stage's output file (default: one pass)");
  sub->callback([&ctx, a] { ctx.exit_code = run_pipeline(*a); });
}

}  // namespace lmforge::cli
