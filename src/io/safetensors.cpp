#include "lmforge/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "lmforge/core/error.h"
#include "lmforge/io/atomic_file.h"

namespace lmforge::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swapping");

namespace {

using json = nlohmann::json;

// Every dtype the format defines, so files holding ones lmforge cannot use still parse and list. `rank` is the
// reference implementation's enum order, which its writer sorts by (descending) to keep tensors aligned.
struct StDtype {
  std::string_view name;
  unsigned bits;
  int rank;
  bool supported;
  DType dtype;
};

constexpr StDtype kStDtypes[] = {
    {"BOOL", 8, 0, false, DType::F32},    {"F4", 4, 1, false, DType::F32},      {"F6_E2M3", 6, 2, false, DType::F32},
    {"F6_E3M2", 6, 3, false, DType::F32}, {"U8", 8, 4, true, DType::U8},        {"I8", 8, 5, true, DType::I8},
    {"F8_E5M2", 8, 6, false, DType::F32}, {"F8_E4M3", 8, 7, false, DType::F32}, {"F8_E8M0", 8, 8, false, DType::F32},
    {"I16", 16, 9, false, DType::F32},    {"U16", 16, 10, false, DType::F32},   {"F16", 16, 11, true, DType::F16},
    {"BF16", 16, 12, true, DType::BF16},  {"I32", 32, 13, true, DType::I32},    {"U32", 32, 14, false, DType::F32},
    {"F32", 32, 15, true, DType::F32},    {"C64", 64, 16, false, DType::F32},   {"F64", 64, 17, true, DType::F64},
    {"I64", 64, 18, false, DType::F32},   {"U64", 64, 19, false, DType::F32},
};

const StDtype* find_st_dtype(std::string_view name) {
  for (const StDtype& d : kStDtypes) {
    if (d.name == name) {
      return &d;
    }
  }
  return nullptr;
}

const StDtype* st_dtype_of(DType t) {
  for (const StDtype& d : kStDtypes) {
    if (d.supported && d.dtype == t) {
      return &d;
    }
  }
  return nullptr;
}

// Names and paths come from untrusted files: keep the message on one line and of bounded length.
std::string quote(std::string_view s) {
  constexpr size_t kMaxShown = 120;
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMaxShown) {
    out += "...";
  }
  return out + "'";
}

std::string errno_text(int err) {
  return std::error_code(err, std::generic_category()).message();
}

[[noreturn]] void fail(const std::string& file, const std::string& msg) {
  throw Error("safetensors file " + quote(file) + ": " + msg);
}

std::string json_type(const json& j) {
  if (j.is_number_float()) {
    return "a float";
  }
  if (j.is_number()) {
    return "an integer";
  }
  if (j.is_object() || j.is_array()) {
    return std::string("an ") + j.type_name();
  }
  return std::string("a ") + j.type_name();
}

// Parses and checks one header entry; `data_bytes` is the size of the data buffer.
SafetensorsEntry parse_entry(const std::string& file, const std::string& name, const json& v, uint64_t data_bytes) {
  const std::string where = "tensor " + quote(name) + ": ";
  if (!v.is_object()) {
    fail(file, where + "entry is " + json_type(v) + ", expected a JSON object");
  }
  auto field = [&](const char* key) -> const json& {
    auto it = v.find(key);
    if (it == v.end()) {
      fail(file, where + "missing field '" + key + "'");
    }
    return *it;
  };
  SafetensorsEntry e;
  e.name = name;

  const json& dt = field("dtype");
  if (!dt.is_string()) {
    fail(file, where + "field 'dtype' is " + json_type(dt) + ", expected a string");
  }
  e.dtype = dt.get<std::string>();
  const StDtype* st = find_st_dtype(e.dtype);
  if (!st) {
    fail(file, where + "field 'dtype': unknown dtype " + quote(e.dtype));
  }

  // Counts elements with every zero dimension read as one too, so that later stride arithmetic over the
  // shape cannot overflow even for tensors with no elements.
  const json& sh = field("shape");
  if (!sh.is_array()) {
    fail(file, where + "field 'shape' is " + json_type(sh) + ", expected an array");
  }
  uint64_t numel = 1, span = 1;
  for (size_t i = 0; i < sh.size(); ++i) {
    const json& d = sh[i];
    const std::string at = where + "field 'shape': dimension " + std::to_string(i) + " ";
    if (d.is_number_integer() && !d.is_number_unsigned()) {
      fail(file, at + "is negative (" + std::to_string(d.get<int64_t>()) + ")");
    }
    if (!d.is_number_unsigned()) {
      fail(file, at + "is " + json_type(d) + ", expected a non-negative integer");
    }
    const uint64_t n = d.get<uint64_t>();
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(file, at + "is too large (" + std::to_string(n) + ")");
    }
    if (__builtin_mul_overflow(span, std::max<uint64_t>(n, 1), &span) ||
        span > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(file, where + "field 'shape': the element count overflows");
    }
    numel *= n;  // <= span, cannot overflow
    e.shape.push_back(static_cast<int64_t>(n));
  }
  uint64_t bits = 0;
  if (__builtin_mul_overflow(numel, uint64_t{st->bits}, &bits)) {
    fail(file, where + "field 'shape': the byte size overflows");
  }
  if (bits % 8 != 0) {
    fail(file,
         where + "field 'shape': " + std::to_string(numel) + " elements of " + e.dtype + " do not fill whole bytes");
  }
  const uint64_t nbytes = bits / 8;

  const json& off = field("data_offsets");
  if (!off.is_array() || off.size() != 2) {
    fail(file, where + "field 'data_offsets' must be an array [begin, end]");
  }
  for (const json& o : off) {
    if (!o.is_number_unsigned()) {
      fail(file, where + "field 'data_offsets' holds " + json_type(o) + ", expected non-negative integers");
    }
  }
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  const std::string range = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) {
    fail(file, where + "field 'data_offsets' " + range + " has begin after end");
  }
  if (e.end > data_bytes) {
    fail(file, where + "field 'data_offsets' " + range + " ends beyond the data buffer (" + std::to_string(data_bytes) +
                   " bytes)");
  }
  if (e.end - e.begin != nbytes) {
    fail(file, where + "field 'data_offsets' " + range + " spans " + std::to_string(e.end - e.begin) + " bytes, but " +
                   e.dtype + shape_str(e.shape) + " needs " + std::to_string(nbytes));
  }
  return e;
}

