// Class balancing: exact target counts, deterministic choice, over-sampling copies, ratio parsing.
#include "lmforge/data/balance.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "lmforge/core/error.h"
#include "temp_dir_test.h"

namespace lmforge::data {
namespace {

class Balance : public lmforge::testing::TempDirTest {
 protected:
  // The real e-mail slice with labels: every 4th message "a", the rest "b" (50 and 150), plus one "c".
  std::string labelled() {
    std::ifstream f(std::string(LMFORGE_SOURCE_DIR) + "/tests/data/fixtures/spam_assassin_slice.jsonl");
    std::ofstream o(path("l.jsonl"));
    std::string l;
    for (int i = 0; std::getline(f, l); ++i) {
      auto j = nlohmann::json::parse(l);
      j["label"] = i % 4 == 0 ? "a" : "b";
      o << j.dump() << "\n";
    }
    o << "{\"text\":\"odd one\",\"label\":\"c\"}\n";
    return path("l.jsonl");
  }
  std::map<std::string, int> count(const std::string& p) {
    std::ifstream f(p);
    std::map<std::string, int> n;
    std::string l;
    while (std::getline(f, l)) ++n[nlohmann::json::parse(l)["label"].get<std::string>()];
    return n;
  }
};

TEST_F(Balance, UnderSamplesToTheRatioDeterministically) {
  const auto in = labelled();
  BalanceOptions o;
  o.ratio = parse_class_ratio("a:1,b:2");
  StageReport r = balance_classes({in}, path("u.jsonl"), {}, o);
  EXPECT_EQ(count(path("u.jsonl")), (std::map<std::string, int>{{"a", 50}, {"b", 100}}));
  EXPECT_EQ(r.dropped["undersampled"].documents, 50);
  EXPECT_EQ(r.dropped["unlisted_class"].documents, 1);
  EXPECT_EQ(r.counters["class_in.b"], 150);
  balance_classes({in}, path("u2.jsonl"), {}, o);
  std::ifstream a(path("u.jsonl")), b(path("u2.jsonl"));
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}));
  o.seed = 7;  // another seed picks other documents, the same counts
  balance_classes({in}, path("u3.jsonl"), {}, o);
  EXPECT_EQ(count(path("u3.jsonl")), (std::map<std::string, int>{{"a", 50}, {"b", 100}}));
}

TEST_F(Balance, OverSamplesByRepeating) {
  BalanceOptions o;
  o.ratio = parse_class_ratio("a:1,b:1");
  o.oversample = true;
  StageReport r = balance_classes({labelled()}, path("o.jsonl"), {}, o);
  EXPECT_EQ(count(path("o.jsonl")), (std::map<std::string, int>{{"a", 150}, {"b", 150}}));
  EXPECT_EQ(r.docs_out, 300);
}

TEST_F(Balance, RatioParsingAndMissingClasses) {
  EXPECT_EQ(parse_class_ratio("spam:1,ham:3"), (std::vector<std::pair<std::string, double>>{{"spam", 1}, {"ham", 3}}));
  EXPECT_EQ(parse_class_ratio("a:b:0.5,c:2")[0].first, "a:b");
  for (const char* bad : {"spam:1", "spam:1,ham", "spam:1,ham:0", "spam:1,ham:x", ":1,b:2", "a:1,a:2", "a:1,b:2x"})
    EXPECT_THROW(parse_class_ratio(bad), Error) << bad;
  BalanceOptions o;
  o.ratio = parse_class_ratio("a:1,zzz:1");
  EXPECT_THROW(balance_classes({labelled()}, path("x.jsonl"), {}, o), Error);
}

}  // namespace
}  // namespace lmforge::data
