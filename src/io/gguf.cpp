#include "lmforge/io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <system_error>

#include "io/gguf_internal.h"

namespace lmforge::io {

static_assert(std::endian::native == std::endian::little, "GGUF is little-endian; a big-endian host would need swaps");

namespace {

using namespace gguf_detail;

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw Error(file + ": " + what);
}

struct TypeTraits {
  uint32_t id;
  const char* name;
  int64_t block;
  size_t size;
};
// Sizes from ggml's block structs (ggml-common.h); types whose layout we have not checked are left out and refused.
constexpr TypeTraits kTypes[] = {
    {0, "f32", 1, 4},       {1, "f16", 1, 2},       {2, "q4_0", 32, 18},    {3, "q4_1", 32, 20},
    {6, "q5_0", 32, 22},    {7, "q5_1", 32, 24},    {8, "q8_0", 32, 34},    {9, "q8_1", 32, 36},
    {10, "q2_K", 256, 84},  {11, "q3_K", 256, 110}, {12, "q4_K", 256, 144}, {13, "q5_K", 256, 176},
    {14, "q6_K", 256, 210}, {15, "q8_K", 256, 292}, {20, "iq4_nl", 32, 18}, {23, "iq4_xs", 256, 136},
    {24, "i8", 1, 1},       {25, "i16", 1, 2},      {26, "i32", 1, 4},      {27, "i64", 1, 8},
    {28, "f64", 1, 8},      {30, "bf16", 1, 2},
};

const TypeTraits* find_type(uint32_t id) {
  for (const TypeTraits& t : kTypes)
    if (t.id == id) return &t;
  return nullptr;
}

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::BOOL:
      return 1;
    case GgufType::U16:
    case GgufType::I16:
      return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32:
      return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64:
      return 8;
    case GgufType::STRING:  // at least its u64 length
      return 8;
    case GgufType::ARRAY:
      return 12;
  }
  return 0;
}

bool valid_type(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufType::F64);
}

std::string quote(const std::string& s) {
  return "\"" + s + "\"";
}

// Bounds-checked reads over the file's bytes; `what` names the field for the message.
class Cursor {
 public:
  Cursor(const std::string& file, const unsigned char* p, size_t n) : file_(file), p_(p), n_(n) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }

  void need(uint64_t bytes, const std::string& what) const {
    if (bytes > left())
      fail(file_, what + ": needs " + std::to_string(bytes) + " bytes at offset " + std::to_string(pos_) +
                      ", file has " + std::to_string(left()) + " left (truncated or corrupt)");
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(const std::string& what) {
    const auto len = read<uint64_t>(what + " (string length)");
    need(len, what + " (string of " + std::to_string(len) + " bytes)");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

 private:
  const std::string& file_;
  const unsigned char* p_;
  size_t n_;
  size_t pos_ = 0;
};

int64_t read_int(Cursor& c, GgufType t, const std::string& what, const std::string& file) {
  switch (t) {
    case GgufType::U8:
      return c.read<uint8_t>(what);
    case GgufType::I8:
      return c.read<int8_t>(what);
    case GgufType::U16:
      return c.read<uint16_t>(what);
    case GgufType::I16:
      return c.read<int16_t>(what);
    case GgufType::U32:
      return c.read<uint32_t>(what);
    case GgufType::I32:
      return c.read<int32_t>(what);
    case GgufType::U64:
      return static_cast<int64_t>(c.read<uint64_t>(what));
    case GgufType::I64:
      return c.read<int64_t>(what);
    case GgufType::BOOL: {
      const auto b = c.read<uint8_t>(what);
      if (b > 1) fail(file, what + ": bool value " + std::to_string(b) + " is neither 0 nor 1");
      return b;
    }
    default:
      return 0;
  }
}

double read_float(Cursor& c, GgufType t, const std::string& what) {
  if (t == GgufType::F32) return c.read<float>(what);
  return c.read<double>(what);
}

GgufValue read_value(Cursor& c, GgufType t, const std::string& what, const std::string& file) {
  GgufValue v;
  v.type = t;
  if (is_int_type(t)) {
    v.i = read_int(c, t, what, file);
  } else if (t == GgufType::F32 || t == GgufType::F64) {
    v.f = read_float(c, t, what);
  } else if (t == GgufType::STRING) {
    v.s = c.str(what);
  } else {  // ARRAY
    const auto et = c.read<uint32_t>(what + " (array element type)");
    if (!valid_type(et)) fail(file, what + ": unknown array element type " + std::to_string(et));
    v.elem = static_cast<GgufType>(et);
    if (v.elem == GgufType::ARRAY) fail(file, what + ": arrays of arrays are not supported");
    const auto n = c.read<uint64_t>(what + " (array length)");
    // Each element takes at least scalar_size bytes: a count the file cannot hold is refused before allocating.
    if (n > c.left() / scalar_size(v.elem))
      fail(file, what + ": array of " + std::to_string(n) + " " + std::string(gguf_type_name(v.elem)) +
                     " elements does not fit in the " + std::to_string(c.left()) + " bytes left");
    if (v.elem == GgufType::STRING) {
      v.strings.reserve(n);
      for (uint64_t k = 0; k < n; ++k) v.strings.push_back(c.str(what + "[" + std::to_string(k) + "]"));
    } else if (is_int_type(v.elem)) {
      v.ints.reserve(n);
      for (uint64_t k = 0; k < n; ++k)
        v.ints.push_back(read_int(c, v.elem, what + "[" + std::to_string(k) + "]", file));
    } else {
      v.floats.reserve(n);
      for (uint64_t k = 0; k < n; ++k) v.floats.push_back(read_float(c, v.elem, what));
    }
  }
  return v;
}

}  // namespace

