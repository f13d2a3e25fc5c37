// Tensor: a typed, strided view over reference-counted storage.
//
// Strides and offsets count elements. Quantized tensors (q8_0, q4_0) are stored as GGUF blocks along the last
// dimension; they support reshapes and slices of whole rows only, and convert to float with to().
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lmforge/core/dtype.h"
#include "lmforge/core/error.h"

namespace lmforge {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// A byte buffer, 64-byte aligned, owned (allocated here) or borrowed (e.g. a memory-mapped file region kept
// alive by `keeper`).
class Storage {
 public:
  static std::shared_ptr<Storage> allocate(size_t bytes);
  static std::shared_ptr<Storage> borrow(void* data, size_t bytes, std::shared_ptr<void> keeper);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

  // Large freed blocks are cached for reuse (see tensor.cpp); this returns them to the system.
  static void release_cached_blocks();
  static size_t cached_bytes();
  // Bytes of tensor storage allocated and not yet freed (cached blocks not counted), and its high-water mark
  // since the last reset: the memory figure the model's own tensors account for, free of allocator effects.
  static size_t live_bytes();
  static size_t peak_live_bytes();
  static void reset_peak_live_bytes();

 private:
  Storage() = default;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  size_t capacity_ = 0;  // bytes actually allocated (>= bytes_; a cached block may be slightly larger)
  bool owned_ = false;
  bool cacheable_ = true;  // false: a huge-page block (HugePageScope), freed to the system
  std::shared_ptr<void> keeper_;
};

// While one is alive on a thread, storage of 2 MiB or more allocated there is 2 MiB-aligned and advised
// MADV_HUGEPAGE: for model weights, which decode streams through once a token, transparent huge pages save a TLB
// miss every 4 KiB (decode 2-5% faster on a Zen 3 host). The kernel may still back them with small pages; nothing
// but speed depends on it. LMFORGE_NO_HUGE_PAGES=1 turns the hint off (for A/B measurements).
class HugePageScope {
 public:
  HugePageScope();
  ~HugePageScope();
  HugePageScope(const HugePageScope&) = delete;
  HugePageScope& operator=(const HugePageScope&) = delete;
  static bool active();
};

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::F32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::F64;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::I32;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::U8;
};
template <>
struct DTypeOf<int8_t> {
  static constexpr DType value = DType::I8;
};

class Tensor {
 public:
  Tensor() = default;

  // Factories. Uninitialised, zeros, constant.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape, DType dtype = DType::F32);
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape);
  static Tensor from_ints(const std::vector<int32_t>& v, const Shape& shape);
  // Wraps existing bytes (no copy); `storage` must hold at least nbytes for shape/dtype.
  static Tensor from_storage(std::shared_ptr<Storage> storage, DType dtype, const Shape& shape, int64_t offset = 0);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const;  // bytes of the elements this view covers when contiguous
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Pointer to the first element; checks that T matches the dtype.
  template <typename T>
  T* data() const {
    LMF_CHECK(DTypeOf<T>::value == dtype_, "tensor has dtype ", dtype_name(dtype_), ", accessed as ",
              dtype_name(DTypeOf<T>::value));
    return reinterpret_cast<T*>(raw_data());
  }
  void* raw_data() const;

  // Views (no copy).
  Tensor view(const Shape& shape) const;  // requires contiguous; one dim may be -1
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor slice(int64_t d, int64_t start, int64_t end) const;
  Tensor select(int64_t d, int64_t index) const;  // drops dimension d
  Tensor unsqueeze(int64_t d) const;

  // Copies where needed.
  Tensor reshape(const Shape& shape) const;  // view when possible
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType dtype) const;       // conversion (quantizes / dequantizes as needed)
  void copy_from(const Tensor& src);  // same shape; converts dtype
  void fill(double value);

  double item() const;  // single-element tensor as double
  std::vector<float> to_float_vector() const;
  std::vector<double> to_double_vector() const;
  std::vector<int32_t> to_int_vector() const;

  std::string str() const;  // "f32[2, 3]"

 private:
  std::shared_ptr<Storage> storage_;
  DType dtype_ = DType::F32;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
};

Shape contiguous_strides(const Shape& shape);

}  // namespace lmforge
