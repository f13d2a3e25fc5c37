// safetensors reading and writing (https://huggingface.co/docs/safetensors).
//
// Layout: u64 little-endian header length N, N bytes of JSON header, then the data buffer. The header maps each
// tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data buffer) and may
// hold "__metadata__": {string: string}. Tensors are contiguous, little-endian, row-major.
//
// The reader trusts nothing in the file: every size, offset, dtype and shape is checked before use, and any
// problem is an lmforge::Error naming the file and the tensor or field at fault.
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

// Headers above this size are refused, as the reference implementation does.
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// One tensor as the header describes it. `dtype` keeps the file's spelling ("BF16", "I64", ...) so tensors of
// dtypes lmforge cannot hold can still be listed and reported.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;
  Shape shape;
  uint64_t begin = 0;  // byte offsets into the data buffer
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Memory-maps `path` and validates the whole header. The mapping is private copy-on-write: tensors from
  // get() may be modified in place (an optimizer step on loaded weights) without touching the file. Replace
  // the file only atomically (save_safetensors does): truncating a mapped file in place crashes its readers.
  static SafetensorsFile open(const std::string& path);
  // Parses a copy of `bytes`; `label` stands in for the path in error messages. For fuzzing and tests.
  static SafetensorsFile from_bytes(std::string_view bytes, const std::string& label = "<memory>");

  const std::string& path() const { return path_; }
  // Tensor names in data-buffer order.
  std::vector<std::string> names() const;
  size_t size() const { return entries_.size(); }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // Throws lmforge::Error when there is no such tensor.
  const SafetensorsEntry& entry(const std::string& name) const;

  // The tensor, as a view of the mapping when its data is aligned to its element size (no copy; the mapping
  // lives as long as any such tensor), else as a copy. Views of the same name share memory. Throws for
  // dtypes lmforge has no DType for (I64, U8, BOOL, F8_*, ...).
  Tensor get(const std::string& name) const;

  // Returns the pages holding this tensor's bytes to the kernel (madvise DONTNEED), so a loader that copies each
  // tensor out does not hold the file mapping and the copy at once. Only when no view of the tensor from get() is
  // in use: the next read of those pages re-reads the file, and changes made through a view are lost. Pages shared
  // with a neighbouring tensor are kept. Does nothing for from_bytes().
  void drop_pages(const std::string& name) const;

  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  static SafetensorsFile parse(std::string label, std::shared_ptr<void> keeper, const unsigned char* bytes,
                               size_t size);

  std::string path_;
  std::shared_ptr<void> keeper_;   // owns the bytes `data_` points into
  bool mapped_ = false;            // data_ is a file mapping (open), not a copy (from_bytes)
  unsigned char* data_ = nullptr;  // start of the data buffer
  uint64_t data_bytes_ = 0;
  std::vector<SafetensorsEntry> entries_;  // data-buffer order
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes tensors of dtype f32, f64, f16, bf16, i32, u8 or i8 (non-contiguous ones are made contiguous), atomically.
// Layout matches the reference implementation byte for byte: tensors sorted by dtype alignment (largest
// first) then name, compact JSON with "__metadata__" first, header padded with spaces to a multiple of 8 so
// every tensor is aligned to its element size. Metadata keys are written in sorted order.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// One tensor of a file written by save_safetensors_streamed: what the header says before its bytes exist.
struct SafetensorsSpec {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
};
// The same file save_safetensors writes for tensors of these names, dtypes and shapes (byte for byte), with each
// tensor asked for only when its bytes are due: `produce(i, specs[i])` is called once per tensor, in the file's data
// order, and its result written and let go, so a converter holds one tensor at a time, not the whole model. A
// result of another dtype or shape than announced is an Error (nothing written: the file is atomic).
void save_safetensors_streamed(const std::string& path, const std::vector<SafetensorsSpec>& specs,
                               const std::map<std::string, std::string>& metadata,
                               const std::function<Tensor(size_t, const SafetensorsSpec&)>& produce);
// The same bytes, in memory.
std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});

// Every tensor of the file (views of one shared mapping where aligned).
std::map<std::string, Tensor> load_safetensors(const std::string& path);

// The weight files of a Hugging Face model directory: model.safetensors, or the shards a
// model.safetensors.index.json names (each once, sorted; names with '/' or ".." are refused). `source` receives
// the file to name in errors (the single file or the index). Errors name the directory, index and entry.
std::vector<std::string> model_weight_files(const std::string& dir, std::string& source);

}  // namespace lmforge::io