std::string_view gguf_type_name(GgufType t) {
  static constexpr std::string_view names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                               "bool",  "string", "array",  "uint64", "int64",  "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(names) ? names[i] : std::string_view("unknown");
}

std::string ggml_type_name(uint32_t id) {
  const TypeTraits* t = find_type(id);
  return t ? t->name : "type " + std::to_string(id);
}

bool ggml_type_traits(uint32_t id, int64_t& block_size, size_t& type_size) {
  const TypeTraits* t = find_type(id);
  if (!t) return false;
  block_size = t->block;
  type_size = t->size;
  return true;
}

DType dtype_of_ggml(uint32_t id) {
  switch (id) {
    case 0:
      return DType::F32;
    case 1:
      return DType::F16;
    case 2:
      return DType::Q4_0;
    case 8:
      return DType::Q8_0;
    case 12:
      return DType::Q4_K;
    case 13:
      return DType::Q5_K;
    case 14:
      return DType::Q6_K;
    case 30:
      return DType::BF16;
    default:
      throw Error("GGUF tensor type " + ggml_type_name(id) +
                  " is not supported (f32, f16, bf16, q8_0, q4_0, q4_K, q5_K, q6_K are)");
  }
}

GgmlType ggml_of_dtype(DType t) {
  switch (t) {
    case DType::F32:
      return GgmlType::F32;
    case DType::F16:
      return GgmlType::F16;
    case DType::BF16:
      return GgmlType::BF16;
    case DType::Q8_0:
      return GgmlType::Q8_0;
    case DType::Q4_0:
      return GgmlType::Q4_0;
    case DType::Q4_K:
      return GgmlType::Q4_K;
    case DType::Q5_K:
      return GgmlType::Q5_K;
    case DType::Q6_K:
      return GgmlType::Q6_K;
    default:
      throw Error("dtype " + std::string(dtype_name(t)) +
                  " has no GGUF tensor type here (f32, f16, bf16, q8_0, q4_0, q4_K, q5_K, q6_K)");
  }
}

// ---- values ----

GgufValue GgufValue::u32(uint32_t v) {
  GgufValue x;
  x.type = GgufType::U32;
  x.i = v;
  return x;
}
GgufValue GgufValue::i32(int32_t v) {
  GgufValue x;
  x.type = GgufType::I32;
  x.i = v;
  return x;
}
GgufValue GgufValue::u64(uint64_t v) {
  GgufValue x;
  x.type = GgufType::U64;
  x.i = static_cast<int64_t>(v);
  return x;
}
GgufValue GgufValue::f32(float v) {
  GgufValue x;
  x.type = GgufType::F32;
  x.f = v;
  return x;
}
GgufValue GgufValue::boolean(bool v) {
  GgufValue x;
  x.type = GgufType::BOOL;
  x.i = v ? 1 : 0;
  return x;
}
GgufValue GgufValue::string(std::string v) {
  GgufValue x;
  x.type = GgufType::STRING;
  x.s = std::move(v);
  return x;
}
GgufValue GgufValue::string_array(std::vector<std::string> v) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.elem = GgufType::STRING;
  x.strings = std::move(v);
  return x;
}
GgufValue GgufValue::int_array(GgufType elem, std::vector<int64_t> v) {
  LMF_CHECK(is_int_type(elem), "GGUF int_array: element type ", gguf_type_name(elem), " is not an integer type");
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.elem = elem;
  x.ints = std::move(v);
  return x;
}
GgufValue GgufValue::float_array(GgufType elem, std::vector<double> v) {
  LMF_CHECK(elem == GgufType::F32 || elem == GgufType::F64, "GGUF float_array: element type ", gguf_type_name(elem),
            " is not a float type");
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.elem = elem;
  x.floats = std::move(v);
  return x;
}
bool GgufValue::is_integer() const {
  return is_int_type(type);
}
size_t GgufValue::array_size() const {
  if (type != GgufType::ARRAY) return 0;
  if (elem == GgufType::STRING) return strings.size();
  return is_int_type(elem) ? ints.size() : floats.size();
}

