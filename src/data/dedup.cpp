#include "lmforge/data/dedup.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "lmforge/core/error.h"
#include "lmforge/data/corpus.h"
#include "tokenizer/unicode.h"

namespace lmforge::data {

namespace uni = tokenizer::unicode;

namespace {

bool is_cjk(char32_t cp) {
  return (cp >= 0x3040 && cp <= 0x30FF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x4E00 && cp <= 0x9FFF) ||
         (cp >= 0xAC00 && cp <= 0xD7AF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x20000 && cp <= 0x2FFFF);
}

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Integral over [lo, hi] by Simpson's rule (smooth integrands, 64 intervals are plenty).
template <class F>
double integrate(F f, double lo, double hi) {
  const int n = 64;
  const double h = (hi - lo) / n;
  double s = f(lo) + f(hi);
  for (int i = 1; i < n; ++i) s += f(lo + i * h) * (i % 2 ? 4 : 2);
  return s * h / 3;
}

}  // namespace

std::vector<std::string> dedup_words(std::string_view text) {
  const std::string lower = uni::lowercase(text);
  std::vector<std::string> words;
  std::string cur;
  size_t i = 0;
  while (i < lower.size()) {
    const size_t start = i;
    const char32_t cp = uni::next_cp(lower, i);
    if (is_cjk(cp)) {
      if (!cur.empty()) words.push_back(std::move(cur));
      cur.clear();
      words.emplace_back(lower.substr(start, i - start));
    } else if (uni::is_alphanumeric(cp)) {
      cur.append(lower, start, i - start);
    } else if (!cur.empty()) {
      words.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  return words;
}

std::string dedup_key(std::string_view text) {
  std::string key;
  for (const std::string& w : dedup_words(text)) {
    if (!key.empty()) key += ' ';
    key += w;
  }
  return key;
}

Hash128 dedup_hash(std::string_view text) {
  const std::string key = dedup_key(text);
  return {hash64(key, 0x51ED270B1A5Eull), hash64(key, 0x7F4A7C15F39CC060ull)};
}

ExactDeduper::ExactDeduper(int64_t capacity, double fp) {
  LMF_CHECK(capacity > 0, "dedup: --bloom-capacity must be positive, got ", capacity);
  LMF_CHECK(fp > 0 && fp < 1, "dedup: --bloom-fp must be in (0, 1), got ", fp);
  const double ln2 = std::log(2.0);
  const double m = std::ceil(-static_cast<double>(capacity) * std::log(fp) / (ln2 * ln2));
  LMF_CHECK(m < 8.0 * 64 * (1ull << 30), "dedup: a Bloom filter for ", capacity, " documents at fp ", fp,
            " needs more than 64 GiB");
  nbits_ = std::max<uint64_t>(64, static_cast<uint64_t>(m));
  bits_.assign((nbits_ + 63) / 64, 0);
  k_ = std::max(1, static_cast<int>(std::lround(m / static_cast<double>(capacity) * ln2)));
}

bool ExactDeduper::insert(const Hash128& h) {
  if (bits_.empty()) return set_.insert(h).second;
  bool fresh = false;
  const uint64_t step = h.hi | 1;
  for (int i = 0; i < k_; ++i) {
    const uint64_t bit = (h.lo + static_cast<uint64_t>(i) * step) % nbits_;
    uint64_t& word = bits_[bit / 64];
    const uint64_t mask = 1ull << (bit % 64);
    if (!(word & mask)) fresh = true;
    word |= mask;
  }
  return fresh;
}

std::pair<int, int> lsh_params(double threshold, int num_perm) {
  LMF_CHECK(threshold > 0 && threshold < 1, "dedup: --threshold must be in (0, 1), got ", threshold);
  LMF_CHECK(num_perm >= 2 && num_perm <= 1024, "dedup: --num-perm must be in [2, 1024], got ", num_perm);
  double best = std::numeric_limits<double>::infinity();
  std::pair<int, int> out{1, 1};
  for (int b = 1; b <= num_perm; ++b) {
    for (int r = 1; b * r <= num_perm; ++r) {
      auto p = [&](double s) { return 1 - std::pow(1 - std::pow(s, r), b); };
      const double fp = integrate(p, 0.0, threshold);
      const double fn = integrate([&](double s) { return 1 - p(s); }, threshold, 1.0);
      if (0.5 * fp + 0.5 * fn < best) {
        best = 0.5 * fp + 0.5 * fn;
        out = {b, r};
      }
    }
  }
  return out;
}

MinHashDeduper::MinHashDeduper(const MinHashOptions& opt) : opt_(opt) {
  LMF_CHECK(opt.shingle >= 1 && opt.shingle <= 64, "dedup: --shingle must be in [1, 64], got ", opt.shingle);
  if (opt.bands > 0 || opt.rows > 0) {
    LMF_CHECK(opt.bands > 0 && opt.rows > 0 && opt.bands * opt.rows <= opt.num_perm,
              "dedup: --bands and --rows must both be positive with bands * rows <= --num-perm (", opt.num_perm, ")");
    bands_ = opt.bands;
    rows_ = opt.rows;
  } else {
    std::tie(bands_, rows_) = lsh_params(opt.threshold, opt.num_perm);
  }
  LMF_CHECK(opt.threshold > 0 && opt.threshold <= 1, "dedup: --threshold must be in (0, 1], got ", opt.threshold);
  uint64_t state = opt.seed;
  for (int i = 0; i < opt.num_perm; ++i) {
    a_.push_back(splitmix(state) | 1);
    b_.push_back(splitmix(state));
  }
  tables_.resize(static_cast<size_t>(bands_));
}

std::vector<uint32_t> MinHashDeduper::signature(std::string_view text) const {
  const std::vector<std::string> words = dedup_words(text);
  if (words.empty()) return {};
  std::vector<uint64_t> wh(words.size());
  for (size_t i = 0; i < words.size(); ++i) wh[i] = hash64(words[i], 0x5EED);
  const size_t k = static_cast<size_t>(opt_.shingle);
  const size_t n_sh = words.size() >= k ? words.size() - k + 1 : 1;
  const size_t P = static_cast<size_t>(opt_.num_perm);
  std::vector<uint32_t> sig(P, std::numeric_limits<uint32_t>::max());
  for (size_t s = 0; s < n_sh; ++s) {
    uint64_t h = 0x84222325CBF29CE4ull;
    for (size_t j = s; j < std::min(words.size(), s + k); ++j) h = (h ^ wh[j]) * 0x100000001B3ull + (h >> 29);
    h ^= h >> 33;
    for (size_t p = 0; p < P; ++p) sig[p] = std::min(sig[p], static_cast<uint32_t>((a_[p] * h + b_[p]) >> 32));
  }
  return sig;
}

double MinHashDeduper::jaccard_estimate(const uint32_t* a, const uint32_t* b, int n) {
  int eq = 0;
  for (int i = 0; i < n; ++i) eq += a[i] == b[i];
  return static_cast<double>(eq) / n;
}

bool MinHashDeduper::is_duplicate(const std::vector<uint32_t>& sig) {
  if (sig.empty()) return false;
  const int P = opt_.num_perm;
  std::vector<uint64_t> keys(static_cast<size_t>(bands_));
  for (int b = 0; b < bands_; ++b) {
    keys[b] = hash64(std::string_view(reinterpret_cast<const char*>(sig.data() + b * rows_),
                                      sizeof(uint32_t) * static_cast<size_t>(rows_)),
                     static_cast<uint64_t>(b));
    auto [lo, hi] = tables_[b].equal_range(keys[b]);
    for (auto it = lo; it != hi; ++it) {
      ++checked_;
      if (jaccard_estimate(sig.data(), kept_.data() + static_cast<size_t>(it->second) * P, P) >= opt_.threshold)
        return true;
    }
  }
  const auto id = static_cast<uint32_t>(kept_.size() / static_cast<size_t>(P));
  kept_.insert(kept_.end(), sig.begin(), sig.end());
  for (int b = 0; b < bands_; ++b) tables_[b].emplace(keys[b], id);
  return false;
}

SimHashDeduper::SimHashDeduper(int max_distance, int shingle) : max_distance_(max_distance), shingle_(shingle) {
  LMF_CHECK(max_distance >= 0 && max_distance <= 15, "dedup: --simhash-distance must be in [0, 15], got ",
            max_distance);
  LMF_CHECK(shingle >= 1 && shingle <= 64, "dedup: --shingle must be in [1, 64], got ", shingle);
  const int blocks = max_distance + 1;
  for (int b = 0; b <= blocks; ++b) starts_.push_back(64 * b / blocks);
  tables_.resize(static_cast<size_t>(blocks));
}

uint64_t SimHashDeduper::fingerprint(std::string_view text) const {
  const std::vector<std::string> words = dedup_words(text);
  if (words.empty()) return 0;
  std::vector<uint64_t> wh(words.size());
  for (size_t i = 0; i < words.size(); ++i) wh[i] = hash64(words[i], 0x5EED);
  const auto k = static_cast<size_t>(shingle_);
  const size_t n_sh = words.size() >= k ? words.size() - k + 1 : 1;
  int64_t acc[64] = {};
  for (size_t s = 0; s < n_sh; ++s) {
    uint64_t h = 0x84222325CBF29CE4ull;
    for (size_t j = s; j < std::min(words.size(), s + k); ++j) h = (h ^ wh[j]) * 0x100000001B3ull + (h >> 29);
    h = hash64(std::string_view(reinterpret_cast<const char*>(&h), 8), 0x51);
    for (int b = 0; b < 64; ++b) acc[b] += (h >> b) & 1 ? 1 : -1;
  }
  uint64_t fp = 0;
  for (int b = 0; b < 64; ++b) fp |= static_cast<uint64_t>(acc[b] > 0) << b;
  return fp == 0 ? 1 : fp;  // 0 is reserved for "no words"
}

uint64_t SimHashDeduper::block(uint64_t fp, int b) const {
  const int lo = starts_[b], width = starts_[b + 1] - lo;
  return width == 64 ? fp : (fp >> lo) & ((1ull << width) - 1);
}

bool SimHashDeduper::is_duplicate(uint64_t fp) {
  if (fp == 0) return false;
  const int blocks = static_cast<int>(tables_.size());
  for (int b = 0; b < blocks; ++b) {
    auto [lo, hi] = tables_[b].equal_range(block(fp, b));
    for (auto it = lo; it != hi; ++it) {
      ++checked_;
      if (std::popcount(fp ^ it->second) <= max_distance_) return true;
    }
  }
  for (int b = 0; b < blocks; ++b) tables_[b].emplace(block(fp, b), fp);
  return false;
}

}  // namespace lmforge::data
