// GGUF v3 reading and writing (ggml's docs/gguf.md), the file format of llama.cpp.
//
// Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; the metadata key/value pairs
// (key: u64 length + UTF-8 bytes; u32 value type; value); the tensor infos (name, u32 n_dims, u64 ne[n_dims] with
// ne[0] the fastest-varying dimension, u32 ggml type, u64 offset into the data section); zero padding up to
// `general.alignment` (default 32); the data section, each tensor at an offset that is a multiple of the alignment.
//
// The reader trusts nothing: every count, length, type id, dimension, offset and size is checked against the bytes
// actually present before it is used, and any problem is an lmforge::Error naming the file and the key or tensor.
// Shapes in this API are in lmforge/PyTorch order (outermost first), i.e. GGUF's ne[] reversed.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmforge::io {

// Metadata value types (gguf.md: gguf_metadata_value_type).
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
std::string_view gguf_type_name(GgufType t);

// Tensor types (ggml_type ids). Only the ones lmforge can convert are named here; the reader also knows the sizes
// of the other common ones (q4_1, q5_*, q8_1, k-quants, iq4_*) so such files list, and refuses the rest by id.
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14, BF16 = 30 };
// "f32", "q4_K", ... or "type 17" for an id the reader does not know.
std::string ggml_type_name(uint32_t id);
// Values per block and bytes per block; false for an id the reader does not know.
bool ggml_type_traits(uint32_t id, int64_t& block_size, size_t& type_size);
// The lmforge dtype holding the same bytes (f32, f16, bf16, q8_0, q4_0); throws for others.
DType dtype_of_ggml(uint32_t id);
GgmlType ggml_of_dtype(DType t);
// Whether ggml_dequantize reads this type: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, the k-quants q2_K ..
// q6_K and q8_K, iq4_nl and iq4_xs -- what llama.cpp's quantizer writes for its q*_0/1, Q*_K_{S,M,L} and IQ4 file
// types (the iq1/iq2/iq3 grids and the ternary types are not read).
bool ggml_can_dequantize(uint32_t id);
// `n` values (a whole number of blocks) of type `id` at `src` to f32, bit for bit as ggml's dequantize_row_*
// (ggml-quants.c) computes them. Throws lmforge::Error for a type it cannot read or a partial block.
void ggml_dequantize(uint32_t id, const unsigned char* src, float* dst, int64_t n);

// One metadata value. Scalars of every integer type (and bool) are held in `i` (u64 as its bit pattern), floats in
// `f`; arrays of them in `ints` / `floats`, arrays of strings in `strings`. Arrays of arrays are refused.
struct GgufValue {
  GgufType type = GgufType::U32;
  GgufType elem = GgufType::U8;  // element type when type == ARRAY
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  static GgufValue string_array(std::vector<std::string> v);
  static GgufValue int_array(GgufType elem, std::vector<int64_t> v);   // elem: an integer type or BOOL
  static GgufValue float_array(GgufType elem, std::vector<double> v);  // elem: F32 or F64

  bool is_integer() const;  // any integer type or BOOL
  bool is_float() const { return type == GgufType::F32 || type == GgufType::F64; }
  size_t array_size() const;
};

struct GgufTensorInfo {
  std::string name;
  uint32_t type = 0;    // ggml type id
  Shape shape;          // outermost first (ne reversed)
  uint64_t offset = 0;  // into the data section
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  // Memory-maps `path` (read-only) and validates everything but the tensor bytes themselves.
  static GgufFile open(const std::string& path);
  // Parses a copy of `bytes`; `label` stands in for the path in messages. For fuzzing and tests.
  static GgufFile from_bytes(std::string_view bytes, const std::string& label = "<memory>");

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  // Typed getters: throw an Error naming the file and key when it is absent or of another type. Integer getters
  // accept any integer type whose value fits; float getters accept F32/F64.
  const GgufValue& at(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;

  // Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const GgufTensorInfo& tensor(const std::string& name) const;
  // The raw bytes of a tensor (nbytes long).
  const unsigned char* tensor_data(const std::string& name) const;
  // The tensor as an lmforge Tensor (f32, f16, bf16, q8_0 or q4_0; a view of the mapping when aligned, else a copy).
  Tensor get(const std::string& name) const;
  // The tensor as a new f32 Tensor, dequantized from any type ggml_can_dequantize reads (llama.cpp's k-quant and
  // IQ4 files included); an Error naming the file and tensor for the others.
  Tensor get_f32(const std::string& name) const;
  // Rows [row0, row0 + rows) of the tensor seen as [numel / cols, cols] (cols its innermost size), as a new f32
  // [rows, cols] Tensor: one expert of a stacked ffn_*_exps tensor without dequantizing the others.
  Tensor get_f32_rows(const std::string& name, int64_t row0, int64_t rows) const;
  // Returns the mapped pages wholly inside rows [row0, row0 + rows) of the tensor (rows < 0: to its end) to the
  // kernel (madvise DONTNEED), so a converter that reads each tensor once does not keep the whole file resident.
  // Only when no view of those bytes from get() is in use: the next read re-reads the file, and writes made through
  // a view are lost. Does nothing for from_bytes().
  void drop_pages(const std::string& name, int64_t row0 = 0, int64_t rows = -1) const;

 private:
  GgufFile() = default;
  static GgufFile parse(std::string label, std::shared_ptr<void> keeper, const unsigned char* bytes, size_t size);

  std::string path_;
  std::shared_ptr<void> keeper_;
  const unsigned char* bytes_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;  // bytes_ is a file mapping (open), not a copy (from_bytes)
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

// Collects metadata and tensors, then writes a GGUF v3 file atomically. Keys and tensor names must be unique and
// tensor names at most 63 bytes (ggml's GGML_MAX_NAME); tensors have 1 to 4 dimensions, the last one a multiple
// of the type's block size. Tensors are written in the order added, each aligned to `general.alignment`.
class GgufWriter {
 public:
  void set(const std::string& key, GgufValue value);
  // `t` must be contiguous, of dtype f32, f16, bf16, q8_0 or q4_0; it is kept (not copied) until write.
  void add_tensor(const std::string& name, const Tensor& t);
  // A tensor whose bytes are made only when write() reaches them: `produce()` is called once, its result (of exactly
  // this shape and dtype, else an Error and no file) written and let go, then `done()` if given. A converter adds
  // every tensor this way and holds one converted tensor at a time, not the whole output.
  void add_tensor(const std::string& name, const Shape& shape, DType dtype, std::function<Tensor()> produce,
                  std::function<void()> done = {});
  bool has_key(const std::string& key) const;
  // The metadata set so far, in order (a writer can be filled from another's keys).
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  size_t tensor_count() const { return tensors_.size(); }
  // `progress(written, total)`, if given, after each tensor's bytes.
  void write(const std::string& path, const std::function<void(size_t, size_t)>& progress = {}) const;
  std::string serialize() const;  // the same bytes, in memory

 private:
  struct Entry {
    std::string name;
    Shape shape;
    DType dtype;
    std::function<Tensor()> produce;  // made at write time (a tensor added as such: returns it)
    std::function<void()> done;
  };
  template <typename Sink>
  void emit(Sink& sink, const std::function<void(size_t, size_t)>& progress) const;
  uint64_t alignment() const;
  void check_new_tensor(const std::string& name, const Shape& shape, DType dtype) const;

  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Entry> tensors_;
};

}  // namespace lmforge::io
