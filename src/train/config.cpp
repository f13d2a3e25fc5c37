#include "lmforge/train/config.h"

#include <toml++/toml.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "lmforge/core/error.h"

namespace lmforge::train {

namespace fs = std::filesystem;

namespace {

// Reads typed keys from one table and remembers which were used, so leftovers can be reported as unknown.
struct Section {
  const toml::table* t;
  std::string name, source;
  std::set<std::string> used;

  [[noreturn]] void bad(const std::string& key, const std::string& what) const {
    throw Error(source + ": [" + name + "] " + key + ": " + what);
  }
  const toml::node* get(const std::string& key) {
    used.insert(key);
    return t ? t->get(key) : nullptr;
  }
  void str(const std::string& key, std::string& out) {
    if (const toml::node* n = get(key)) {
      if (!n->is_string()) bad(key, "must be a string");
      out = n->value<std::string>().value();
    }
  }
  void boolean(const std::string& key, bool& out) {
    if (const toml::node* n = get(key)) {
      if (!n->is_boolean()) bad(key, "must be true or false");
      out = n->value<bool>().value();
    }
  }
  template <typename I>
  void integer(const std::string& key, I& out, int64_t lo, int64_t hi = INT64_MAX) {
    if (const toml::node* n = get(key)) {
      if (!n->is_integer()) bad(key, "must be an integer");
      const int64_t v = n->value<int64_t>().value();
      if (v < lo || v > hi)
        bad(key, std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                     (hi == INT64_MAX ? std::string("inf") : std::to_string(hi)) + "]");
      out = static_cast<I>(v);
    }
  }
  void number(const std::string& key, double& out, double lo, double hi, bool lo_open = false) {
    if (const toml::node* n = get(key)) {
      if (!n->is_number()) bad(key, "must be a number");
      const double v = n->value<double>().value();
      if (!std::isfinite(v) || v < lo || v > hi || (lo_open && v == lo)) {
        std::ostringstream o;
        o << v << " is outside " << (lo_open ? "(" : "[") << lo << ", " << hi << "]";
        bad(key, o.str());
      }
      out = v;
    }
  }
  void one_of(const std::string& key, std::string& out, const std::set<std::string>& allowed) {
    str(key, out);
    if (!allowed.count(out)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : " | ") + a;
      bad(key, "'" + out + "' is not one of " + list);
    }
  }
  void finish() const {
    if (!t) return;
    for (const auto& [k, v] : *t)
      if (!used.count(std::string(k.str()))) bad(std::string(k.str()), "unknown key");
  }
};

std::string resolve(const std::string& base, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return (fs::path(base) / p).lexically_normal().string();
}

}  // namespace

double TrainConfig::lr_at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps)
    return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (schedule == "constant") return lr;
  const int64_t decay = std::max<int64_t>(1, max_steps - warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay));
  const double f = schedule == "linear" ? 1.0 - progress : 0.5 * (1.0 + std::cos(M_PI * progress));
  return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * f);
}

namespace {

const std::set<std::string> kPathKeys = {"model.config", "model.init_from", "data.train", "checkpoint.dir"};

void apply_override(toml::table& root, const std::string& ov) {
  const size_t eq = ov.find('='), dot = ov.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq || dot == 0 || dot + 1 == eq)
    throw Error("--set " + ov + ": expected section.key=value");
  const std::string section = ov.substr(0, dot), key = ov.substr(dot + 1, eq - dot - 1), value = ov.substr(eq + 1);
  if (!root.contains(section)) root.insert(section, toml::table{});
  toml::table* t = root[section].as_table();
  if (!t) throw Error("--set " + ov + ": " + section + " is not a section");
  if (kPathKeys.count(section + "." + key)) {
    std::string v = value;
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    t->insert_or_assign(key, fs::absolute(v).lexically_normal().string());
    return;
  }
  try {
    toml::table parsed = toml::parse("v = " + value);
    t->insert_or_assign(key, *parsed.get("v"));
  } catch (const toml::parse_error&) {
    t->insert_or_assign(key, value);  // a bare word: a string
  }
}

}  // namespace

