// `lmforge data shard --tokenizer T.json` (and `--bytes`, shard.h): JSONL or plain text to token shards (shard.h)
// with a manifest. Documents are encoded in parallel (no BOS/EOS template; the EOS id is appended to every
// document), assigned to train or validation by a hash of their text (so the split is stable when documents are
// added, reordered or re-run, and copies of a text land in the same split), and written as uint16 ids when the
// vocabulary fits, else uint32. A corpus of fewer than 20 documents (one book, a few files) cannot be split by
// document, so the last val_fraction of each document, cut at a line break, is held out instead.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/data/corpus.h"

namespace lmforge::tokenizer {
class Tokenizer;
}

namespace lmforge::data {

struct TokenShardOptions {
  double val_fraction = 0.05;
  int64_t shard_tokens = 1 << 26;
  int64_t eos_id = -1;  // -1: the tokenizer's end-of-text token (see resolve_eos_id)
  ReadOptions read;
};

struct TokenShardReport {
  StageReport read;
  int64_t documents = 0;  // input documents sharded (below 20, each counts once but lands in both splits)
  int64_t train_documents = 0, val_documents = 0, train_tokens = 0, val_tokens = 0, shards = 0;
  int64_t eos_id = 0;
  int width = 2;
  nlohmann::json to_json() const;
};

// `requested` when >= 0 (checked against the vocabulary), else the first of <｜end▁of▁sentence｜>,
// <|endoftext|>, <|end_of_text|>, </s>, <eos> the tokenizer has; an error naming --eos-id when none.
uint32_t resolve_eos_id(const tokenizer::Tokenizer& tok, int64_t requested, const std::string& tokenizer_path);

// True when a document with this text goes to validation.
bool is_val_text(std::string_view text, double val_fraction);

// What the shard writer needs to know of a tokenisation. encode appends a text's ids (without EOS) and is called
// from several threads at once.
struct ShardEncoding {
  std::function<void(std::string_view text, std::vector<uint32_t>& ids)> encode;
  uint32_t eos = 0;
  int64_t vocab_size = 0;
  std::string description;  // the manifest's "tokenizer" field
};
TokenShardReport write_shards(const std::vector<std::string>& inputs, const std::string& out_dir,
                              const ShardEncoding& enc, const TokenShardOptions& opt);

// write_shards as a stage that another driver can run (the single-pass `data run`): fns().map encodes (in
// parallel), fns().ordered assigns documents to splits and appends them in input order, finish() writes the last
// shards and the manifest. The functions refer to this object, which must outlive them.
class ShardWriter {
 public:
  ShardWriter(const std::string& out_dir, ShardEncoding enc, const TokenShardOptions& opt);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  StageFns fns();
  // `read` is the stage's report from its driver; an error when no document arrived.
  TokenShardReport finish(StageReport read);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Encodings for write_shards / ShardWriter: a tokenizer (no BOS/EOS template, invalid UTF-8 replaced; the EOS
// from resolve_eos_id; `tok` must outlive the encoding), or bytes (ids 0-255, EOS 256 = kByteEos in shard.h).
ShardEncoding tokenizer_encoding(const tokenizer::Tokenizer& tok, const std::string& tokenizer_path, int64_t eos_id);
ShardEncoding byte_encoding();

// Documents below this count are split inside (see above).
constexpr int64_t kSplitInsideBelow = 20;

TokenShardReport write_token_shards(const std::vector<std::string>& inputs, const std::string& out_dir,
                                    const tokenizer::Tokenizer& tok, const std::string& tokenizer_path,
                                    const TokenShardOptions& opt);

}  // namespace lmforge::data