// ---- reading ----

GgufFile GgufFile::parse(std::string label, std::shared_ptr<void> keeper, const unsigned char* bytes, size_t size) {
  GgufFile f;
  f.path_ = std::move(label);
  f.keeper_ = std::move(keeper);
  f.bytes_ = bytes;
  f.size_ = size;
  const std::string& file = f.path_;
  Cursor c(file, bytes, size);

  if (size < 4 || c.read<uint32_t>("magic") != kMagic) fail(file, "not a GGUF file (magic is not \"GGUF\")");
  f.version_ = c.read<uint32_t>("header.version");
  // Version 1 had 32-bit counts; 2 and 3 share this layout (3 added big-endian files, which announce themselves
  // with a byte-swapped version and are refused here).
  if (f.version_ != 2 && f.version_ != 3)
    fail(file, "header.version " + std::to_string(f.version_) + " is not supported (2 and 3 are)");
  const auto n_tensors = c.read<uint64_t>("header.tensor_count");
  const auto n_kv = c.read<uint64_t>("header.metadata_kv_count");
  // Minimal sizes: a key/value is a key length, a type and a 1-byte value; a tensor info a name length, n_dims, a
  // type and an offset.
  if (n_kv > c.left() / 13)
    fail(file, "header.metadata_kv_count " + std::to_string(n_kv) + " cannot fit in the file's " +
                   std::to_string(size) + " bytes");
  if (n_tensors > c.left() / 24)
    fail(file, "header.tensor_count " + std::to_string(n_tensors) + " cannot fit in the file's " +
                   std::to_string(size) + " bytes");

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.str("metadata[" + std::to_string(k) + "].key");
    if (key.empty()) fail(file, "metadata[" + std::to_string(k) + "]: empty key");
    const auto t = c.read<uint32_t>("metadata " + quote(key) + " type");
    if (!valid_type(t)) fail(file, "metadata " + quote(key) + ": unknown value type " + std::to_string(t));
    GgufValue v = read_value(c, static_cast<GgufType>(t), "metadata " + quote(key), file);
    if (!f.kv_index_.emplace(key, f.kv_.size()).second) fail(file, "metadata " + quote(key) + " appears twice");
    f.kv_.emplace_back(std::move(key), std::move(v));
  }
  if (const GgufValue* a = f.find("general.alignment")) {
    if (a->type != GgufType::U32)
      fail(file, "metadata \"general.alignment\" has type " + std::string(gguf_type_name(a->type)) + ", not uint32");
    if (a->i == 0 || (a->i & (a->i - 1)) != 0)
      fail(file, "metadata \"general.alignment\" = " + std::to_string(a->i) + " is not a power of two");
    f.alignment_ = static_cast<uint64_t>(a->i);
  }

  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo ti;
    ti.name = c.str("tensor_info[" + std::to_string(k) + "].name");
    const std::string what = "tensor " + quote(ti.name);
    if (ti.name.empty()) fail(file, "tensor_info[" + std::to_string(k) + "]: empty name");
    if (ti.name.size() > kMaxName)
      fail(file,
           what + ": name is " + std::to_string(ti.name.size()) + " bytes, ggml allows " + std::to_string(kMaxName));
    const auto n_dims = c.read<uint32_t>(what + " n_dims");
    if (n_dims == 0 || n_dims > kMaxDims)
      fail(file, what + ": n_dims " + std::to_string(n_dims) + " outside [1, " + std::to_string(kMaxDims) + "]");
    std::vector<uint64_t> ne(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) ne[d] = c.read<uint64_t>(what + " ne[" + std::to_string(d) + "]");
    ti.type = c.read<uint32_t>(what + " type");
    ti.offset = c.read<uint64_t>(what + " offset");
    const TypeTraits* tt = find_type(ti.type);
    if (!tt) fail(file, what + ": unknown or unsupported ggml type id " + std::to_string(ti.type));
    // Element count and byte size, refusing overflow: every dimension and product must stay below 2^62.
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      if (ne[d] >= (uint64_t{1} << 62) || (ne[d] != 0 && numel > ((uint64_t{1} << 62) / ne[d])))
        fail(file, what + ": dimensions overflow (ne[" + std::to_string(d) + "] = " + std::to_string(ne[d]) + ")");
      numel *= ne[d];
    }
    if (ne[0] % static_cast<uint64_t>(tt->block) != 0)
      fail(file, what + ": ne[0] = " + std::to_string(ne[0]) + " is not a multiple of " + tt->name + "'s block size " +
                     std::to_string(tt->block));
    const uint64_t blocks = numel / static_cast<uint64_t>(tt->block);
    if (blocks > std::numeric_limits<uint64_t>::max() / 512) fail(file, what + ": byte size overflows");
    ti.nbytes = blocks * tt->size;
    if (ti.offset % f.alignment_ != 0)
      fail(file, what + ": offset " + std::to_string(ti.offset) + " is not a multiple of the alignment " +
                     std::to_string(f.alignment_));
    for (uint32_t d = n_dims; d-- > 0;) ti.shape.push_back(static_cast<int64_t>(ne[d]));
    if (!f.index_.emplace(ti.name, f.tensors_.size()).second) fail(file, what + " appears twice");
    f.tensors_.push_back(std::move(ti));
  }

  f.data_offset_ = align_up(c.pos(), f.alignment_);
  if (f.data_offset_ > size && !f.tensors_.empty())
    fail(file, "data section would start at " + std::to_string(f.data_offset_) + ", past the end of the file (" +
                   std::to_string(size) + " bytes)");
  const uint64_t data_bytes = size > f.data_offset_ ? size - f.data_offset_ : 0;
  std::vector<size_t> order(f.tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (const GgufTensorInfo& ti : f.tensors_) {
    if (ti.offset > data_bytes || ti.nbytes > data_bytes - ti.offset)
      fail(file, "tensor " + quote(ti.name) + ": bytes [" + std::to_string(ti.offset) + ", +" +
                     std::to_string(ti.nbytes) + ") run past the end of the data section (" +
                     std::to_string(data_bytes) + " bytes)");
  }
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return f.tensors_[a].offset < f.tensors_[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensorInfo& prev = f.tensors_[order[k - 1]];
    const GgufTensorInfo& cur = f.tensors_[order[k]];
    if (prev.nbytes > 0 && cur.offset < prev.offset + prev.nbytes)
      fail(file, "tensor " + quote(cur.name) + " (offset " + std::to_string(cur.offset) + ") overlaps tensor " +
                     quote(prev.name));
  }
  return f;
}