std::map<std::string, std::string> parse_metadata(const std::string& file, const json& v) {
  if (!v.is_object()) {
    fail(file, "field '__metadata__' is " + json_type(v) + ", expected a JSON object");
  }
  std::map<std::string, std::string> out;
  for (const auto& [k, s] : v.items()) {
    if (!s.is_string()) {
      fail(file, "field '__metadata__': value of " + quote(k) + " is " + json_type(s) + ", expected a string");
    }
    out.emplace(k, s.get<std::string>());
  }
  return out;
}

}  // namespace

// ---- reading ----

SafetensorsFile SafetensorsFile::parse(std::string file, std::shared_ptr<void> keeper, const unsigned char* bytes,
                                       size_t size) {
  if (size < 8) {
    fail(file, "file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) {
    n = n << 8 | bytes[i];
  }
  if (n > kSafetensorsMaxHeaderBytes) {
    fail(file, "header length " + std::to_string(n) + " exceeds the limit of " +
                   std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  }
  if (n > size - 8) {
    fail(file, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size - 8) +
                   " bytes follow the length field)");
  }

  // Keys are tracked while parsing because the DOM keeps only the last of repeated keys. Nesting is bounded
  // (generously: a real header needs three levels) so hostile input cannot build a deep tree.
  constexpr int kMaxDepth = 16;
  std::set<std::string> seen;
  std::string duplicate;
  bool too_deep = false;
  auto on_event = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second && duplicate.empty()) {
        duplicate = k;
      }
    }
    if ((ev == json::parse_event_t::object_start || ev == json::parse_event_t::array_start) && depth >= kMaxDepth) {
      too_deep = true;
      return false;
    }
    return true;
  };
  const char* h = reinterpret_cast<const char*>(bytes + 8);
  json header;
  try {
    header = json::parse(h, h + n, on_event);
  } catch (const json::exception& e) {
    fail(file, std::string("header is not valid JSON: ") + e.what());
  }
  if (too_deep) {
    fail(file, "header nests JSON deeper than " + std::to_string(kMaxDepth) + " levels");
  }
  if (!header.is_object()) {
    fail(file, "header is " + json_type(header) + ", expected a JSON object");
  }
  if (!duplicate.empty()) {
    fail(file, "header names " + quote(duplicate) + " more than once");
  }

  SafetensorsFile f;
  f.path_ = std::move(file);
  f.keeper_ = std::move(keeper);
  // Both callers hand in writable memory (a private mapping or an owned copy); tensors are mutable views.
  f.data_ = const_cast<unsigned char*>(bytes) + 8 + n;
  f.data_bytes_ = size - 8 - n;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      f.metadata_ = parse_metadata(f.path_, v);
    } else {
      f.entries_.push_back(parse_entry(f.path_, name, v, f.data_bytes_));
    }
  }

  // The format forbids overlap (a write through one tensor would change another). Gaps and trailing bytes
  // are harmless and accepted.
  std::sort(f.entries_.begin(), f.entries_.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const SafetensorsEntry* prev = nullptr;
  for (const SafetensorsEntry& e : f.entries_) {
    if (e.begin == e.end) {
      continue;
    }
    if (prev && e.begin < prev->end) {
      fail(f.path_, "tensors " + quote(prev->name) + " and " + quote(e.name) + " overlap: field 'data_offsets' [" +
                        std::to_string(prev->begin) + ", " + std::to_string(prev->end) + "] and [" +
                        std::to_string(e.begin) + ", " + std::to_string(e.end) + "]");
    }
    prev = &e;
  }
  for (size_t i = 0; i < f.entries_.size(); ++i) {
    f.index_.emplace(f.entries_[i].name, i);
  }
  return f;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fail(path, "cannot open: " + errno_text(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, "cannot stat: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {  // mmap cannot map an empty file; parse reports the short file without reading it
    ::close(fd);
    return parse(path, nullptr, nullptr, size);
  }
  // Private and writable: pages are shared with the page cache until a tensor is written in place, and the
  // file itself never changes. NORESERVE so a large model does not need its size in swap reserve.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
  int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    fail(path, "cannot memory-map " + std::to_string(size) + " bytes: " + errno_text(err));
  }
  std::shared_ptr<void> mapping(p, [size](void* q) { ::munmap(q, size); });
  SafetensorsFile f = parse(path, std::move(mapping), static_cast<const unsigned char*>(p), size);
  f.mapped_ = true;
  return f;
}

