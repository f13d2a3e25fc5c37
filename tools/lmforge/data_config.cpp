// `lmforge data STAGE --config pipeline.toml`: one TOML file holds the options of every stage. [input] holds the
// options every stage shares (input, field, invalid-utf8, text-unit, skip-bad); [clean], [dedup], [filter],
// [shard] and [stats] hold each stage's own, under the flag names without the leading dashes. A flag given on the
// command line wins over the file. Unknown sections and keys are errors naming the file, section and key.
#include <toml++/toml.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "data_cli.h"
#include "lmforge/core/error.h"

namespace lmforge::cli {

namespace {

std::vector<std::string> values_of(const toml::node& n, const std::string& where) {
  auto scalar = [&](const toml::node& v) -> std::string {
    if (auto s = v.value<std::string>(); s && v.is_string()) return *s;
    if (v.is_boolean()) return *v.value<bool>() ? "true" : "false";
    if (v.is_integer()) return std::to_string(*v.value<int64_t>());
    if (v.is_floating_point()) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", *v.value<double>());
      return buf;
    }
    throw Error(where + ": must be a string, number, boolean or an array of those");
  };
  std::vector<std::string> out;
  if (const toml::array* a = n.as_array()) {
    for (const toml::node& v : *a) out.push_back(scalar(v));
  } else {
    out.push_back(scalar(n));
  }
  return out;
}

void apply_section(CLI::App* sub, const toml::table& t, const std::string& section, const std::string& path,
                   const std::set<std::string>* allowed) {
  for (const auto& [key_node, value] : t) {
    const std::string key(key_node.str());
    const std::string where = path + ": [" + section + "] " + key;
    if (allowed && !allowed->count(key))
      throw Error(where + ": not an [input] key (" + section +
                  " takes input, "
                  "field, invalid-utf8, text-unit, skip-bad)");
    CLI::Option* opt = nullptr;
    try {
      opt = sub->get_option("--" + key);
    } catch (const CLI::OptionNotFound&) {
      throw Error(where + ": unknown key (lmforge data " + sub->get_name() + " has no --" + key + ")");
    }
    if (key == "config") throw Error(where + ": a config cannot name another config");
    if (opt->count() > 0) continue;  // the command line wins
    try {
      for (const std::string& v : values_of(value, where)) opt->add_result(v);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw Error(where + ": " + e.what());
    }
  }
}

}  // namespace

void apply_data_config(CLI::App* sub, CommonArgs& a, bool output) {
  if (!a.config.empty()) {
    toml::table root;
    try {
      root = toml::parse_file(a.config);
    } catch (const toml::parse_error& e) {
      throw Error(a.config + ":" + std::to_string(e.source().begin.line) +
                  ": invalid TOML: " + std::string(e.description()));
    }
    static const std::set<std::string> sections = {"pipeline", "input",   "clean", "dedup",
                                                   "filter",   "balance", "shard", "stats"};
    static const std::set<std::string> input_keys = {"input", "field", "invalid-utf8", "text-unit", "skip-bad"};
    for (const auto& [name, node] : root) {
      const std::string s(name.str());
      if (!sections.count(s))
        throw Error(a.config + ": [" + s +
                    "]: unknown section (pipeline, input, clean, dedup, filter, balance, shard, stats)");
      if (!node.is_table()) throw Error(a.config + ": " + s + ": must be a [section]");
    }
    if (const toml::table* t = root["input"].as_table()) apply_section(sub, *t, "input", a.config, &input_keys);
    if (const toml::table* t = root[sub->get_name()].as_table())
      apply_section(sub, *t, sub->get_name(), a.config, nullptr);
  }
  if (a.inputs.empty()) throw Error("lmforge data " + sub->get_name() + ": --input is required (or input in [input])");
  if (output && a.output.empty())
    throw Error("lmforge data " + sub->get_name() + ": --output is required (or output in [" + sub->get_name() + "])");
}

}  // namespace lmforge::cli
