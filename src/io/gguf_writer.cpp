// GGUF writing: metadata and tensors laid out as gguf.md says, written atomically.
#include <algorithm>
#include <string>

#include "io/gguf_internal.h"
#include "lmforge/core/error.h"
#include "lmforge/io/atomic_file.h"
#include "lmforge/io/gguf.h"

namespace lmforge::io {

using namespace gguf_detail;

namespace {

struct StringSink {
  std::string out;
  void write(const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }
  size_t size() const { return out.size(); }
};
struct FileSink {
  AtomicFileWriter w;
  void write(const void* p, size_t n) { w.write(p, n); }
  size_t size() const { return w.bytes_written(); }
};

template <typename Sink, typename T>
void put(Sink& s, T v) {
  s.write(&v, sizeof(T));
}
template <typename Sink>
void put_str(Sink& s, const std::string& v) {
  put<Sink, uint64_t>(s, v.size());
  s.write(v.data(), v.size());
}
template <typename Sink>
void put_int(Sink& s, GgufType t, int64_t v) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::BOOL:
      put<Sink, uint8_t>(s, static_cast<uint8_t>(v));
      break;
    case GgufType::U16:
    case GgufType::I16:
      put<Sink, uint16_t>(s, static_cast<uint16_t>(v));
      break;
    case GgufType::U32:
    case GgufType::I32:
      put<Sink, uint32_t>(s, static_cast<uint32_t>(v));
      break;
    default:
      put<Sink, uint64_t>(s, static_cast<uint64_t>(v));
  }
}
template <typename Sink>
void put_value(Sink& s, const GgufValue& v) {
  if (is_int_type(v.type)) {
    put_int(s, v.type, v.i);
  } else if (v.type == GgufType::F32) {
    put<Sink, float>(s, static_cast<float>(v.f));
  } else if (v.type == GgufType::F64) {
    put<Sink, double>(s, v.f);
  } else if (v.type == GgufType::STRING) {
    put_str(s, v.s);
  } else {
    put<Sink, uint32_t>(s, static_cast<uint32_t>(v.elem));
    put<Sink, uint64_t>(s, v.array_size());
    if (v.elem == GgufType::STRING) {
      for (const std::string& x : v.strings) put_str(s, x);
    } else if (is_int_type(v.elem)) {
      for (int64_t x : v.ints) put_int(s, v.elem, x);
    } else if (v.elem == GgufType::F32) {
      for (double x : v.floats) put<Sink, float>(s, static_cast<float>(x));
    } else {
      for (double x : v.floats) put<Sink, double>(s, x);
    }
  }
}
template <typename Sink>
void pad_to(Sink& s, uint64_t alignment) {
  static const char zeros[256] = {};
  uint64_t n = align_up(s.size(), alignment) - s.size();
  while (n > 0) {
    const size_t k = std::min<uint64_t>(n, sizeof(zeros));
    s.write(zeros, k);
    n -= k;
  }
}

}  // namespace

void GgufWriter::set(const std::string& key, GgufValue value) {
  LMF_CHECK(!key.empty(), "GGUF metadata key is empty");
  LMF_CHECK(!has_key(key), "GGUF metadata key \"", key, "\" set twice");
  LMF_CHECK(value.type != GgufType::ARRAY || value.elem != GgufType::ARRAY, "GGUF metadata \"", key,
            "\": arrays of arrays are not supported");
  if (key == "general.alignment")
    LMF_CHECK(value.type == GgufType::U32 && value.i > 0 && (value.i & (value.i - 1)) == 0,
              "GGUF general.alignment must be a uint32 power of two");
  kv_.emplace_back(key, std::move(value));
}

bool GgufWriter::has_key(const std::string& key) const {
  return std::any_of(kv_.begin(), kv_.end(), [&](const auto& p) { return p.first == key; });
}

