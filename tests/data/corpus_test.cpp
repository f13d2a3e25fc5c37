// Corpus ingest: JSONL and plain text, UTF-8 repair/drop/error, --skip-bad, reports and atomic output.
#include "lmforge/data/corpus.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "lmforge/core/error.h"
#include "temp_dir_test.h"

namespace lmforge::data {
namespace {

class CorpusTest : public lmforge::testing::TempDirTest {
 protected:
  std::string write(const std::string& name, const std::string& body) {
    std::ofstream(path(name), std::ios::binary) << body;
    return path(name);
  }
  static std::vector<std::string> lines(const std::string& p) {
    std::ifstream f(p);
    std::vector<std::string> out;
    std::string l;
    while (std::getline(f, l)) out.push_back(l);
    return out;
  }
};

TEST_F(CorpusTest, JsonlKeepsOtherFieldsAndCountsBytes) {
  const auto in = write("a.jsonl", "{\"id\":1,\"body\":\"hello\"}\n\n{\"id\":2,\"body\":\"w\\u00f6rld\"}\r\n");
  ReadOptions o;
  o.field = "body";
  StageReport r = run_stage("copy", {in}, path("out.jsonl"), o, {});
  EXPECT_EQ(r.docs_in, 2);
  EXPECT_EQ(r.docs_out, 2);
  EXPECT_EQ(r.bytes_in, 5 + 6);
  EXPECT_EQ(r.bytes_out, 11);
  auto out = lines(path("out.jsonl"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(out[1]), (nlohmann::json{{"id", 2}, {"body", "w\u00f6rld"}}));
}

TEST_F(CorpusTest, MalformedLineNamesFileLineAndFieldUnlessSkipped) {
  const auto in = write("b.jsonl", "{\"text\":\"ok\"}\n{\"text\": oops}\n{\"other\":1}\n{\"text\":5}\n[1]\n");
  try {
    run_stage("copy", {in}, path("o.jsonl"), {}, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("b.jsonl:2: malformed JSON"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(path("o.jsonl")));  // nothing half-written
  ReadOptions o;
  o.skip_bad = true;
  StageReport r = run_stage("copy", {in}, path("o.jsonl"), o, {});
  EXPECT_EQ(r.docs_in, 5);
  EXPECT_EQ(r.docs_out, 1);
  EXPECT_EQ(r.dropped["bad_json"].documents, 2);
  EXPECT_EQ(r.dropped["missing_field"].documents, 2);
  try {
    run_stage("copy", {write("c.jsonl", "{\"other\":1}\n")}, "", {}, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("c.jsonl:1: field 'text' missing"), std::string::npos) << e.what();
  }
}

TEST_F(CorpusTest, InvalidUtf8IsRepairedDroppedOrAnError) {
  const auto in = write("u.jsonl",
                        "{\"text\":\"a\xff"
                        "b\"}\n{\"text\":\"fine\"}\n");
  StageReport r = run_stage("copy", {in}, path("o.jsonl"), {}, {});
  EXPECT_EQ(r.counters["utf8_repaired"], 1);
  EXPECT_EQ(r.bytes_in, 5 + 4);  // the repaired text: a, U+FFFD, b; then "fine"
  EXPECT_EQ(r.bytes_in, r.bytes_out);
  EXPECT_EQ(nlohmann::json::parse(lines(path("o.jsonl"))[0])["text"],
            "a\xEF\xBF\xBD"
            "b");
  ReadOptions drop;
  drop.utf8 = Utf8Policy::kDrop;
  r = run_stage("copy", {in}, path("o.jsonl"), drop, {});
  EXPECT_EQ(r.docs_out, 1);
  EXPECT_EQ(r.dropped["invalid_utf8"].documents, 1);
  ReadOptions err;
  err.utf8 = Utf8Policy::kError;
  EXPECT_THROW(run_stage("copy", {in}, "", err, {}), Error);
  // Plain text too.
  const auto txt = write("t.txt", "x\xc3(\n");
  r = run_stage("copy", {txt}, path("o2.jsonl"), {}, {});
  EXPECT_EQ(r.counters["utf8_repaired"], 1);
  EXPECT_EQ(r.bytes_in, r.bytes_out);
}

TEST_F(CorpusTest, PlainTextByFileLineOrParagraph) {
  const auto in = write("p.txt", "one\ntwo\n\n\nthree\r\nfour\n");
  ReadOptions o;
  EXPECT_EQ(run_stage("c", {in}, "", o, {}).docs_out, 1);
  o.unit = TextUnit::kLine;
  EXPECT_EQ(run_stage("c", {in}, "", o, {}).docs_out, 4);
  o.unit = TextUnit::kParagraph;
  run_stage("c", {in}, path("o.jsonl"), o, {});
  auto out = lines(path("o.jsonl"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(out[1])["text"], "three\nfour");
  // An empty file is no documents, not an error.
  EXPECT_EQ(run_stage("c", {write("e.jsonl", "")}, path("e_out.jsonl"), {}, {}).docs_in, 0);
}

TEST_F(CorpusTest, MapAndOrderedDecideDropsAndReportIsConsistent) {
  std::string body;
  for (int i = 0; i < 10000; ++i) body += "{\"text\":\"doc " + std::to_string(i % 100) + "\"}\n";
  const auto in = write("m.jsonl", body);
  StageFns fns;
  fns.map = [](Document& d) {
    if (d.text.back() == '7') d.drop = "sevens";
  };
  std::set<std::string> seen;
  fns.ordered = [&](Document& d) {
    if (!seen.insert(d.text).second) d.drop = "repeat";
  };
  StageReport r = run_stage("t", {in}, path("o.jsonl"), {}, fns);
  EXPECT_EQ(r.docs_out, 90);
  EXPECT_EQ(r.dropped["sevens"].documents, 1000);
  EXPECT_EQ(r.docs_in, r.docs_out + r.dropped["sevens"].documents + r.dropped["repeat"].documents);
  EXPECT_EQ(r.bytes_in, r.bytes_out + r.dropped["sevens"].bytes + r.dropped["repeat"].bytes);
  EXPECT_EQ(nlohmann::json::parse(lines(path("o.jsonl"))[0])["text"], "doc 0");  // order kept
  const nlohmann::json j = r.to_json();
  EXPECT_EQ(j["documents_in"], 10000);
  EXPECT_EQ(j["dropped"]["repeat"]["documents"], 8910);
  EXPECT_NE(r.summary().find("dropped repeat"), std::string::npos);
}

TEST_F(CorpusTest, HashIsStable) {
  EXPECT_EQ(hash64("hello world"), hash64("hello world"));
  EXPECT_NE(hash64("hello world"), hash64("hello worle"));
  EXPECT_NE(hash64(""), hash64(std::string(1, '\0')));
  EXPECT_NE(hash64("a", 1), hash64("a", 2));
}

}  // namespace
}  // namespace lmforge::data
