// Token shards (DESIGN.md section 4): a 32-byte header then little-endian token ids, documents separated by the
// EOS id. A directory of shards carries a manifest.json that versions the data (tokens, documents and sha256 of
// every shard, per split).
//
// Header: magic "LMFSHARD" (8 bytes), u32 version (1), u32 bytes per id (2 or 4), u64 token count, u64 reserved
// (0). File size must be exactly 32 + count * bytes per id.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lmforge/data/token_shards.h"

namespace lmforge::data {

constexpr char kShardMagic[8] = {'L', 'M', 'F', 'S', 'H', 'A', 'R', 'D'};
constexpr uint32_t kShardVersion = 1;
constexpr size_t kShardHeaderBytes = 32;

// Writes ids atomically with 2 bytes per id when every id fits (and width is 0 or 2), else 4. Returns the sha256
// (hex) of the whole file.
std::string write_shard(const std::string& path, const std::vector<uint32_t>& ids, int width = 0);

// A shard memory-mapped for reading; the header is checked against the file size before anything is read.
class ShardReader {
 public:
  explicit ShardReader(const std::string& path);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  int64_t size() const { return count_; }
  int width() const { return width_; }
  uint32_t at(int64_t i) const;
  // ids [pos, pos + n) into out (bounds checked).
  void read(int64_t pos, int64_t n, int32_t* out) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const unsigned char* map_ = nullptr;
  size_t map_size_ = 0;
  int64_t count_ = 0;
  int width_ = 2;
};

struct ShardInfo {
  std::string file;  // relative to the manifest's folder
  int64_t tokens = 0, documents = 0;
  std::string sha256;
};

struct Manifest {
  int64_t vocab_size = 0;
  int64_t eos_id = 0;
  std::string tokenizer;  // "bytes" or the tokenizer's description
  std::vector<ShardInfo> train, val;
  nlohmann::json to_json() const;
  static Manifest from_json(const nlohmann::json& j, const std::string& source);
};

// Reads DIR/manifest.json and checks every listed shard exists with the stated token count ("missing shard ..."
// errors name the manifest and the file). With verify_sha256 the contents are hashed and compared too.
Manifest load_manifest(const std::string& dir, bool verify_sha256 = false);
void save_manifest(const std::string& dir, const Manifest& m);

// Byte-level tokenisation: every byte is its own id (0-255), documents end with EOS = 256. The same reader, split
// rule and report as `data shard --tokenizer` (write_shards in token_shards.h): --skip-bad, --invalid-utf8,
// --field and --text-unit apply, and train/validation is chosen by a hash of the text (a corpus of fewer than 20
// documents holds out the tail of each instead).
constexpr uint32_t kByteEos = 256;
struct ByteShardOptions {
  double val_fraction = 0.05;      // share of documents (or of each document's bytes, below 20 documents) held out
  int64_t shard_tokens = 1 << 26;  // tokens per shard file
  ReadOptions read;  // field, --skip-bad, --invalid-utf8, --text-unit (default: a plain file is one document)
};
using ByteShardReport = TokenShardReport;
ByteShardReport write_byte_shards(const std::vector<std::string>& inputs, const std::string& out_dir,
                                  const ByteShardOptions& opt);

// sha256 of a file, hex.
std::string sha256_file(const std::string& path);

}  // namespace lmforge::data
