// Training configuration: a TOML file with sections [model] [data] [optimizer] [schedule] [training] [checkpoint]
// [logging] (DESIGN.md section 4). Every key is checked: unknown keys, wrong types and inconsistent values are
// errors naming the file and the key (section.key). Relative paths are relative to the TOML file's folder.
//
//   [model]      config = "model.json"   # HF config.json to initialise from (or init_from = "model-dir")
//                seed = 0                # initialisation seed
//   [data]       train = "shards/"       # token shard folder (manifest.json); val shards from the same manifest
//                seq_len = 256, micro_batch = 8, seed = 0
//                random_tokens = false   # benchmark mode: uniform random ids instead of shards
//   [optimizer]  lr = 3e-4, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, grad_clip = 1.0
//   [schedule]   type = "cosine" (cosine | linear | constant), warmup_steps = 0, min_lr_ratio = 0.1
//   [training]   max_steps = 1000, global_batch = 8 (sequences; a multiple of micro_batch: accumulation),
//                precision = "f32" (f32 | bf16 | fp16), activation_checkpointing = false, threads = 0 (all),
//                max_nonfinite_steps = 5, bias_update_speed = -1 (use the model's moe_bias_update_speed)
//                loss_scale = 65536 (fp16 initial dynamic loss scale), loss_scale_growth_interval = 2000
//   [checkpoint] dir = "run/", every = 100, keep_last = 3
//   [logging]    every = 10, val_every = 100, val_batches = 8, progress = "auto" (auto | bar | lines | off)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lmforge::train {

struct TrainConfig {
  std::string source;  // the TOML file

  // [model]
  std::string model_config, init_from;
  uint64_t model_seed = 0;
  // [data]
  std::string data_dir;
  int64_t seq_len = 256, micro_batch = 8;
  uint64_t data_seed = 0;
  bool random_tokens = false;
  // [optimizer]
  double lr = 3e-4, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, grad_clip = 1.0;
  // [schedule]
  std::string schedule = "cosine";
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;
  // [training]
  int64_t max_steps = 1000, global_batch = 8;
  std::string precision = "f32";
  bool activation_checkpointing = false;
  int threads = 0;
  int64_t max_nonfinite_steps = 5;
  double bias_update_speed = -1;
  double loss_scale = 65536.0;
  int64_t loss_scale_growth_interval = 2000;
  // [checkpoint]
  std::string checkpoint_dir;
  int64_t checkpoint_every = 100, keep_last = 3;
  // [logging]
  int64_t log_every = 10, val_every = 100, val_batches = 8;
  std::string progress = "auto";

  int64_t accumulation() const { return global_batch / micro_batch; }
  // Learning rate at optimizer step `step` (0-based).
  double lr_at(int64_t step) const;
};

// overrides: "section.key=value" (value in TOML syntax; a bare word is taken as a string), applied before
// validation; a relative path given this way is relative to the current directory, not to the TOML file.
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});
TrainConfig parse_train_config(const std::string& toml_text, const std::string& source, const std::string& base_dir,
                               const std::vector<std::string>& overrides = {});

}  // namespace lmforge::train
