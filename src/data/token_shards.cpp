#include "lmforge/data/token_shards.h"

#include <cstdio>
#include <filesystem>

#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/tokenizer/tokenizer.h"

namespace lmforge::data {

namespace fs = std::filesystem;

uint32_t resolve_eos_id(const tokenizer::Tokenizer& tok, int64_t requested, const std::string& tokenizer_path) {
  if (requested >= 0) {
    LMF_CHECK(static_cast<uint64_t>(requested) < tok.vocab_size(), "--eos-id ", requested, " is outside ",
              tokenizer_path, "'s vocabulary of ", tok.vocab_size());
    return static_cast<uint32_t>(requested);
  }
  for (const char* name : {"<\xEF\xBD\x9C"
                           "end\xE2\x96\x81"
                           "of\xE2\x96\x81"
                           "sentence\xEF\xBD\x9C>",
                           "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"})
    if (auto id = tok.token_to_id(name)) return *id;
  throw Error(tokenizer_path +
              ": no end-of-text token (<｜end▁of▁sentence｜>, <|endoftext|>, <|end_of_text|>, </s>, "
              "<eos>) in the vocabulary; pass --eos-id");
}

bool is_val_text(std::string_view text, double val_fraction) {
  return static_cast<double>(hash64(text, 0x5B11) >> 11) * 0x1.0p-53 < val_fraction;
}

nlohmann::json TokenShardReport::to_json() const {
  return {{"read", read.to_json()},
          {"train_documents", train_documents},
          {"val_documents", val_documents},
          {"train_tokens", train_tokens},
          {"val_tokens", val_tokens},
          {"shards", shards},
          {"eos_id", eos_id},
          {"bytes_per_id", width}};
}

namespace {

// One split's ids; a shard is written whenever shard_tokens are gathered (cut inside a document if need be, as
// the byte-level writer does: readers see one stream, and a document counts in the shard where it ends).
struct SplitShards {
  std::string dir, prefix;
  int64_t shard_tokens;
  int width;
  std::vector<ShardInfo>* out;
  std::vector<uint32_t> buf;
  int64_t docs = 0;
  void add(const std::vector<uint32_t>& ids) {
    for (size_t i = 0; i < ids.size(); ++i) {
      buf.push_back(ids[i]);
      if (i + 1 == ids.size()) ++docs;
      if (static_cast<int64_t>(buf.size()) >= shard_tokens) flush();
    }
  }
  void flush() {
    if (buf.empty()) return;
    char name[64];
    std::snprintf(name, sizeof(name), "%s-%05zu.bin", prefix.c_str(), out->size());
    ShardInfo s;
    s.file = name;
    s.tokens = static_cast<int64_t>(buf.size());
    s.documents = docs;
    s.sha256 = write_shard((fs::path(dir) / name).string(), buf, width);
    out->push_back(s);
    buf.clear();
    docs = 0;
  }
};

}  // namespace

TokenShardReport write_token_shards(const std::vector<std::string>& inputs, const std::string& out_dir,
                                    const tokenizer::Tokenizer& tok, const std::string& tokenizer_path,
                                    const TokenShardOptions& opt) {
  LMF_CHECK(opt.val_fraction >= 0 && opt.val_fraction < 1, "data shard: --val-fraction must be in [0, 1), got ",
            opt.val_fraction);
  LMF_CHECK(opt.shard_tokens >= 1, "data shard: --shard-tokens must be positive");
  TokenShardReport rep;
  const uint32_t eos = resolve_eos_id(tok, opt.eos_id, tokenizer_path);
  rep.eos_id = eos;
  rep.width = tok.vocab_size() <= 65536 ? 2 : 4;
  fs::create_directories(out_dir);
  Manifest m;
  m.vocab_size = static_cast<int64_t>(tok.vocab_size());
  m.eos_id = eos;
  m.tokenizer = fs::path(tokenizer_path).filename().string() + " sha256:" + sha256_file(tokenizer_path);
  SplitShards train{out_dir, "train", opt.shard_tokens, rep.width, &m.train, {}, 0};
  SplitShards val{out_dir, "val", opt.shard_tokens, rep.width, &m.val, {}, 0};
  tokenizer::EncodeOptions eo;
  eo.add_special_tokens = false;
  eo.invalid_utf8 = tokenizer::InvalidUtf8::kReplace;
  StageFns fns;
  fns.map = [&](Document& d) {
    std::vector<uint32_t> ids;
    tok.encode_into(d.text, ids, eo);
    ids.push_back(eos);
    d.scratch.assign(ids.begin(), ids.end());
  };
  fns.ordered = [&](Document& d) {
    const std::vector<uint32_t> ids(d.scratch.begin(), d.scratch.end());
    d.scratch.clear();
    const bool is_val = is_val_text(d.text, opt.val_fraction);
    (is_val ? val : train).add(ids);
    (is_val ? rep.val_documents : rep.train_documents) += 1;
    (is_val ? rep.val_tokens : rep.train_tokens) += static_cast<int64_t>(ids.size());
  };
  rep.read = run_stage("shard", inputs, "", opt.read, fns);
  LMF_CHECK(rep.train_documents + rep.val_documents > 0, "data shard: the inputs hold no documents");
  train.flush();
  val.flush();
  save_manifest(out_dir, m);
  rep.shards = static_cast<int64_t>(m.train.size() + m.val.size());
  return rep;
}

}  // namespace lmforge::data
