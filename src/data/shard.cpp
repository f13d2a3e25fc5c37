#include "lmforge/data/shard.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "lmforge/core/error.h"
#include "lmforge/io/atomic_file.h"

namespace lmforge::data {

namespace fs = std::filesystem;

namespace {

void put_u32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void put_u64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get_u32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

struct Sha256 {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  Sha256() {
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1)
      throw Error("sha256: OpenSSL initialisation failed");
  }
  ~Sha256() { EVP_MD_CTX_free(ctx); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* p, size_t n) { EVP_DigestUpdate(ctx, p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx, md, &n);
    static const char* d = "0123456789abcdef";
    std::string s;
    for (unsigned int i = 0; i < n; ++i) {
      s += d[md[i] >> 4];
      s += d[md[i] & 15];
    }
    return s;
  }
};

}  // namespace

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open for hashing");
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(f.gcount()));
  }
  return h.hex();
}

std::string write_shard(const std::string& path, const std::vector<uint32_t>& ids, int width) {
  uint32_t mx = 0;
  for (uint32_t v : ids) mx = std::max(mx, v);
  if (width == 0) width = mx < 65536 ? 2 : 4;
  LMF_CHECK(width == 2 || width == 4, path, ": shard width must be 2 or 4 bytes, got ", width);
  LMF_CHECK(width == 4 || mx < 65536, path, ": id ", mx, " does not fit 2-byte shards");
  unsigned char hdr[kShardHeaderBytes] = {};
  std::memcpy(hdr, kShardMagic, 8);
  put_u32(hdr + 8, kShardVersion);
  put_u32(hdr + 12, static_cast<uint32_t>(width));
  put_u64(hdr + 16, ids.size());
  Sha256 h;
  io::AtomicFileWriter w(path);
  w.write(hdr, sizeof(hdr));
  h.update(hdr, sizeof(hdr));
  std::vector<unsigned char> buf;
  const size_t chunk = 1 << 16;
  for (size_t i = 0; i < ids.size(); i += chunk) {
    const size_t n = std::min(chunk, ids.size() - i);
    buf.resize(n * static_cast<size_t>(width));
    for (size_t j = 0; j < n; ++j) {
      const uint32_t v = ids[i + j];
      for (int b = 0; b < width; ++b) buf[j * width + b] = static_cast<unsigned char>(v >> (8 * b));
    }
    w.write(buf.data(), buf.size());
    h.update(buf.data(), buf.size());
  }
  w.commit();
  return h.hex();
}

ShardReader::ShardReader(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open token shard: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(path + ": cannot stat token shard");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size < kShardHeaderBytes) {
    ::close(fd);
    throw Error(path + ": not a token shard (" + std::to_string(size) + " bytes, header needs 32)");
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw Error(path + ": cannot map token shard");
  map_ = static_cast<const unsigned char*>(p);
  map_size_ = size;
  auto fail = [&](const std::string& msg) {
    ::munmap(const_cast<unsigned char*>(map_), map_size_);
    map_ = nullptr;
    throw Error(path + ": " + msg);
  };
  if (std::memcmp(map_, kShardMagic, 8) != 0) fail("not a token shard (bad magic)");
  const uint32_t version = get_u32(map_ + 8);
  if (version != kShardVersion) fail("unsupported token shard version " + std::to_string(version));
  const uint32_t width = get_u32(map_ + 12);
  if (width != 2 && width != 4) fail("bad id width " + std::to_string(width) + " (field 'dtype')");
  const uint64_t count = get_u64(map_ + 16);
  if (count > (size - kShardHeaderBytes) / width || kShardHeaderBytes + count * width != size)
    fail("header says " + std::to_string(count) + " ids of " + std::to_string(width) + " bytes but the file has " +
         std::to_string(size) + " bytes (truncated or corrupt; field 'count')");
  width_ = static_cast<int>(width);
  count_ = static_cast<int64_t>(count);
}

ShardReader::~ShardReader() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), map_size_);
}

uint32_t ShardReader::at(int64_t i) const {
  LMF_CHECK(i >= 0 && i < count_, path_, ": token index ", i, " outside [0, ", count_, ")");
  const unsigned char* p = map_ + kShardHeaderBytes + static_cast<size_t>(i) * width_;
  return width_ == 2 ? static_cast<uint32_t>(p[0] | (p[1] << 8)) : get_u32(p);
}

