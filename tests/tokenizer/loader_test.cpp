// tokenizer.json loading: unsupported components and malformed fields fail with the file and JSON field named;
// the Oniguruma-to-PCRE2 translation; invalid UTF-8 handling.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "lmforge/core/error.h"
#include "lmforge/tokenizer/tokenizer.h"
#include "tokenizer/regex.h"

namespace fs = std::filesystem;
using lmforge::tokenizer::EncodeOptions;
using lmforge::tokenizer::InvalidUtf8;
using lmforge::tokenizer::Tokenizer;
using nlohmann::json;

namespace {

json base() {
  std::ifstream in(fs::path(LMFORGE_SOURCE_DIR) / "tests/tokenizer/fixtures/mini_gpt2_template.tokenizer.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

std::string load_error(const json& j) {
  try {
    Tokenizer::from_json(j.dump(), "t.json");
  } catch (const lmforge::Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerLoader, UnsupportedComponentsNameFileAndField) {
  struct Case {
    const char* pointer;
    json value;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"/model/type", "Unigram", "t.json: model.type: unsupported model"},
      {"/normalizer", json{{"type", "BertNormalizer"}},
       "t.json: normalizer.type: unsupported normalizer \"BertNormalizer\""},
      {"/pre_tokenizer", json{{"type", "UnicodeScripts"}}, "t.json: pre_tokenizer.type: unsupported pre-tokenizer"},
      {"/pre_tokenizer", json{{"type", "Metaspace"}, {"prepend_scheme", "sometimes"}},
       "t.json: pre_tokenizer.prepend_scheme: unknown prepend_scheme \"sometimes\""},
      {"/pre_tokenizer", json{{"type", "Metaspace"}, {"replacement", "ab"}},
       "t.json: pre_tokenizer.replacement: must be a single character"},
      {"/decoder", json{{"type", "Sequence"}, {"decoders", {{{"type", "Strip"}, {"content", " "}, {"start", -1}}}}},
       "t.json: decoder.decoders[0].start: must be a small unsigned integer"},
      {"/decoder", json{{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"Regex", "("}}}}}}},
       "t.json: decoder.decoders[0].content"},
      {"/decoder", json{{"type", "Replace"}, {"pattern", {{"Regex", "("}}}, {"content", " "}},
       "t.json: decoder.pattern: regex does not compile"},
      {"/decoder", json{{"type", "WordPiece"}}, "t.json: decoder.type: unsupported decoder"},
      {"/post_processor", json{{"type", "BertProcessing"}}, "t.json: post_processor.type: unsupported post-processor"},
      {"/truncation", json{{"max_length", 5}}, "t.json: truncation: is not supported"},
      {"/model/dropout", 0.1, "t.json: model.dropout"},
      {"/model/merges/3", 7, "t.json: model.merges[3]: must be"},
      {"/model/merges/4", "nospace", "t.json: model.merges[4]: must be"},
      {"/model/merges/5", "zzzq qqqz", "t.json: model.merges[5]: token \"zzzq\" is not in the vocabulary"},
      {"/model/vocab/hello", -3, "t.json: model.vocab.hello: id must be"},
      {"/model/unk_token", "<nope>", "t.json: model.unk_token"},
      {"/pre_tokenizer", json{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}},
       "t.json: pre_tokenizer.pattern: regex does not compile"},
      {"/pre_tokenizer", json{{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}},
       "t.json: pre_tokenizer.behavior: unknown behavior"},
      {"/added_tokens/0/content", 5, "t.json: added_tokens[0].content: must be a string"},
      {"/added_tokens/1/lstrip", "yes", "t.json: added_tokens[1].lstrip: must be true or false"},
      {"/post_processor/processors/1/single/0", json{{"SpecialToken", {{"id", "<x>"}}}},
       "\"<x>\" is not in special_tokens"},
  };
  for (const Case& c : cases) {
    json j = base();
    j[json::json_pointer(c.pointer)] = c.value;
    std::string err = load_error(j);
    EXPECT_NE(err.find(c.expect), std::string::npos) << c.pointer << " gave: " << err;
  }
  json no_model = base();
  no_model.erase("model");
  EXPECT_NE(load_error(no_model).find("t.json: model: missing"), std::string::npos);
  EXPECT_THROW(Tokenizer::from_json("{\"model\": ", "t.json"), lmforge::Error);
  json deep = base();
  json seq = {{"type", "NFC"}};
  for (int i = 0; i < 200; ++i) seq = {{"type", "Sequence"}, {"normalizers", {seq}}};
  deep["normalizer"] = seq;
  EXPECT_NE(load_error(deep).find("t.json: JSON nested deeper than 64 levels"), std::string::npos);
  EXPECT_THROW(Tokenizer::from_file("/no/such/tokenizer.json"), lmforge::Error);
  EXPECT_NE(load_error(json::array()).find("t.json: top level must be a JSON object"), std::string::npos);
}

