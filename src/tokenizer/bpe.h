// The BPE model of tokenizer.json: vocabulary, ranked merges, and the merge loop that turns one pre-tokenized
// piece into ids. Internal to the tokenizer layer.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/pipeline.h"

namespace lmforge::tokenizer {

// Open-addressing map from a merge pair (left id, right id) to its rank and the merged id. Lookups are the inner
// loop of encoding, so this is a flat table probed linearly rather than std::unordered_map's node chains.
class MergeTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    uint32_t id = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  void reserve(size_t n);
  // A later merge of the same pair replaces the earlier one (as HF's HashMap collect does).
  void insert(uint32_t a, uint32_t b, uint32_t rank, uint32_t id);
  const Entry* find(uint32_t a, uint32_t b) const {
    if (slots_.empty()) return nullptr;
    uint64_t key = (uint64_t{a} << 32) | b;
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
    }
  }
  size_t size() const { return count_; }

 private:
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
  size_t count_ = 0;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class BpeModel {
 public:
  // Parses the "model" object; errors name the file and field.
  BpeModel(const nlohmann::json& j, const Where& w);
  ~BpeModel();

  // Appends the ids of one pre-tokenized piece. With `byte_level`, each byte of `piece` stands for its GPT-2
  // alphabet character; otherwise the model sees the UTF-8 characters themselves.
  void encode_piece(std::string_view piece, bool byte_level, std::vector<uint32_t>& out) const;

  const std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>>& vocab() const { return vocab_; }
  // Token text by id ("" for an id the model does not have; check has_id).
  bool has_id(uint32_t id) const { return id < id_to_token_.size() && has_id_[id]; }
  const std::string& id_to_token(uint32_t id) const { return id_to_token_[id]; }
  size_t id_bound() const { return id_to_token_.size(); }
  size_t merge_count() const { return merges_.size(); }
  bool ignore_merges() const { return ignore_merges_; }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  struct Symbol {
    uint32_t id;
    int32_t prev, next;
    uint32_t len;  // bytes of the piece this symbol covers; 0 once merged into its left neighbour
  };
  void initial_symbols(std::string_view piece, bool byte_level, std::vector<Symbol>& syms) const;
  void merge(std::vector<Symbol>& syms) const;

  std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  MergeTable merges_;
  std::array<int64_t, 256> byte_char_id_{};      // id of byte b's GPT-2 character, -1 if absent
  std::array<int64_t, 256> byte_fallback_id_{};  // id of "<0xXX>", -1 if absent
  bool ignore_merges_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  int64_t unk_id_ = -1;

  // Results for pieces that recur, sharded so threads rarely wait for one another. Once a shard has filled, a
  // piece is cached only the second time it is met within a while (a direct-mapped table of hashes remembers the
  // first), so text whose pieces are mostly unique (Chinese: a whole clause is one piece) costs a probe per piece
  // and does not flush the recurring ones. Each shard is a flat open-addressing index over a byte arena; when
  // either fills, the shard starts over (no per-entry allocation or free).
  struct CacheShard;
  static constexpr size_t kCacheShards = 64;
  static constexpr size_t kCacheSlotsPerShard = 4096;  // at most half are used
  static constexpr size_t kCacheArenaBytes = 96 << 10;
  static constexpr size_t kCacheSeenPerShard = 8192;
  static constexpr size_t kCacheMaxPiece = 64;
  std::unique_ptr<CacheShard[]> cache_;
  uint64_t instance_ = 0;  // unique per model: keys each thread's front cache (see encode_piece)
};

}  // namespace lmforge::tokenizer
