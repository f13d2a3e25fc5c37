// data shard --bytes and --tokenizer share one reader and one split rule: the same documents go to validation in
// both modes, both honour --skip-bad and --invalid-utf8, and both hold out the tail of each document of a small
// corpus.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/data/token_shards.h"
#include "lmforge/tokenizer/tokenizer.h"
#include "temp_dir_test.h"

namespace lmforge::data {
namespace {

const std::string kSlice = std::string(LMFORGE_SOURCE_DIR) + "/tests/data/fixtures/spam_assassin_slice.jsonl";
const std::string kMini =
    std::string(LMFORGE_SOURCE_DIR) + "/tests/tokenizer/fixtures/mini_deepseek_pattern.tokenizer.json";

class ShardSplit : public lmforge::testing::TempDirTest {
 protected:
  std::string write(const std::string& name, const std::string& body) {
    std::ofstream(path(name), std::ios::binary) << body;
    return path(name);
  }
  static std::vector<uint32_t> read_all(const std::string& dir, const std::vector<ShardInfo>& shards) {
    std::vector<uint32_t> ids;
    for (const auto& s : shards) {
      ShardReader r(dir + "/" + s.file);
      for (int64_t i = 0; i < r.size(); ++i) ids.push_back(r.at(i));
    }
    return ids;
  }
  // The documents of a byte-level split, cut at EOS.
  static std::vector<std::string> byte_docs(const std::string& dir, const std::vector<ShardInfo>& shards) {
    std::vector<std::string> docs(1);
    for (uint32_t id : read_all(dir, shards)) {
      if (id == kByteEos)
        docs.emplace_back();
      else
        docs.back() += static_cast<char>(id);
    }
    docs.pop_back();  // every document ends with EOS, so the last one is empty
    return docs;
  }
};

TEST_F(ShardSplit, BytesAndTokenizerSendTheSameDocumentsToValidation) {
  ByteShardOptions bo;
  bo.val_fraction = 0.2;
  const ByteShardReport br = write_byte_shards({kSlice}, path("b"), bo);
  const auto tok = tokenizer::Tokenizer::from_file(kMini);
  TokenShardOptions to;
  to.val_fraction = 0.2;
  to.eos_id = 0;
  const TokenShardReport tr = write_token_shards({kSlice}, path("t"), tok, kMini, to);
  EXPECT_EQ(br.documents, 200);
  EXPECT_EQ(tr.documents, 200);
  EXPECT_GT(br.val_documents, 20);
  EXPECT_EQ(br.val_documents, tr.val_documents);
  EXPECT_EQ(br.train_documents, tr.train_documents);
  // The byte-level validation documents are exactly the texts the rule picks, in input order.
  std::vector<std::string> want_val;
  std::ifstream f(kSlice);
  std::string line;
  while (std::getline(f, line)) {
    const std::string text = nlohmann::json::parse(line)["text"];
    if (is_val_text(text, 0.2)) want_val.push_back(text);
  }
  const Manifest bm = load_manifest(path("b"), true);
  EXPECT_EQ(byte_docs(path("b"), bm.val), want_val);
  // And the tokenizer's validation stream is those texts encoded.
  tokenizer::EncodeOptions eo;
  eo.add_special_tokens = false;
  std::vector<uint32_t> want_ids;
  for (const auto& t : want_val) {
    tok.encode_into(t, want_ids, eo);
    want_ids.push_back(0);
  }
  EXPECT_EQ(read_all(path("t"), load_manifest(path("t")).val), want_ids);
}

TEST_F(ShardSplit, BytesHonourSkipBadAndInvalidUtf8) {
  std::string body;
  for (int i = 0; i < 30; ++i) body += nlohmann::json({{"text", "document " + std::to_string(i)}}).dump() + "\n";
  body += "{\"text\": \"bad \xFF byte\"}\n{\"txt\": 1}\nnot json\n";
  const auto in = write("in.jsonl", body);
  ByteShardOptions o;
  // Without --skip-bad the missing field stops the run naming file:line.
  try {
    write_byte_shards({in}, path("a"), o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in.jsonl:32"), std::string::npos) << e.what();
  }
  o.read.skip_bad = true;
  ByteShardReport r = write_byte_shards({in}, path("b"), o);  // repair (default): U+FFFD in place of the byte
  EXPECT_EQ(r.documents, 31);
  EXPECT_EQ(r.read.dropped.at("missing_field").documents, 1);
  EXPECT_EQ(r.read.dropped.at("bad_json").documents, 1);
  EXPECT_EQ(r.read.counters.at("utf8_repaired"), 1);
  Manifest m = load_manifest(path("b"));
  std::set<std::string> all;
  for (const auto* split : {&m.train, &m.val})
    for (const auto& d : byte_docs(path("b"), *split)) all.insert(d);
  EXPECT_TRUE(all.count("bad \xEF\xBF\xBD byte")) << "repaired text missing";
  o.read.utf8 = Utf8Policy::kDrop;
  r = write_byte_shards({in}, path("c"), o);
  EXPECT_EQ(r.documents, 30);
  EXPECT_EQ(r.read.dropped.at("invalid_utf8").documents, 1);
  o.read.utf8 = Utf8Policy::kError;
  EXPECT_THROW(write_byte_shards({in}, path("d"), o), Error);
}

TEST_F(ShardSplit, SmallCorporaHoldOutTheTailOfEachDocumentInBothModes) {
  std::string book;
  for (int i = 0; i < 400; ++i) book += "Line " + std::to_string(i) + " of the book, 中文也在这里。\n";
  const auto in = write("book.txt", book);
  ByteShardOptions bo;
  bo.val_fraction = 0.1;
  const ByteShardReport br = write_byte_shards({in}, path("b"), bo);
  EXPECT_EQ(br.documents, 1);
  EXPECT_EQ(br.train_documents, 1);
  EXPECT_EQ(br.val_documents, 1);
  const Manifest bm = load_manifest(path("b"));
  const auto head = byte_docs(path("b"), bm.train), tail = byte_docs(path("b"), bm.val);
  ASSERT_EQ(head.size(), 1u);
  ASSERT_EQ(tail.size(), 1u);
  EXPECT_EQ(head[0] + tail[0], book);
  EXPECT_EQ(head[0].back(), '\n');  // cut at a line break
  EXPECT_NEAR(static_cast<double>(tail[0].size()) / static_cast<double>(book.size()), 0.1, 0.01);
  // The tokenizer mode cuts at the same place and encodes the two pieces.
  const auto tok = tokenizer::Tokenizer::from_file(kMini);
  TokenShardOptions to;
  to.val_fraction = 0.1;
  to.eos_id = 0;
  const TokenShardReport tr = write_token_shards({in}, path("t"), tok, kMini, to);
  EXPECT_EQ(tr.train_documents, 1);
  EXPECT_EQ(tr.val_documents, 1);
  tokenizer::EncodeOptions eo;
  eo.add_special_tokens = false;
  auto want = tok.encode(tail[0], eo);
  want.push_back(0);
  EXPECT_EQ(read_all(path("t"), load_manifest(path("t")).val), want);
}

}  // namespace
}  // namespace lmforge::data
