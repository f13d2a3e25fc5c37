#include "lmforge/data/token_shards.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/kernels/thread_pool.h"
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
    for (size_t i = 0; i < ids.size();) {
      const size_t n = std::min(ids.size() - i, static_cast<size_t>(shard_tokens) - buf.size());
      buf.insert(buf.end(), ids.begin() + static_cast<std::ptrdiff_t>(i),
                 ids.begin() + static_cast<std::ptrdiff_t>(i + n));
      i += n;
      if (i == ids.size()) ++docs;
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

// Where a document of fewer than kSplitInsideBelow is cut: the last val_fraction of its bytes, moved forward to
// the next line break when one is within 4 KB, and never inside a UTF-8 sequence.
size_t inside_cut(std::string_view text, double val_fraction) {
  size_t cut = text.size() - static_cast<size_t>(static_cast<double>(text.size()) * val_fraction);
  const size_t nl = text.find('\n', cut);
  if (nl != std::string_view::npos && nl - cut < 4096) return nl + 1;
  while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) ++cut;
  return cut;
}

}  // namespace

nlohmann::json TokenShardReport::to_json() const {
  return {{"read", read.to_json()},
          {"documents", documents},
          {"train_documents", train_documents},
          {"val_documents", val_documents},
          {"train_tokens", train_tokens},
          {"val_tokens", val_tokens},
          {"shards", shards},
          {"eos_id", eos_id},
          {"bytes_per_id", width}};
}

struct ShardWriter::Impl {
  ShardEncoding enc;
  TokenShardOptions opt;
  TokenShardReport rep;
  Manifest m;
  std::string dir;
  SplitShards train, val;
  // The first documents wait until it is known whether the corpus has kSplitInsideBelow of them.
  struct Held {
    std::string text;
    std::vector<uint32_t> ids;
  };
  std::vector<Held> held;
  bool by_hash = false;

  void emit(bool is_val, const std::vector<uint32_t>& ids) {
    (is_val ? val : train).add(ids);
    (is_val ? rep.val_documents : rep.train_documents) += 1;
    (is_val ? rep.val_tokens : rep.train_tokens) += static_cast<int64_t>(ids.size());
  }
};

ShardWriter::ShardWriter(const std::string& out_dir, ShardEncoding enc, const TokenShardOptions& opt)
    : impl_(std::make_unique<Impl>()) {
  LMF_CHECK(opt.val_fraction >= 0 && opt.val_fraction < 1, "data shard: --val-fraction must be in [0, 1), got ",
            opt.val_fraction);
  LMF_CHECK(opt.shard_tokens >= 1, "data shard: --shard-tokens must be positive");
  Impl& s = *impl_;
  s.enc = std::move(enc);
  s.opt = opt;
  s.dir = out_dir;
  s.rep.eos_id = s.enc.eos;
  s.rep.width = s.enc.vocab_size <= 65536 ? 2 : 4;
  s.m.vocab_size = s.enc.vocab_size;
  s.m.eos_id = s.enc.eos;
  s.m.tokenizer = s.enc.description;
  s.train = SplitShards{out_dir, "train", opt.shard_tokens, s.rep.width, &s.m.train, {}, 0};
  s.val = SplitShards{out_dir, "val", opt.shard_tokens, s.rep.width, &s.m.val, {}, 0};
  fs::create_directories(out_dir);
}

ShardWriter::~ShardWriter() = default;

StageFns ShardWriter::fns() {
  Impl* s = impl_.get();
  StageFns f;
  f.map = [s](Document& d) {
    s->enc.encode(d.text, d.ids);
    d.ids.push_back(s->enc.eos);
  };
  f.ordered = [s](Document& d) {
    std::vector<uint32_t> ids = std::move(d.ids);
    d.ids = {};
    ++s->rep.documents;
    if (!s->by_hash) {
      s->held.push_back({d.text, std::move(ids)});
      if (static_cast<int64_t>(s->held.size()) < kSplitInsideBelow) return;
      s->by_hash = true;
      for (const Impl::Held& h : s->held) s->emit(is_val_text(h.text, s->opt.val_fraction), h.ids);
      s->held.clear();
      return;
    }
    s->emit(is_val_text(d.text, s->opt.val_fraction), ids);
  };
  return f;
}

