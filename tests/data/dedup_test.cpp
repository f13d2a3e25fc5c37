// Exact and MinHash/LSH dedup: parameters, determinism, and agreement with exact Jaccard on real e-mail.
#include "lmforge/data/dedup.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "lmforge/data/corpus.h"

namespace lmforge::data {
namespace {

TEST(Dedup, KeyIgnoresCaseSpacingAndPunctuation) {
  EXPECT_EQ(dedup_key("Hello,   WORLD!\n  It's 2024."), "hello world it s 2024");
  EXPECT_EQ(dedup_key("中文abc 字"), "中 文 abc 字");
  EXPECT_EQ(dedup_hash("Hello world"), dedup_hash("hello\tworld!!"));
  EXPECT_FALSE(dedup_hash("hello world") == dedup_hash("hello worlds"));
}

TEST(Dedup, ExactSetAndBloom) {
  for (bool bloom : {false, true}) {
    ExactDeduper d = bloom ? ExactDeduper(10000, 1e-6) : ExactDeduper();
    int fresh = 0;
    for (int i = 0; i < 5000; ++i) fresh += d.insert(dedup_hash("doc " + std::to_string(i % 1000)));
    EXPECT_EQ(fresh, 1000) << "bloom " << bloom;
  }
  ExactDeduper b(1000000, 0.01);
  EXPECT_EQ(b.bloom_hashes(), 7);
  EXPECT_NEAR(static_cast<double>(b.bloom_bytes()), 1198132.0, 64.0);  // 9.585 bits per item
  EXPECT_THROW(ExactDeduper(0, 0.1), std::exception);
  EXPECT_THROW(ExactDeduper(10, 1.5), std::exception);
}

TEST(Dedup, LshParamsMatchDatasketch) {
  // datasketch's _optimal_param (equal weights), evaluated with fine numerical integration in Python.
  EXPECT_EQ(lsh_params(0.8, 128), std::make_pair(9, 13));
  EXPECT_EQ(lsh_params(0.5, 128), std::make_pair(25, 5));
  EXPECT_EQ(lsh_params(0.7, 64), std::make_pair(8, 8));
  EXPECT_THROW(lsh_params(1.5, 128), std::exception);
}

TEST(Dedup, MinHashEstimatesJaccard) {
  MinHashOptions o;
  o.num_perm = 256;
  o.shingle = 1;
  MinHashDeduper m(o);
  std::string a, b;
  for (int i = 0; i < 200; ++i) a += "w" + std::to_string(i) + " ";
  for (int i = 50; i < 250; ++i) b += "w" + std::to_string(i) + " ";
  // |A∩B| = 150, |A∪B| = 250: J = 0.6.
  const auto sa = m.signature(a), sb = m.signature(b);
  EXPECT_NEAR(MinHashDeduper::jaccard_estimate(sa.data(), sb.data(), 256), 0.6, 0.08);
  EXPECT_TRUE(m.signature("  ...  ").empty());
  EXPECT_EQ(m.signature(a), sa);  // deterministic
}

// Word 5-shingles, as the deduper builds them.
std::set<std::string> shingles(const std::string& t) {
  const auto w = dedup_words(t);
  std::set<std::string> s;
  const size_t k = 5, n = w.size() >= k ? w.size() - k + 1 : 1;
  for (size_t i = 0; i < n && !w.empty(); ++i) {
    std::string sh;
    for (size_t j = i; j < std::min(w.size(), i + k); ++j) sh += w[j] + " ";
    s.insert(sh);
  }
  return s;
}
double jaccard(const std::set<std::string>& a, const std::set<std::string>& b) {
  size_t inter = 0;
  for (const auto& x : a) inter += b.count(x);
  return static_cast<double>(inter) / static_cast<double>(a.size() + b.size() - inter);
}

// Real e-mail (tests/data/fixtures/README.md): every message dropped as a near duplicate is similar to an earlier
// one (Jaccard >= 0.7 to some earlier message), and every message at Jaccard >= 0.9 to a kept one is dropped.
TEST(Dedup, AgreesWithExactJaccardOnRealEmail) {
  const std::string in = std::string(LMFORGE_SOURCE_DIR) + "/tests/data/fixtures/spam_assassin_slice.jsonl";
  std::vector<std::string> docs;
  {
    std::ifstream f(in);
    std::string l;
    while (std::getline(f, l)) docs.push_back(nlohmann::json::parse(l)["text"]);
  }
  ASSERT_EQ(docs.size(), 200u);
  ExactDeduper ex;
  MinHashDeduper mh(MinHashOptions{});
  std::vector<std::set<std::string>> sh;
  for (const auto& d : docs) sh.push_back(shingles(d));
  std::vector<size_t> kept;
  int exact = 0, near = 0, missed_high = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (!ex.insert(dedup_hash(docs[i]))) {
      ++exact;
      continue;
    }
    double best_kept = 0;
    for (size_t j : kept) best_kept = std::max(best_kept, jaccard(sh[i], sh[j]));
    if (mh.is_duplicate(mh.signature(docs[i]))) {
      ++near;
      double best_any = 0;
      for (size_t j = 0; j < i; ++j) best_any = std::max(best_any, jaccard(sh[i], sh[j]));
      EXPECT_GE(best_any, 0.7) << "message " << i << " dropped without a similar earlier message";
      continue;
    }
    if (best_kept >= 0.9) ++missed_high;
    kept.push_back(i);
  }
  EXPECT_EQ(exact, 19);
  EXPECT_EQ(missed_high, 0);
  EXPECT_GE(near, 18);  // 29 messages are at Jaccard >= 0.8; LSH finds those near 0.8 about half the time
  EXPECT_LE(near, 32);
}

TEST(Dedup, SimHashFindsCopiesAndNearCopies) {
  SimHashDeduper sh(3, 3);
  std::string base;
  for (int i = 0; i < 300; ++i) base += "word" + std::to_string(i * 7 % 101) + " ";
  const uint64_t a = sh.fingerprint(base);
  EXPECT_EQ(sh.fingerprint(base), a);
  EXPECT_EQ(sh.fingerprint("..."), 0u);
  EXPECT_FALSE(sh.is_duplicate(a));
  EXPECT_TRUE(sh.is_duplicate(a));                                  // the same text
  EXPECT_TRUE(sh.is_duplicate(sh.fingerprint(base + "one more")));  // nearly the same
  EXPECT_FALSE(sh.is_duplicate(sh.fingerprint("an entirely different short text about other things")));
  EXPECT_THROW(SimHashDeduper(20, 3), std::exception);
}

// On the real e-mail slice, SimHash at distance 6 drops only messages similar to an earlier one.
TEST(Dedup, SimHashOnRealEmail) {
  std::ifstream f(std::string(LMFORGE_SOURCE_DIR) + "/tests/data/fixtures/spam_assassin_slice.jsonl");
  std::vector<std::string> docs;
  std::string l;
  while (std::getline(f, l)) docs.push_back(nlohmann::json::parse(l)["text"]);
  SimHashDeduper sh(6, 5);
  std::vector<std::set<std::string>> shs;
  int dropped = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    shs.push_back(shingles(docs[i]));
    if (!sh.is_duplicate(sh.fingerprint(docs[i]))) continue;
    ++dropped;
    double best = 0;
    for (size_t j = 0; j < i; ++j) best = std::max(best, jaccard(shs[i], shs[j]));
    EXPECT_GE(best, 0.5) << "message " << i;
  }
  EXPECT_GE(dropped, 30);  // 19 exact + 29 near at Jaccard >= 0.8 exist; 36 measured
  EXPECT_LE(dropped, 48);
}

}  // namespace
}  // namespace lmforge::data
