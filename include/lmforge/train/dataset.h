// Training batches from token shards: the train split is one stream cut into windows of seq_len + 1 tokens
// (inputs and shifted targets; windows may span document boundaries, as in GPT-style packing). Each epoch visits
// every window once in an order shuffled from (seed, epoch). The position in the data is a single counter of
// windows served, so a checkpoint that stores it resumes the exact same batches.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "lmforge/core/tensor.h"
#include "lmforge/data/shard.h"

namespace lmforge::train {

class TokenStream {
 public:
  // The shards of one split, in manifest order.
  TokenStream(const std::string& dir, const std::vector<data::ShardInfo>& shards);
  int64_t size() const { return total_; }
  void read(int64_t pos, int64_t n, int32_t* out) const;

 private:
  std::vector<std::unique_ptr<data::ShardReader>> shards_;
  std::vector<int64_t> starts_;
  int64_t total_ = 0;
};

struct Batch {
  Tensor inputs, targets;  // i32 [B, T]
};

class Dataset {
 public:
  // Shards under dir (manifest.json). vocab_size: every id must be below it (checked on load, cheaply: the
  // manifest's vocab_size).
  Dataset(const std::string& dir, int64_t seq_len, uint64_t seed, int64_t model_vocab);
  // Random ids (benchmarks).
  Dataset(int64_t vocab, int64_t seq_len, uint64_t seed);

  // Batch of B windows starting at window counter `position` (advances it by B).
  Batch next(int64_t batch, int64_t& position);
  // Validation batches: `count` batches of B windows spread evenly over the val split (fixed across calls);
  // empty when there is no val split.
  std::vector<Batch> validation(int64_t count, int64_t batch) const;
  bool has_validation() const { return val_ != nullptr && val_->size() > seq_len_; }
  int64_t windows_per_epoch() const { return windows_; }
  const data::Manifest& manifest() const { return manifest_; }

 private:
  const std::vector<int64_t>& order(int64_t epoch);

  int64_t seq_len_;
  uint64_t seed_;
  int64_t random_vocab_ = 0;
  data::Manifest manifest_;
  std::unique_ptr<TokenStream> train_, val_;
  int64_t windows_ = 0;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace lmforge::train
