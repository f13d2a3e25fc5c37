// Document filters one check at a time, token limits with a real tokenizer.json, and Gopher rules on real text.
#include "lmforge/data/filter.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "lmforge/core/error.h"
#include "lmforge/data/corpus.h"
#include "lmforge/data/domain.h"
#include "lmforge/tokenizer/tokenizer.h"

namespace lmforge::data {
namespace {

std::string english() {
  return "The committee met on Tuesday to review the budget and the plans that have been drafted with care. "
         "Members of the public were invited to comment on the proposals before the final vote.";
}

TEST(Filter, Lengths) {
  FilterOptions o;
  o.min_chars = 5;
  o.max_chars = 10;
  DocumentFilter f(o, nullptr);
  EXPECT_EQ(f.check("abcd"), "too_short_chars");
  EXPECT_EQ(f.check("中文中文中"), "");  // code points, not bytes
  EXPECT_EQ(f.check("abcdefghijk"), "too_long_chars");
  o.max_chars = 3;
  EXPECT_THROW(DocumentFilter(o, nullptr), Error);
  FilterOptions t;
  t.min_tokens = 2;
  EXPECT_THROW(DocumentFilter(t, nullptr), Error);  // token limits need a tokenizer
}

TEST(Filter, ScriptShare) {
  FilterOptions o;
  o.script = "cjk";
  o.min_script_share = 0.5;
  DocumentFilter f(o, nullptr);
  EXPECT_EQ(f.check("床前明月光，疑是地上霜。 (Li Bai)"), "");
  EXPECT_EQ(f.check("Mostly English with 一点 中文"), "script_share");
  EXPECT_EQ(f.check("12345 !!!"), "script_share");  // no letters at all
  EXPECT_EQ(f.measure("ab中").cjk_letters, 1);
  o.script = "cyrillic";
  EXPECT_EQ(DocumentFilter(o, nullptr).check("Привет, мир"), "");
  o.script = "klingonish";
  EXPECT_THROW(DocumentFilter(o, nullptr), Error);
}

TEST(Filter, GopherQuality) {
  FilterOptions o;
  o.set_gopher_quality();
  DocumentFilter f(o, nullptr);
  EXPECT_EQ(f.check(english()), "") << f.measure(english()).duplicate_ngram_fraction;
  EXPECT_EQ(f.check("#tag #more #hash the and of words here ok ..."), "symbol_ratio");
  std::string lines;
  for (int i = 0; i < 4; ++i) lines += "Click here to subscribe now\n";
  EXPECT_EQ(f.check(lines + english()), "duplicate_lines");
  std::string spam;
  for (int i = 0; i < 5; ++i) spam += "buy the best cheap watches with the great deals ";
  EXPECT_EQ(f.check(spam), "duplicate_ngrams");
  EXPECT_EQ(f.check("a an to be of it is so we go to the and that have with"), "mean_word_length");
  EXPECT_EQ(f.check("Cats chase mice around gardens during warm summer evenings"), "stop_words");
  const TextMetrics m = f.measure("one two\n\nthree\none two\n");
  EXPECT_EQ(m.lines, 3);
  EXPECT_NEAR(m.duplicate_line_fraction, 1.0 / 3, 1e-9);
  EXPECT_EQ(m.words, 5);
}

TEST(Filter, BlockList) {
  FilterOptions o;
  o.block_patterns = {"(?i)\\bcasino\\b", "lorem ipsum"};
  DocumentFilter f(o, nullptr);
  EXPECT_EQ(f.check("Visit our CASINO tonight"), "blocklist");
  EXPECT_EQ(f.check("casinos are not matched by a word boundary pattern"), "");
  EXPECT_EQ(f.check("lorem ipsum dolor"), "blocklist");
  o.block_patterns = {"(unclosed"};
  try {
    DocumentFilter bad(o, nullptr);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block-list pattern 1"), std::string::npos) << e.what();
  }
}

TEST(Filter, TokenWindowWithRealTokenizer) {
  const std::string tok_path =
      std::string(LMFORGE_SOURCE_DIR) + "/tests/tokenizer/fixtures/mini_deepseek_pattern.tokenizer.json";
  const auto tok = tokenizer::Tokenizer::from_file(tok_path);
  FilterOptions o;
  o.min_tokens = 8;
  o.max_tokens = 40;
  DocumentFilter f(o, &tok);
  tokenizer::EncodeOptions eo;
  eo.add_special_tokens = false;
  const std::string mid = "Hello world, this is a test of the token window.";
  const auto n = static_cast<int64_t>(tok.encode(mid, eo).size());
  ASSERT_GE(n, 8);
  ASSERT_LE(n, 40);
  EXPECT_EQ(f.check(mid), "");
  EXPECT_EQ(f.check("Hi"), "too_few_tokens");
  EXPECT_EQ(f.check(english() + english()), "too_many_tokens");
}

TEST(Filter, GopherKeepsMostOfARealLicence) {
  // Debian's licence texts, one paragraph a document: prose passes, short headings and lists do not.
  ReadOptions ro;
  ro.unit = TextUnit::kParagraph;
  FilterOptions o;
  o.set_gopher_quality();
  o.min_chars = 200;
  DocumentFilter f(o, nullptr);
  StageFns fns;
  fns.map = [&](Document& d) { d.drop = f.check(d.text); };
  if (!std::ifstream("/usr/share/common-licenses/GPL-3")) GTEST_SKIP();
  StageReport r = run_stage("filter", {"/usr/share/common-licenses/GPL-3"}, "", ro, fns);
  EXPECT_GT(r.docs_in, 100);  // 122 paragraphs
  EXPECT_GT(r.docs_out, 60);  // 74 kept
  EXPECT_GT(r.dropped["too_short_chars"].documents, 20);
}

}  // namespace
}  // namespace lmforge::data

