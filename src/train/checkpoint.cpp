#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <vector>

#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/io/atomic_file.h"
#include "lmforge/io/safetensors.h"
#include "lmforge/version.h"

namespace lmforge::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kPrefix = "step-";

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind(kPrefix, 0) != 0) continue;
    const std::string num = name.substr(5);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    out.emplace_back(std::stoll(num), e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void fsync_dir(const std::string& dir) {
  FILE* f = std::fopen(dir.c_str(), "r");
  if (f) {
    ::fsync(fileno(f));
    std::fclose(f);
  }
}

}  // namespace

Checkpoints::Checkpoints(std::string run_dir, int64_t keep_last)
    : run_dir_(std::move(run_dir)), ckpt_dir_((fs::path(run_dir_) / "checkpoints").string()), keep_last_(keep_last) {}

std::optional<std::string> Checkpoints::latest() const {
  auto all = list_checkpoints(ckpt_dir_);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

std::string Checkpoints::save(const RunState& s, const model::CausalLM& m, const Optimizer& opt) const {
  char name[32];
  std::snprintf(name, sizeof(name), "%s%08lld", kPrefix, static_cast<long long>(s.step));
  const fs::path final_dir = fs::path(ckpt_dir_) / name;
  const fs::path tmp = fs::path(ckpt_dir_) / (std::string(".tmp-") + name);
  fs::create_directories(ckpt_dir_);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  m.save(tmp.string());
  io::NamedTensors st;
  for (auto& [k, v] : opt.state()) st.emplace_back(k, v);
  io::save_safetensors((tmp / "optimizer.safetensors").string(), st, {{"optimizer", "adamw"}});
  nlohmann::json j = {{"format", "lmforge-checkpoint"},
                      {"version", 1},
                      {"lmforge", LMFORGE_VERSION},
                      {"step", s.step},
                      {"optimizer_steps", opt.steps()},
                      {"data_position", s.data_position},
                      {"nonfinite_streak", s.nonfinite_streak},
                      {"loss_scale", s.loss_scale},
                      {"good_steps", s.good_steps},
                      {"rng", "counter-based: router noise and data order derive from the seeds and step/position"},
                      {"sha256",
                       {{"model.safetensors", data::sha256_file((tmp / "model.safetensors").string())},
                        {"optimizer.safetensors", data::sha256_file((tmp / "optimizer.safetensors").string())}}}};
  io::write_file_atomic((tmp / "trainer.json").string(), j.dump(2) + "\n");
  fsync_dir(tmp.string());
  if (fs::exists(final_dir)) fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_dir(ckpt_dir_);
  auto all = list_checkpoints(ckpt_dir_);
  for (size_t i = 0; i + static_cast<size_t>(keep_last_) < all.size(); ++i) fs::remove_all(all[i].second);
  return final_dir.string();
}

RunState Checkpoints::load(const std::string& dir, model::CausalLM& m, Optimizer& opt) const {
  const std::string tj = (fs::path(dir) / "trainer.json").string();
  std::ifstream f(tj);
  if (!f) throw Error(tj + ": missing (incomplete checkpoint)");
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(tj + ": not valid JSON (corrupt checkpoint)");
  auto field = [&](const char* k) -> int64_t {
    if (!j.contains(k) || !j.at(k).is_number_integer() || j.at(k).get<int64_t>() < 0)
      throw Error(tj + ": field '" + k + "' missing or not a non-negative integer (corrupt checkpoint)");
    return j.at(k).get<int64_t>();
  };
  RunState s;
  s.step = field("step");
  s.data_position = field("data_position");
  s.nonfinite_streak = field("nonfinite_streak");
  const int64_t opt_steps = field("optimizer_steps");
  s.loss_scale = j.value("loss_scale", 0.0);
  s.good_steps = j.value("good_steps", int64_t{0});
  if (!std::isfinite(s.loss_scale) || s.loss_scale < 0 || s.good_steps < 0)
    throw Error(tj + ": field 'loss_scale' or 'good_steps' out of range (corrupt checkpoint)");
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    const std::string p = (fs::path(dir) / file).string();
    if (!fs::exists(p)) throw Error(p + ": missing (incomplete checkpoint)");
    if (!j.contains("sha256") || !j["sha256"].contains(file) || !j["sha256"][file].is_string())
      throw Error(tj + ": field 'sha256." + std::string(file) + "' missing (corrupt checkpoint)");
    if (data::sha256_file(p) != j["sha256"][file].get<std::string>())
      throw Error(p + ": contents do not match trainer.json's sha256 (corrupt checkpoint)");
  }
  const std::string mp = (fs::path(dir) / "model.safetensors").string();
  auto weights = io::load_safetensors(mp);
  m.load_weights(weights, mp);
  const std::string op = (fs::path(dir) / "optimizer.safetensors").string();
  auto ostate = io::load_safetensors(op);
  std::vector<std::pair<std::string, Tensor>> v(ostate.begin(), ostate.end());
  try {
    opt.load_state(v, opt_steps);
  } catch (const Error& e) {
    throw Error(op + ": " + e.what());
  }
  return s;
}

JsonlLog::JsonlLog(const std::string& path, int64_t resume_step) : path_(path) {
  if (resume_step >= 0 && fs::exists(path)) {
    std::ifstream in(path);
    std::string line, kept;
    while (std::getline(in, line)) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
          j["step"].get<int64_t>() > resume_step)
        continue;
      kept += line + "\n";
    }
    io::write_file_atomic(path, kept);
  } else if (resume_step < 0) {
    io::write_file_atomic(path, "");
  }
  out_.open(path, std::ios::app);
  if (!out_) throw Error(path + ": cannot open the run log for writing");
}

void JsonlLog::write(const nlohmann::json& rec) {
  out_ << rec.dump() << "\n";
  out_.flush();
}

}  // namespace lmforge::train
