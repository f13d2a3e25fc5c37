// lmforge data run --config pipeline.toml: the stages listed in [pipeline] run one after the other, each as its
// own `lmforge data STAGE --config pipeline.toml` process reading the previous stage's output, so every stage keeps
// its own options, report and exit code. Outputs go to [pipeline] work (STEP-STAGE.jsonl, STEP-STAGE.report.json;
// shard writes the folder STEP-shard).
#include <sys/wait.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "data_cli.h"
#include "lmforge/core/error.h"

namespace lmforge::cli {

namespace {

struct RunArgs {
  std::string config;
  bool dry_run = false;
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
  std::string input;  // empty: the stage takes [input] input from the config
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string step = work + "/" + std::to_string(i + 1) + "-" + names[i];
    std::vector<std::string> args = {"lmforge", "data", names[i], "--config", a.config};
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
    std::fprintf(stderr, "data run: %s\n", line.c_str());
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
  CLI::App* sub = data->add_subcommand("run", "run the stages listed in a config's [pipeline] one after another");
  sub->add_option("--config", a->config, "TOML with [pipeline] stages and work, [input] and stage sections")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_flag("--dry-run", a->dry_run, "print the stage commands without running them");
  sub->callback([&ctx, a] { ctx.exit_code = run_pipeline(*a); });
}

}  // namespace lmforge::cli