TokenShardReport ShardWriter::finish(StageReport read) {
  Impl& s = *impl_;
  LMF_CHECK(s.rep.documents > 0, "data shard: the inputs hold no documents");
  // Few documents: head to train, tail to validation, each piece encoded on its own and ended by EOS.
  for (Impl::Held& h : s.held) h.ids = {};
  std::vector<std::vector<uint32_t>> pieces(2 * s.held.size());
  parallel_for(static_cast<int64_t>(pieces.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const std::string_view t = s.held[static_cast<size_t>(i / 2)].text;
      const size_t cut = inside_cut(t, s.opt.val_fraction);
      const std::string_view part = i % 2 == 0 ? t.substr(0, cut) : t.substr(cut);
      if (i % 2 == 1 && part.empty()) continue;
      s.enc.encode(part, pieces[static_cast<size_t>(i)]);
      pieces[static_cast<size_t>(i)].push_back(s.enc.eos);
    }
  });
  for (size_t i = 0; i < pieces.size(); ++i)
    if (!pieces[i].empty()) s.emit(i % 2 == 1, pieces[i]);
  s.held.clear();
  s.train.flush();
  s.val.flush();
  save_manifest(s.dir, s.m);
  s.rep.shards = static_cast<int64_t>(s.m.train.size() + s.m.val.size());
  s.rep.read = std::move(read);
  return s.rep;
}

TokenShardReport write_shards(const std::vector<std::string>& inputs, const std::string& out_dir,
                              const ShardEncoding& enc, const TokenShardOptions& opt) {
  ShardWriter w(out_dir, enc, opt);
  const StageFns f = w.fns();
  return w.finish(run_stage("shard", inputs, "", opt.read, f));
}

ShardEncoding tokenizer_encoding(const tokenizer::Tokenizer& tok, const std::string& tokenizer_path, int64_t eos_id) {
  ShardEncoding enc;
  enc.eos = resolve_eos_id(tok, eos_id, tokenizer_path);
  enc.vocab_size = static_cast<int64_t>(tok.vocab_size());
  enc.description = fs::path(tokenizer_path).filename().string() + " sha256:" + sha256_file(tokenizer_path);
  tokenizer::EncodeOptions eo;
  eo.add_special_tokens = false;
  eo.invalid_utf8 = tokenizer::InvalidUtf8::kReplace;
  enc.encode = [&tok, eo](std::string_view text, std::vector<uint32_t>& ids) { tok.encode_into(text, ids, eo); };
  return enc;
}

ShardEncoding byte_encoding() {
  ShardEncoding enc;
  enc.eos = kByteEos;
  enc.vocab_size = 257;
  enc.description = "bytes";
  enc.encode = [](std::string_view text, std::vector<uint32_t>& ids) {
    ids.insert(ids.end(), reinterpret_cast<const unsigned char*>(text.data()),
               reinterpret_cast<const unsigned char*>(text.data()) + text.size());
  };
  return enc;
}

TokenShardReport write_token_shards(const std::vector<std::string>& inputs, const std::string& out_dir,
                                    const tokenizer::Tokenizer& tok, const std::string& tokenizer_path,
                                    const TokenShardOptions& opt) {
  return write_shards(inputs, out_dir, tokenizer_encoding(tok, tokenizer_path, opt.eos_id), opt);
}

ByteShardReport write_byte_shards(const std::vector<std::string>& inputs, const std::string& out_dir,
                                  const ByteShardOptions& opt) {
  TokenShardOptions o;
  o.val_fraction = opt.val_fraction;
  o.shard_tokens = opt.shard_tokens;
  o.read = opt.read;
  return write_shards(inputs, out_dir, byte_encoding(), o);
}

}  // namespace lmforge::data