void ShardReader::read(int64_t pos, int64_t n, int32_t* out) const {
  LMF_CHECK(pos >= 0 && n >= 0 && pos + n <= count_, path_, ": range [", pos, ", ", pos + n, ") outside [0, ", count_,
            ")");
  const unsigned char* p = map_ + kShardHeaderBytes + static_cast<size_t>(pos) * width_;
  if (width_ == 2) {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(p[2 * i] | (p[2 * i + 1] << 8));
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(get_u32(p + 4 * i));
  }
}

nlohmann::json Manifest::to_json() const {
  auto list = [](const std::vector<ShardInfo>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const ShardInfo& s : v)
      a.push_back({{"file", s.file}, {"tokens", s.tokens}, {"documents", s.documents}, {"sha256", s.sha256}});
    return a;
  };
  return {{"format", "lmforge-token-shards"}, {"version", 1},
          {"vocab_size", vocab_size},         {"eos_id", eos_id},
          {"tokenizer", tokenizer},           {"splits", {{"train", list(train)}, {"val", list(val)}}}};
}

Manifest Manifest::from_json(const nlohmann::json& j, const std::string& source) {
  auto need = [&](const nlohmann::json& o, const char* field, auto check, const char* what) -> const nlohmann::json& {
    if (!o.is_object() || !o.contains(field) || !check(o.at(field)))
      throw Error(source + ": field '" + field + "' missing or not " + what);
    return o.at(field);
  };
  auto is_int = [](const nlohmann::json& v) { return v.is_number_integer() && v.get<int64_t>() >= 0; };
  auto is_str = [](const nlohmann::json& v) { return v.is_string(); };
  if (!j.is_object() || j.value("format", "") != "lmforge-token-shards")
    throw Error(source + ": not a token shard manifest (field 'format' must be \"lmforge-token-shards\")");
  Manifest m;
  m.vocab_size = need(j, "vocab_size", is_int, "a non-negative integer").get<int64_t>();
  m.eos_id = need(j, "eos_id", is_int, "a non-negative integer").get<int64_t>();
  m.tokenizer = j.value("tokenizer", "");
  const auto& splits = need(
      j, "splits", [](const nlohmann::json& v) { return v.is_object(); }, "an object");
  for (const char* name : {"train", "val"}) {
    auto& out = std::string(name) == "train" ? m.train : m.val;
    if (!splits.contains(name)) continue;
    const auto& arr = splits.at(name);
    if (!arr.is_array()) throw Error(source + ": field 'splits." + name + "' is not an array");
    for (const auto& s : arr) {
      ShardInfo si;
      si.file = need(s, "file", is_str, "a string").get<std::string>();
      if (si.file.empty() || si.file.find("..") != std::string::npos || si.file[0] == '/')
        throw Error(source + ": shard file '" + si.file + "' must be a plain name inside the manifest's folder");
      si.tokens = need(s, "tokens", is_int, "a non-negative integer").get<int64_t>();
      si.documents = s.value("documents", int64_t{0});
      si.sha256 = s.value("sha256", "");
      out.push_back(si);
    }
  }
  return m;
}

Manifest load_manifest(const std::string& dir, bool verify_sha256) {
  const std::string path = (fs::path(dir) / "manifest.json").string();
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open token shard manifest (is '" + dir + "' a shard folder?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
  Manifest m = Manifest::from_json(j, path);
  for (const auto* split : {&m.train, &m.val}) {
    for (const ShardInfo& s : *split) {
      const std::string sp = (fs::path(dir) / s.file).string();
      if (!fs::exists(sp)) throw Error(path + ": missing shard " + s.file);
      ShardReader r(sp);
      if (r.size() != s.tokens)
        throw Error(path + ": shard " + s.file + " has " + std::to_string(r.size()) + " tokens, manifest says " +
                    std::to_string(s.tokens));
      if (verify_sha256 && !s.sha256.empty() && sha256_file(sp) != s.sha256)
        throw Error(path + ": shard " + s.file + " does not match its sha256 (corrupt or replaced)");
    }
  }
  return m;
}

void save_manifest(const std::string& dir, const Manifest& m) {
  io::write_file_atomic((fs::path(dir) / "manifest.json").string(), m.to_json().dump(2) + "\n");
}

}  // namespace lmforge::data
