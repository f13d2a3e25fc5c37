#include "lmforge/train/dataset.h"

#include <algorithm>
#include <filesystem>
#include <numeric>

#include "lmforge/core/error.h"

namespace lmforge::train {

namespace fs = std::filesystem;

TokenStream::TokenStream(const std::string& dir, const std::vector<data::ShardInfo>& shards) {
  for (const data::ShardInfo& s : shards) {
    shards_.push_back(std::make_unique<data::ShardReader>((fs::path(dir) / s.file).string()));
    starts_.push_back(total_);
    total_ += shards_.back()->size();
  }
}

void TokenStream::read(int64_t pos, int64_t n, int32_t* out) const {
  LMF_CHECK(pos >= 0 && pos + n <= total_, "token stream: range [", pos, ", ", pos + n, ") outside [0, ", total_, ")");
  auto it = std::upper_bound(starts_.begin(), starts_.end(), pos);
  size_t s = static_cast<size_t>(it - starts_.begin()) - 1;
  while (n > 0) {
    const int64_t off = pos - starts_[s];
    const int64_t take = std::min(n, shards_[s]->size() - off);
    shards_[s]->read(off, take, out);
    out += take;
    pos += take;
    n -= take;
    ++s;
  }
}

Dataset::Dataset(const std::string& dir, int64_t seq_len, uint64_t seed, int64_t model_vocab)
    : seq_len_(seq_len), seed_(seed) {
  manifest_ = data::load_manifest(dir);
  if (manifest_.vocab_size > model_vocab)
    throw Error(dir + "/manifest.json: vocab_size " + std::to_string(manifest_.vocab_size) +
                " exceeds the model's vocab_size " + std::to_string(model_vocab));
  if (manifest_.train.empty()) throw Error(dir + "/manifest.json: no train shards (field 'splits.train')");
  train_ = std::make_unique<TokenStream>(dir, manifest_.train);
  if (!manifest_.val.empty()) val_ = std::make_unique<TokenStream>(dir, manifest_.val);
  windows_ = (train_->size() - 1) / seq_len;
  if (windows_ < 1)
    throw Error(dir + ": " + std::to_string(train_->size()) +
                " train tokens are fewer than seq_len + 1 = " + std::to_string(seq_len + 1));
}

Dataset::Dataset(int64_t vocab, int64_t seq_len, uint64_t seed)
    : seq_len_(seq_len), seed_(seed), random_vocab_(vocab), windows_(int64_t{1} << 40) {}

const std::vector<int64_t>& Dataset::order(int64_t epoch) {
  if (epoch != cached_epoch_) {
    order_.resize(static_cast<size_t>(windows_));
    std::iota(order_.begin(), order_.end(), 0);
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1);
    for (int64_t i = windows_ - 1; i > 0; --i) {
      const auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(order_[i], order_[j]);
    }
    cached_epoch_ = epoch;
  }
  return order_;
}

Batch Dataset::next(int64_t B, int64_t& position) {
  const int64_t T = seq_len_;
  std::vector<int32_t> in(static_cast<size_t>(B * T)), tg(in.size()), win(static_cast<size_t>(T + 1));
  for (int64_t b = 0; b < B; ++b, ++position) {
    if (random_vocab_ > 0) {
      std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(position));
      for (auto& x : win) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(random_vocab_));
    } else {
      const int64_t w = order(position / windows_)[position % windows_];
      train_->read(w * T, T + 1, win.data());
    }
    std::copy(win.begin(), win.begin() + T, in.begin() + b * T);
    std::copy(win.begin() + 1, win.end(), tg.begin() + b * T);
  }
  return {Tensor::from_ints(in, {B, T}), Tensor::from_ints(tg, {B, T})};
}

std::vector<Batch> Dataset::validation(int64_t count, int64_t B) const {
  std::vector<Batch> out;
  if (!has_validation()) return out;
  const int64_t T = seq_len_, windows = (val_->size() - 1) / T;
  const int64_t n = std::min(count * B, windows);
  std::vector<int32_t> win(static_cast<size_t>(T + 1));
  for (int64_t start = 0; start < n; start += B) {
    const int64_t bs = std::min(B, n - start);
    std::vector<int32_t> in(static_cast<size_t>(bs * T)), tg(in.size());
    for (int64_t b = 0; b < bs; ++b) {
      const int64_t w = (start + b) * windows / n;  // evenly spread
      val_->read(w * T, T + 1, win.data());
      std::copy(win.begin(), win.begin() + T, in.begin() + b * T);
      std::copy(win.begin() + 1, win.end(), tg.begin() + b * T);
    }
    out.push_back({Tensor::from_ints(in, {bs, T}), Tensor::from_ints(tg, {bs, T})});
  }
  return out;
}

}  // namespace lmforge::train