TrainConfig parse_train_config(const std::string& text, const std::string& source, const std::string& base,
                               const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream o;
    o << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
    throw Error(o.str());
  }
  for (const std::string& ov : overrides) apply_override(root, ov);
  static const std::set<std::string> kSections = {"model",    "data",       "optimizer", "schedule",
                                                  "training", "checkpoint", "logging"};
  for (const auto& [k, v] : root) {
    if (!kSections.count(std::string(k.str())))
      throw Error(source + ": unknown section [" + std::string(k.str()) +
                  "] (expected model, data, optimizer, schedule, training, checkpoint, logging)");
    if (!v.is_table()) throw Error(source + ": " + std::string(k.str()) + " must be a [section]");
  }
  auto section = [&](const char* name) { return Section{root[name].as_table(), name, source, {}}; };
  TrainConfig c;
  c.source = source;

  Section m = section("model");
  m.str("config", c.model_config);
  m.str("init_from", c.init_from);
  m.integer("seed", c.model_seed, 0);
  m.finish();
  if (c.model_config.empty() == c.init_from.empty())
    throw Error(source + ": [model] needs exactly one of config (a config.json) or init_from (a model folder)");
  c.model_config = resolve(base, c.model_config);
  c.init_from = resolve(base, c.init_from);

  Section d = section("data");
  d.str("train", c.data_dir);
  d.integer("seq_len", c.seq_len, 2, 1 << 20);
  d.integer("micro_batch", c.micro_batch, 1, 1 << 16);
  d.integer("seed", c.data_seed, 0);
  d.boolean("random_tokens", c.random_tokens);
  d.finish();
  if (c.data_dir.empty() && !c.random_tokens)
    throw Error(source + ": [data] train (a token shard folder) is required unless random_tokens = true");
  c.data_dir = resolve(base, c.data_dir);

  Section o = section("optimizer");
  o.number("lr", c.lr, 0.0, 10.0, true);
  o.number("beta1", c.beta1, 0.0, 0.999999);
  o.number("beta2", c.beta2, 0.0, 0.9999999);
  o.number("eps", c.eps, 0.0, 1.0, true);
  o.number("weight_decay", c.weight_decay, 0.0, 10.0);
  o.number("grad_clip", c.grad_clip, 0.0, 1e9);
  o.finish();

  Section s = section("schedule");
  s.one_of("type", c.schedule, {"cosine", "linear", "constant"});
  s.integer("warmup_steps", c.warmup_steps, 0);
  s.number("min_lr_ratio", c.min_lr_ratio, 0.0, 1.0);
  s.finish();

  Section t = section("training");
  t.integer("max_steps", c.max_steps, 1);
  c.global_batch = c.micro_batch;
  t.integer("global_batch", c.global_batch, 1);
  t.one_of("precision", c.precision, {"f32", "bf16", "fp16"});
  t.boolean("activation_checkpointing", c.activation_checkpointing);
  t.integer("threads", c.threads, 0, 1024);
  t.integer("max_nonfinite_steps", c.max_nonfinite_steps, 1);
  t.number("bias_update_speed", c.bias_update_speed, -1.0, 1.0);
  t.number("loss_scale", c.loss_scale, 1.0, 1e12);
  t.integer("loss_scale_growth_interval", c.loss_scale_growth_interval, 1);
  t.finish();
  if (c.global_batch % c.micro_batch != 0)
    throw Error(source + ": [training] global_batch: " + std::to_string(c.global_batch) +
                " is not a multiple of [data] micro_batch " + std::to_string(c.micro_batch));
  if (c.warmup_steps > c.max_steps)
    throw Error(source + ": [schedule] warmup_steps: " + std::to_string(c.warmup_steps) +
                " exceeds [training] max_steps " + std::to_string(c.max_steps));

  Section k = section("checkpoint");
  k.str("dir", c.checkpoint_dir);
  k.integer("every", c.checkpoint_every, 0);
  k.integer("keep_last", c.keep_last, 1);
  k.finish();
  if (c.checkpoint_dir.empty()) throw Error(source + ": [checkpoint] dir is required (where the run is written)");
  c.checkpoint_dir = resolve(base, c.checkpoint_dir);

  Section l = section("logging");
  l.integer("every", c.log_every, 1);
  l.integer("val_every", c.val_every, 0);
  l.integer("val_batches", c.val_batches, 1);
  l.one_of("progress", c.progress, {"auto", "bar", "lines", "off"});
  l.finish();
  return c;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open training config");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_train_config(ss.str(), path, fs::path(path).parent_path().string(), overrides);
}

}  // namespace lmforge::train