TEST(TokenizerLoader, InvalidUtf8IsAnErrorOrReplaced) {
  Tokenizer tok = Tokenizer::from_json(base().dump(), "t.json");
  std::string bad = "ok \xff\xfe then \xE4\xBD";  // stray bytes and a truncated sequence
  try {
    tok.encode(bad);
    FAIL() << "expected an error";
  } catch (const lmforge::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8 at byte 3"), std::string::npos) << e.what();
  }
  EncodeOptions opt;
  opt.invalid_utf8 = InvalidUtf8::kReplace;
  opt.add_special_tokens = false;
  EXPECT_EQ(tok.decode(tok.encode(bad, opt)), "ok \xEF\xBF\xBD\xEF\xBF\xBD then \xEF\xBF\xBD");
  // Decoding ids that split a character repairs the text, as HF does; unknown ids are an error.
  EXPECT_THROW(tok.decode(std::vector<uint32_t>{999999}), lmforge::Error);
}

TEST(TokenizerLoader, OnigurumaClassesTranslate) {
  using lmforge::tokenizer::translate_onig_pattern;
  EXPECT_EQ(translate_onig_pattern(R"(\s+(?!\S))"), R"(\p{White_Space}+(?!\P{White_Space}))");
  EXPECT_EQ(translate_onig_pattern(R"([^\s\w])"), R"([^\p{White_Space}\p{L}\p{M}\p{Nd}\p{Pc}])");
  EXPECT_EQ(translate_onig_pattern(R"(\\s[]\s])"), R"(\\s[]\p{White_Space}])");
  // U+0085 (NEL) is whitespace to Oniguruma and Rust, not to PCRE2's own \s.
  lmforge::tokenizer::Regex re(R"(\s+)", false, "test");
  std::vector<std::pair<uint32_t, uint32_t>> m;
  re.find_all(
      "a\xC2\x85"
      "b",
      m);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], (std::pair<uint32_t, uint32_t>{1, 3}));
}

TEST(TokenizerLoader, EncodeBatchMatchesOneByOne) {
  Tokenizer tok = Tokenizer::from_json(base().dump(), "t.json");
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back("text number " + std::to_string(i * 7919) + " 你好 <sep> x");
  std::vector<std::string_view> views(texts.begin(), texts.end());
  auto batch = tok.encode_batch(views);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(batch[i], tok.encode(texts[i]));
}

// The piece cache (bpe.cpp) admits a piece the second time it is met and starts a shard over when it fills: ids
// must not depend on it. 200,000 distinct words, each met three times, overflow every shard several times.
TEST(TokenizerLoader, PieceCacheDoesNotChangeIds) {
  const std::string j = base().dump();
  Tokenizer cold = Tokenizer::from_json(j, "t.json");
  Tokenizer warm = Tokenizer::from_json(j, "t.json");
  std::vector<std::string> docs;
  for (int d = 0; d < 200; ++d) {
    std::string t;
    for (int w = 0; w < 1000; ++w) t += " w" + std::to_string((d * 1000 + w) * 7919 % 1000003) + (w % 9 ? "" : " the");
    docs.push_back(t);
  }
  std::vector<std::vector<uint32_t>> want;
  for (const auto& t : docs) want.push_back(cold.encode(t));
  for (int pass = 0; pass < 3; ++pass)
    for (size_t i = 0; i < docs.size(); ++i)
      ASSERT_EQ(warm.encode(docs[i]), want[i]) << "pass " << pass << " doc " << i;
  std::vector<std::string_view> views(docs.begin(), docs.end());
  EXPECT_EQ(warm.encode_batch(views), want);  // several threads sharing the cache
}

// Each thread keeps a small front cache of recurring pieces shared by every tokenizer it runs: entries are tagged
// with their tokenizer, so two tokenizers with different vocabularies encoding the same text on one thread each
// still get their own ids (the reference ids come from fresh threads, whose front caches are empty).
TEST(TokenizerLoader, FrontCacheIsPerTokenizer) {
  // b is a with the ids of "Ġthe" and "Ġat" swapped: the same pieces, different ids.
  json jb = base();
  auto& vocab = jb["model"]["vocab"];
  const int the = vocab["\u0120the"].get<int>(), at = vocab["\u0120at"].get<int>();
  vocab["\u0120the"] = at;
  vocab["\u0120at"] = the;
  const Tokenizer a = Tokenizer::from_json(base().dump(), "a.json"), b = Tokenizer::from_json(jb.dump(), "b.json");
  std::string text;
  for (int i = 0; i < 300; ++i) text += " the cat sat at the mat " + std::to_string(i % 7);
  std::vector<uint32_t> want_a, want_b;
  std::thread([&] { want_a = a.encode(text); }).join();
  std::thread([&] { want_b = b.encode(text); }).join();
  ASSERT_NE(want_a, want_b);
  for (int pass = 0; pass < 3; ++pass) {
    EXPECT_EQ(a.encode(text), want_a) << "pass " << pass;
    EXPECT_EQ(b.encode(text), want_b) << "pass " << pass;
  }
}

}  // namespace
