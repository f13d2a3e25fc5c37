// data shard --tokenizer: ids read back equal encode + EOS, deterministic hash split, manifest, uint16/uint32.
#include "lmforge/data/token_shards.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/tokenizer/tokenizer.h"
#include "temp_dir_test.h"
#include "tokenizer/unicode.h"

namespace lmforge::data {
namespace {

class TokenShards : public lmforge::testing::TempDirTest {
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
};

const std::string kMini =
    std::string(LMFORGE_SOURCE_DIR) + "/tests/tokenizer/fixtures/mini_deepseek_pattern.tokenizer.json";

TEST_F(TokenShards, RealEmailRoundTripsThroughShards) {
  const std::string in = std::string(LMFORGE_SOURCE_DIR) + "/tests/data/fixtures/spam_assassin_slice.jsonl";
  const auto tok = tokenizer::Tokenizer::from_file(kMini);
  TokenShardOptions o;
  o.val_fraction = 0.2;
  o.shard_tokens = 20000;
  o.eos_id = 0;
  TokenShardReport r = write_token_shards({in}, path("s"), tok, kMini, o);
  EXPECT_EQ(r.train_documents + r.val_documents, 200);
  EXPECT_GT(r.val_documents, 20);
  EXPECT_LT(r.val_documents, 70);
  EXPECT_EQ(r.width, 2);
  const Manifest m = load_manifest(path("s"), true);
  EXPECT_GT(m.train.size(), 2u);
  EXPECT_EQ(m.eos_id, 0);
  EXPECT_NE(m.tokenizer.find("sha256:"), std::string::npos);
  // Re-encode in order and compare the train stream id for id.
  std::ifstream f(in);
  std::string line;
  std::vector<uint32_t> want_train;
  tokenizer::EncodeOptions eo;
  eo.add_special_tokens = false;
  while (std::getline(f, line)) {
    const std::string text = nlohmann::json::parse(line)["text"];
    if (is_val_text(text, 0.2)) continue;
    tok.encode_into(text, want_train, eo);
    want_train.push_back(0);
  }
  EXPECT_EQ(read_all(path("s"), m.train), want_train);
  EXPECT_EQ(r.train_tokens, static_cast<int64_t>(want_train.size()));
  // Same inputs, same shards (sha256 in the manifest).
  write_token_shards({in}, path("s2"), tok, kMini, o);
  EXPECT_EQ(load_manifest(path("s2")).to_json()["splits"], m.to_json()["splits"]);
}

// Shards hold exactly --shard-tokens ids (the last one the rest), cut inside documents; a document counts in the
// shard where its EOS lands. Checked against a plain walk over the expected id stream.
TEST_F(TokenShards, ShardsCutInsideDocumentsAtShardTokens) {
  std::string jsonl;
  std::vector<uint32_t> stream;
  for (int i = 0; i < 60; ++i) {
    const std::string text(static_cast<size_t>(1 + (i * 37) % 23), static_cast<char>('a' + i % 26));
    jsonl += "{\"text\":\"" + text + "\"}\n";
    stream.insert(stream.end(), text.begin(), text.end());
    stream.push_back(kByteEos);
  }
  const auto in = write("docs.jsonl", jsonl);
  for (int64_t st : {1, 7, 23, 24, 100, 100000}) {
    ByteShardOptions o;
    o.val_fraction = 0;
    o.shard_tokens = st;
    const std::string dir = path("s" + std::to_string(st));
    const ByteShardReport r = write_byte_shards({in}, dir, o);
    const Manifest m = load_manifest(dir, true);
    EXPECT_EQ(read_all(dir, m.train), stream) << st;
    int64_t pos = 0;
    for (const ShardInfo& s : m.train) {
      const int64_t end = pos + s.tokens;
      EXPECT_EQ(s.tokens, std::min<int64_t>(st, static_cast<int64_t>(stream.size()) - pos)) << st;
      EXPECT_EQ(s.documents, std::count(stream.begin() + pos, stream.begin() + end, kByteEos)) << st << " " << s.file;
      pos = end;
    }
    EXPECT_EQ(pos, static_cast<int64_t>(stream.size()));
    EXPECT_EQ(r.train_documents, 60);
  }
}

TEST_F(TokenShards, EosResolution) {
  const auto tok = tokenizer::Tokenizer::from_file(kMini);
  EXPECT_EQ(resolve_eos_id(tok, 3, kMini), 3u);
  EXPECT_THROW(resolve_eos_id(tok, 1 << 30, kMini), Error);
}

// A vocabulary over 65,536 ids: shards hold uint32 ids; <|endoftext|> is found as the EOS.
TEST_F(TokenShards, LargeVocabularyUsesFourBytesPerId) {
  nlohmann::json vocab = nlohmann::json::object();
  const auto& b2c = tokenizer::unicode::byte_to_cp();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    tokenizer::unicode::append_utf8(s, b2c[b]);
    vocab[s] = b;
  }
  for (int i = 256; i < 70000; ++i) vocab["zz" + std::to_string(i)] = i;
  nlohmann::json tj = {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", 70000},
         {"content", "<|endoftext|>"},
         {"single_word", false},
         {"lstrip", false},
         {"rstrip", false},
         {"normalized", false},
         {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  nlohmann::json no_eos = tj;
  no_eos["added_tokens"] = nlohmann::json::array();
  const auto np = write("no_eos.json", no_eos.dump());
  try {
    resolve_eos_id(tokenizer::Tokenizer::from_file(np), -1, np);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pass --eos-id"), std::string::npos) << e.what();
  }
  const auto tp = write("big.json", tj.dump());
  const auto tok = tokenizer::Tokenizer::from_file(tp);
  const auto in = write("c.jsonl", "{\"text\":\"ab\"}\n{\"text\":\"c\"}\n");
  TokenShardOptions o;
  o.val_fraction = 0;
  TokenShardReport r = write_token_shards({in}, path("s"), tok, tp, o);
  EXPECT_EQ(r.width, 4);
  EXPECT_EQ(r.eos_id, 70000);
  const Manifest m = load_manifest(path("s"), true);
  EXPECT_EQ(read_all(path("s"), m.train), (std::vector<uint32_t>{97, 98, 70000, 99, 70000}));
}

}  // namespace
}  // namespace lmforge::data