GgufFile GgufFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + std::generic_category().message(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return parse(path, nullptr, nullptr, 0);
  }
  // Private and writable like safetensors' mapping: a write through a tensor view copies the page instead of
  // faulting, and the file never changes.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) fail(path, "cannot memory-map: " + std::generic_category().message(err));
  std::shared_ptr<void> mapping(p, [size](void* q) { ::munmap(q, size); });
  GgufFile f = parse(path, std::move(mapping), static_cast<const unsigned char*>(p), size);
  f.mapped_ = true;
  return f;
}

GgufFile GgufFile::from_bytes(std::string_view bytes, const std::string& label) {
  auto storage = Storage::allocate(std::max<size_t>(bytes.size(), 1));
  if (!bytes.empty()) std::memcpy(storage->data(), bytes.data(), bytes.size());
  auto* p = static_cast<const unsigned char*>(storage->data());
  return parse(label, std::move(storage), p, bytes.size());
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufValue& GgufFile::at(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(path_, "metadata " + quote(key) + " is missing");
  return *v;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = at(key);
  if (v.type != GgufType::STRING)
    fail(path_, "metadata " + quote(key) + " has type " + std::string(gguf_type_name(v.type)) + ", not string");
  return v.s;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = at(key);
  if (!v.is_integer() || v.type == GgufType::BOOL)
    fail(path_, "metadata " + quote(key) + " has type " + std::string(gguf_type_name(v.type)) + ", not an integer");
  if (v.type == GgufType::U64 && v.i < 0) fail(path_, "metadata " + quote(key) + " is too large");
  return v.i;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = at(key);
  if (!v.is_float())
    fail(path_, "metadata " + quote(key) + " has type " + std::string(gguf_type_name(v.type)) + ", not a float");
  return v.f;
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = at(key);
  if (v.type != GgufType::BOOL)
    fail(path_, "metadata " + quote(key) + " has type " + std::string(gguf_type_name(v.type)) + ", not bool");
  return v.i != 0;
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path_, "no tensor " + quote(name));
  return tensors_[it->second];
}