void GgufWriter::check_new_tensor(const std::string& name, const Shape& shape, DType dtype) const {
  LMF_CHECK(!name.empty() && name.size() <= kMaxName, "GGUF tensor \"", name, "\" must be 1 to ", kMaxName, " bytes");
  LMF_CHECK(!shape.empty() && shape.size() <= kMaxDims, "GGUF tensor \"", name, "\" has ", shape.size(),
            " dimensions; 1 to 4 are allowed");
  for (int64_t d : shape) LMF_CHECK(d >= 0, "GGUF tensor \"", name, "\" has shape ", shape_str(shape));
  (void)ggml_of_dtype(dtype);  // throws for a dtype GGUF cannot hold
  LMF_CHECK(shape.back() % block_size(dtype) == 0, "GGUF tensor \"", name, "\": ", dtype_name(dtype), " rows of ",
            shape.back(), " values are not whole blocks of ", block_size(dtype));
  for (const Entry& e : tensors_) LMF_CHECK(e.name != name, "GGUF tensor \"", name, "\" added twice");
}

void GgufWriter::add_tensor(const std::string& name, const Tensor& t) {
  LMF_CHECK(t.defined() && t.is_contiguous(), "GGUF tensor \"", name, "\" must be contiguous");
  check_new_tensor(name, t.shape(), t.dtype());
  tensors_.push_back({name, t.shape(), t.dtype(), [t] { return t; }, {}});
}

void GgufWriter::add_tensor(const std::string& name, const Shape& shape, DType dtype, std::function<Tensor()> produce,
                            std::function<void()> done) {
  LMF_CHECK(produce != nullptr, "GGUF tensor \"", name, "\": no producer");
  check_new_tensor(name, shape, dtype);
  tensors_.push_back({name, shape, dtype, std::move(produce), std::move(done)});
}

uint64_t GgufWriter::alignment() const {
  for (const auto& [k, v] : kv_)
    if (k == "general.alignment") return static_cast<uint64_t>(v.i);
  return kDefaultAlignment;
}

template <typename Sink>
void GgufWriter::emit(Sink& s, const std::function<void(size_t, size_t)>& progress) const {
  const uint64_t align = alignment();
  put<Sink, uint32_t>(s, kMagic);
  put<Sink, uint32_t>(s, 3);
  put<Sink, uint64_t>(s, tensors_.size());
  put<Sink, uint64_t>(s, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_str(s, k);
    put<Sink, uint32_t>(s, static_cast<uint32_t>(v.type));
    put_value(s, v);
  }
  const auto nbytes = [](const Entry& e) {
    return static_cast<uint64_t>(shape_numel(e.shape) / block_size(e.dtype)) * type_size(e.dtype);
  };
  uint64_t offset = 0;
  for (const Entry& e : tensors_) {
    put_str(s, e.name);
    put<Sink, uint32_t>(s, static_cast<uint32_t>(e.shape.size()));
    for (size_t d = e.shape.size(); d-- > 0;) put<Sink, uint64_t>(s, static_cast<uint64_t>(e.shape[d]));
    put<Sink, uint32_t>(s, static_cast<uint32_t>(ggml_of_dtype(e.dtype)));
    put<Sink, uint64_t>(s, offset);
    offset = align_up(offset + nbytes(e), align);
  }
  pad_to(s, align);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Entry& e = tensors_[i];
    Tensor t = e.produce();
    LMF_CHECK(t.defined() && t.dtype() == e.dtype && t.shape() == e.shape, "GGUF tensor \"", e.name, "\": made ",
              t.defined() ? t.str() : std::string("nothing"), ", announced ", dtype_name(e.dtype), shape_str(e.shape));
    if (!t.is_contiguous()) t = t.contiguous();
    s.write(t.raw_data(), nbytes(e));
    t = Tensor();
    pad_to(s, align);
    if (e.done) e.done();
    if (progress) progress(i + 1, tensors_.size());
  }
}

std::string GgufWriter::serialize() const {
  StringSink s;
  emit(s, {});
  return std::move(s.out);
}

void GgufWriter::write(const std::string& path, const std::function<void(size_t, size_t)>& progress) const {
  FileSink s{AtomicFileWriter(path)};
  emit(s, progress);
  s.w.commit();
}

}  // namespace lmforge::io