SafetensorsFile SafetensorsFile::from_bytes(std::string_view bytes, const std::string& label) {
  auto storage = Storage::allocate(bytes.size());
  if (!bytes.empty()) {
    std::memcpy(storage->data(), bytes.data(), bytes.size());
  }
  auto* p = static_cast<const unsigned char*>(storage->data());
  return parse(label, std::move(storage), p, bytes.size());
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const SafetensorsEntry& e : entries_) {
    out.push_back(e.name);
  }
  return out;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    fail(path_, "no tensor named " + quote(name));
  }
  return entries_[it->second];
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const StDtype* st = find_st_dtype(e.dtype);
  if (!st->supported) {
    fail(path_, "tensor " + quote(name) + " has dtype " + e.dtype +
                    ", which lmforge does not support (supported: F32, F64, F16, BF16, I32, U8, I8)");
  }
  unsigned char* p = data_ + e.begin;
  const size_t nbytes = static_cast<size_t>(e.end - e.begin);
  const size_t elem = st->bits / 8;
  if (reinterpret_cast<uintptr_t>(p) % elem == 0) {
    return Tensor::from_storage(Storage::borrow(p, nbytes, keeper_), st->dtype, e.shape);
  }
  // Kernels may use aligned loads, and misaligned access is UB in C++; pay for one copy instead.
  Tensor t = Tensor::empty(e.shape, st->dtype);
  if (nbytes > 0) {
    std::memcpy(t.raw_data(), p, nbytes);
  }
  return t;
}

void SafetensorsFile::drop_pages(const std::string& name) const {
  if (!mapped_) return;
  const SafetensorsEntry& e = entry(name);
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = (reinterpret_cast<uintptr_t>(data_ + e.begin) + page - 1) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(data_ + e.end) / page * page;
  if (end > b) ::madvise(reinterpret_cast<void*>(b), end - b, MADV_DONTNEED);
}

std::vector<std::string> model_weight_files(const std::string& dir, std::string& source) {
  namespace fs = std::filesystem;
  const fs::path single = fs::path(dir) / "model.safetensors", index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    source = single.string();
    return {source};
  }
  LMF_CHECK(fs::exists(index), dir, ": neither model.safetensors nor model.safetensors.index.json");
  source = index.string();
  std::ifstream in(index);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  LMF_CHECK(!j.is_discarded() && j.contains("weight_map") && j["weight_map"].is_object(), source,
            ": field 'weight_map' is missing or not an object");
  std::set<std::string> shards;
  for (const auto& [name, file] : j["weight_map"].items()) {
    LMF_CHECK(file.is_string(), source, ": weight_map entry '", name, "' is not a file name");
    const std::string f = file.get<std::string>();
    LMF_CHECK(f.find('/') == std::string::npos && f.find("..") == std::string::npos, source, ": weight_map entry '",
              name, "' names a file outside the model directory: ", f);
    shards.insert(f);
  }
  std::vector<std::string> files;
  for (const std::string& f : shards) files.push_back((fs::path(dir) / f).string());
  return files;
}

std::map<std::string, Tensor> load_safetensors(const std::string& path) {
  SafetensorsFile f = SafetensorsFile::open(path);
  std::map<std::string, Tensor> out;
  for (const std::string& name : f.names()) {
    out.emplace(name, f.get(name));
  }
  return out;
}

// ---- writing ----