const unsigned char* GgufFile::tensor_data(const std::string& name) const {
  return bytes_ + data_offset_ + tensor(name).offset;
}

Tensor GgufFile::get(const std::string& name) const {
  const GgufTensorInfo& ti = tensor(name);
  DType dt;
  try {
    dt = dtype_of_ggml(ti.type);
  } catch (const Error& e) {
    fail(path_, "tensor " + quote(name) + ": " + e.what());
  }
  const unsigned char* p = tensor_data(name);
  const size_t elem = dt == DType::F32 ? 4 : 2;  // blocks start with an f16 scale
  if (ti.nbytes > 0 && reinterpret_cast<uintptr_t>(p) % elem == 0) {
    return Tensor::from_storage(Storage::borrow(const_cast<unsigned char*>(p), ti.nbytes, keeper_), dt, ti.shape);
  }
  Tensor t = Tensor::empty(ti.shape, dt);
  if (ti.nbytes > 0) std::memcpy(t.raw_data(), p, ti.nbytes);
  return t;
}

namespace {
int64_t tensor_numel(const GgufTensorInfo& ti) {
  int64_t n = 1;
  for (int64_t d : ti.shape) n *= d;  // bounded by the parser (< 2^62)
  return n;
}
}  // namespace

Tensor GgufFile::get_f32(const std::string& name) const {
  const GgufTensorInfo& ti = tensor(name);
  const int64_t cols = ti.shape.empty() ? 1 : ti.shape.back();
  const int64_t rows = cols == 0 ? 0 : tensor_numel(ti) / cols;
  return get_f32_rows(name, 0, rows).reshape(ti.shape);
}

void GgufFile::drop_pages(const std::string& name, int64_t row0, int64_t rows) const {
  if (!mapped_) return;
  const GgufTensorInfo& ti = tensor(name);
  const int64_t cols = ti.shape.empty() ? 1 : ti.shape.back();
  const int64_t all = cols == 0 ? 0 : tensor_numel(ti) / cols;
  if (rows < 0) rows = all - row0;
  if (all == 0 || row0 < 0 || rows <= 0 || row0 + rows > all) return;
  const uint64_t row_bytes = ti.nbytes / static_cast<uint64_t>(all);
  const unsigned char* first = tensor_data(name) + static_cast<uint64_t>(row0) * row_bytes;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = (reinterpret_cast<uintptr_t>(first) + page - 1) / page * page;
  const uintptr_t e = (reinterpret_cast<uintptr_t>(first) + static_cast<uint64_t>(rows) * row_bytes) / page * page;
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

Tensor GgufFile::get_f32_rows(const std::string& name, int64_t row0, int64_t rows) const {
  const GgufTensorInfo& ti = tensor(name);
  if (!ggml_can_dequantize(ti.type))
    fail(path_, "tensor " + quote(name) + ": type " + ggml_type_name(ti.type) +
                    " is not supported (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, "
                    "q8_K, iq4_nl and iq4_xs are)");
  const int64_t cols = ti.shape.empty() ? 1 : ti.shape.back();
  const int64_t all = cols == 0 ? 0 : tensor_numel(ti) / cols;
  if (row0 < 0 || rows < 0 || row0 > all || rows > all - row0)
    fail(path_, "tensor " + quote(name) + ": rows [" + std::to_string(row0) + ", +" + std::to_string(rows) +
                    ") outside its " + std::to_string(all) + " rows");
  Tensor t = Tensor::empty({rows, cols}, DType::F32);
  const uint64_t row_bytes = all == 0 ? 0 : ti.nbytes / static_cast<uint64_t>(all);
  ggml_dequantize(ti.type, tensor_data(name) + static_cast<uint64_t>(row0) * row_bytes, t.data<float>(), t.numel());
  return t;
}

}  // namespace lmforge::io