namespace lmforge::data {
namespace {

std::vector<std::string> paragraphs(const std::string& path, size_t min_chars) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string s = ss.str();
  std::vector<std::string> out;
  size_t b = 0;
  while (b < s.size()) {
    size_t e = s.find("\n\n", b);
    if (e == std::string::npos) e = s.size();
    if (e - b >= min_chars) out.push_back(s.substr(b, e - b));
    b = e + 2;
  }
  return out;
}

// Reference: the GPL-3 text. Apache-2.0's paragraphs (the same domain, other words) score above the seed
// threshold 0.3; real spam e-mail does not.
TEST(DomainFilter, LicencesScoreAboveSpam) {
  const auto gpl = paragraphs("/usr/share/common-licenses/GPL-3", 1);
  const auto apache = paragraphs("/usr/share/common-licenses/Apache-2.0", 200);
  if (gpl.empty() || apache.empty()) GTEST_SKIP() << "no licence texts";
  auto scorer = std::make_shared<DomainScorer>(gpl);
  EXPECT_GT(scorer->documents(), 100u);
  std::vector<std::string> spam;
  std::ifstream f(std::string(LMFORGE_SOURCE_DIR) + "/tests/data/fixtures/spam_assassin_slice.jsonl");
  std::string l;
  while (std::getline(f, l) && spam.size() < 60) spam.push_back(nlohmann::json::parse(l)["text"]);
  int apache_kept = 0, spam_kept = 0;
  for (const auto& p : apache) apache_kept += scorer->score(p) >= 0.3;
  for (const auto& p : spam) spam_kept += scorer->score(p) >= 0.3;
  EXPECT_GE(apache_kept * 10, static_cast<int>(apache.size()) * 7);  // 15 of 18 measured
  EXPECT_LE(spam_kept * 10, static_cast<int>(spam.size()));          // 3 of 60 measured
  EXPECT_EQ(scorer->score("!!!"), 0.0);
  EXPECT_GT(scorer->score(gpl[20]), 0.3);  // a reference paragraph is in its own domain
  FilterOptions o;
  o.domain = scorer;
  DocumentFilter filter(o, nullptr);
  EXPECT_EQ(filter.check(spam[0]), "domain_score");
  EXPECT_THROW(DomainScorer({"", "..."}), Error);
}

}  // namespace
}  // namespace lmforge::data