namespace {

struct Prepared {
  std::string prefix;         // length field + padded header
  std::vector<size_t> order;  // indices into the specs, in data order
};

void check_utf8(const std::string& s, const std::string& what) {
  try {
    (void)json(s).dump();
  } catch (const json::exception&) {
    throw Error("cannot write safetensors: " + what + " " + quote(s) + " is not valid UTF-8");
  }
}

uint64_t spec_bytes(const SafetensorsSpec& s) {
  uint64_t n = type_size(s.dtype);
  for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
  return n;
}

Prepared prepare(const std::vector<SafetensorsSpec>& specs, const std::map<std::string, std::string>& metadata) {
  std::vector<const StDtype*> st(specs.size());
  std::set<std::string_view> names;
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::string& name = specs[i].name;
    LMF_CHECK(name != "__metadata__", "cannot write safetensors: '__metadata__' is reserved, not a tensor name");
    LMF_CHECK(names.insert(name).second, "cannot write safetensors: tensor name ", quote(name), " appears twice");
    st[i] = st_dtype_of(specs[i].dtype);
    LMF_CHECK(st[i] != nullptr, "cannot write safetensors: tensor ", quote(name), " has dtype ",
              dtype_name(specs[i].dtype),
              "; safetensors holds f32, f64, f16, bf16 or i32 (convert it first, or use GGUF for quantized weights)");
    for (int64_t d : specs[i].shape)
      LMF_CHECK(d >= 0, "cannot write safetensors: tensor ", quote(name), " has a negative dimension");
    check_utf8(name, "tensor name");
  }
  for (const auto& [k, v] : metadata) {
    check_utf8(k, "metadata key");
    check_utf8(v, "metadata value of " + quote(k) + ":");
  }
  Prepared out;
  out.order.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) out.order[i] = i;
  // Largest alignment first keeps every tensor aligned once the data buffer is; names break ties so the
  // output does not depend on the caller's order.
  std::stable_sort(out.order.begin(), out.order.end(), [&](size_t a, size_t b) {
    return st[a]->rank != st[b]->rank ? st[a]->rank > st[b]->rank : specs[a].name < specs[b].name;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    header["__metadata__"] = metadata;
  }
  uint64_t offset = 0;
  for (size_t i : out.order) {
    const uint64_t n = spec_bytes(specs[i]);
    nlohmann::ordered_json shape = nlohmann::ordered_json::array();
    for (int64_t d : specs[i].shape) {
      shape.push_back(static_cast<uint64_t>(d));
    }
    nlohmann::ordered_json info = nlohmann::ordered_json::object();
    info["dtype"] = st[i]->name;
    info["shape"] = std::move(shape);
    info["data_offsets"] = {offset, offset + n};
    header[specs[i].name] = std::move(info);
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  LMF_CHECK(text.size() <= kSafetensorsMaxHeaderBytes, "cannot write safetensors: the header would be ", text.size(),
            " bytes, over the ", kSafetensorsMaxHeaderBytes, "-byte limit readers enforce");
  out.prefix.resize(8);
  uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) {
    out.prefix[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  }
  out.prefix += text;
  return out;
}

std::vector<SafetensorsSpec> specs_of(const NamedTensors& tensors) {
  std::vector<SafetensorsSpec> specs;
  specs.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    LMF_CHECK(t.defined(), "cannot write safetensors: tensor ", quote(name), " is undefined");
    specs.push_back({name, t.dtype(), t.shape()});
  }
  return specs;
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  save_safetensors_streamed(path, specs_of(tensors), metadata,
                            [&](size_t i, const SafetensorsSpec&) { return tensors[i].second; });
}

void save_safetensors_streamed(const std::string& path, const std::vector<SafetensorsSpec>& specs,
                               const std::map<std::string, std::string>& metadata,
                               const std::function<Tensor(size_t, const SafetensorsSpec&)>& produce) {
  const Prepared p = prepare(specs, metadata);
  AtomicFileWriter w(path);  // removed again unless commit() is reached
  w.write(p.prefix);
  for (size_t i : p.order) {
    const SafetensorsSpec& s = specs[i];
    const Tensor t = produce(i, s).contiguous();
    LMF_CHECK(t.defined() && t.dtype() == s.dtype && t.shape() == s.shape, "cannot write safetensors: tensor ",
              quote(s.name), " was announced as ", dtype_name(s.dtype), " ", shape_str(s.shape), ", got ",
              t.defined() ? t.str() : std::string("an undefined tensor"));
    if (t.nbytes() > 0) w.write(t.raw_data(), t.nbytes());
  }
  w.commit();
}

std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  const Prepared p = prepare(specs_of(tensors), metadata);
  std::string out = p.prefix;
  for (size_t i : p.order) {
    const Tensor t = tensors[i].second.contiguous();
    if (t.nbytes() > 0) {
      out.append(static_cast<const char*>(t.raw_data()), t.nbytes());
    }
  }
  return out;
}

}  // namespace lmforge::io
