// Deduplication (`lmforge data dedup`). Both kinds keep the first occurrence in input order, so the survivor is
// deterministic and independent of the thread count: signatures are computed in parallel, decisions in order.
//
// Exact: a 128-bit hash of the normalised text (lower-cased, words only, single spaces) in a hash set, or in a
// Bloom filter sized for a stated capacity and false-positive rate (for corpora whose hashes exceed memory;
// a false positive drops a unique document with that probability).
//
// Near: MinHash signatures over word shingles, banded for LSH; a band collision with a kept document is a
// candidate, confirmed when the signatures agree on at least `threshold` of their positions (the Jaccard
// estimate). Bands and rows are chosen from the threshold as datasketch does (least equal-weighted false
// positive + false negative area under the S-curve). Cost is linear in documents (plus candidate checks).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace lmforge::data {

// Lower-cased words (runs of letters and digits); each CJK/kana/hangul character is a word of its own.
std::vector<std::string> dedup_words(std::string_view text);
// The words joined by single spaces: what exact dedup compares.
std::string dedup_key(std::string_view text);

struct Hash128 {
  uint64_t lo = 0, hi = 0;
  bool operator==(const Hash128& o) const { return lo == o.lo && hi == o.hi; }
};
Hash128 dedup_hash(std::string_view text);

class ExactDeduper {
 public:
  ExactDeduper() = default;
  // A Bloom filter for `capacity` documents at false-positive rate `fp` (memory: about 1.44 log2(1/fp) bits each).
  ExactDeduper(int64_t capacity, double fp);
  // True when the hash was not seen before (and records it).
  bool insert(const Hash128& h);
  bool bloom() const { return !bits_.empty(); }
  size_t bloom_bytes() const { return bits_.size() * 8; }
  int bloom_hashes() const { return k_; }

 private:
  struct HashOf {
    size_t operator()(const Hash128& h) const { return static_cast<size_t>(h.lo); }
  };
  std::unordered_set<Hash128, HashOf> set_;
  std::vector<uint64_t> bits_;
  uint64_t nbits_ = 0;
  int k_ = 0;
};

struct MinHashOptions {
  double threshold = 0.8;  // Jaccard similarity at or above which a document is a near duplicate
  int num_perm = 128;
  int shingle = 5;          // words per shingle
  int bands = 0, rows = 0;  // 0: derived from the threshold
  uint64_t seed = 1;
};

// (bands, rows) with bands * rows <= num_perm minimising the false positive + false negative areas.
std::pair<int, int> lsh_params(double threshold, int num_perm);

class MinHashDeduper {
 public:
  explicit MinHashDeduper(const MinHashOptions& opt);
  // Thread-safe. Empty when the text has no words (such documents are never near duplicates).
  std::vector<uint32_t> signature(std::string_view text) const;
  // Ordered: true when `sig` is a near duplicate of a kept document; otherwise keeps it and returns false.
  bool is_duplicate(const std::vector<uint32_t>& sig);
  int bands() const { return bands_; }
  int rows() const { return rows_; }
  int64_t candidates_checked() const { return checked_; }
  static double jaccard_estimate(const uint32_t* a, const uint32_t* b, int n);

 private:
  MinHashOptions opt_;
  int bands_ = 0, rows_ = 0;
  std::vector<uint64_t> a_, b_;                                      // per permutation: (a * h + b) >> 32, a odd
  std::vector<std::unordered_multimap<uint64_t, uint32_t>> tables_;  // band key -> kept document
  std::vector<uint32_t> kept_;                                       // kept signatures, num_perm each
  int64_t checked_ = 0;
};

// SimHash (Charikar 2002), the alternative near-duplicate method: a 64-bit fingerprint where each bit is the sign
// of the summed ±1 bits of the document's word-shingle hashes; documents within `max_distance` bits (Hamming) are
// near duplicates. Lookup splits the fingerprint into max_distance + 1 blocks: two fingerprints that close agree
// exactly on at least one block (pigeonhole), so each block indexes the kept fingerprints.
class SimHashDeduper {
 public:
  SimHashDeduper(int max_distance, int shingle);
  // Thread-safe; 0 for a document without words (never a duplicate).
  uint64_t fingerprint(std::string_view text) const;
  // Ordered: true when within max_distance of a kept fingerprint; otherwise keeps it.
  bool is_duplicate(uint64_t fp);
  int64_t candidates_checked() const { return checked_; }

 private:
  uint64_t block(uint64_t fp, int b) const;
  int max_distance_, shingle_;
  std::vector<int> starts_;  // bit offset of each block (plus 64 at the end)
  std::vector<std::unordered_multimap<uint64_t, uint64_t>> tables_;
  int64_t checked_ = 0;
};

}  // namespace lmforge::data
