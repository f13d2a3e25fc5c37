#include "lmforge/core/tensor.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>

#include "lmforge/core/half.h"
#include "lmforge/core/quant.h"
#include "lmforge/kernels/qgemm.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

// ---- Storage ----

namespace {

// Blocks of 1 MiB or more are allocated in size classes (four per doubling: 1, 1.25, 1.5, 1.75 x 2^k, so at
// most 25% slack) and, when freed, kept for the next request of the same class. Training allocates the same
// activation and gradient shapes every step (MoE blocks vary a little with routing, which the classes absorb);
// without the cache each block comes back from the OS as fresh pages, costing a page fault and a zeroing per
// 4 KiB: about 20% of a train-dense step, measured with perf. At most kCacheLimit bytes are held;
// LMFORGE_NO_BLOCK_CACHE=1 turns it off.
constexpr size_t kCacheMin = size_t{1} << 20;
constexpr size_t kCacheLimit = size_t{8} << 30;

class BlockCache {
 public:
  static BlockCache& get() {
    static BlockCache* c = new BlockCache();  // never destroyed: storages may be freed during static teardown
    return *c;
  }
  // The size to allocate for a request: its class for cacheable sizes.
  size_t round(size_t bytes) const {
    if (!enabled_ || bytes < kCacheMin) return bytes;
    size_t p = kCacheMin;
    while (p * 2 <= bytes) p *= 2;
    for (size_t q = 4; q <= 8; ++q)
      if (p / 4 * q >= bytes) return p / 4 * q;
    return p * 2;
  }
  void* take(size_t cls) {
    if (!enabled_ || cls < kCacheMin) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(cls);
    if (it == free_.end()) return nullptr;
    void* p = it->second;
    cached_ -= cls;
    free_.erase(it);
    return p;
  }
  bool give(void* p, size_t capacity) {
    if (!enabled_ || capacity < kCacheMin) return false;
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_ + capacity > kCacheLimit) return false;
    free_.emplace(capacity, p);
    cached_ += capacity;
    return true;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [cap, p] : free_) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  size_t cached() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  BlockCache() {
    const char* e = std::getenv("LMFORGE_NO_BLOCK_CACHE");
    enabled_ = !(e && *e && std::strcmp(e, "0") != 0);
  }
  bool enabled_ = true;
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

}  // namespace

namespace {
std::atomic<size_t> g_live_bytes{0}, g_peak_live_bytes{0};
void count_alloc(size_t n) {
  const size_t now = g_live_bytes.fetch_add(n, std::memory_order_relaxed) + n;
  size_t peak = g_peak_live_bytes.load(std::memory_order_relaxed);
  while (now > peak && !g_peak_live_bytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}
}  // namespace

size_t Storage::live_bytes() {
  return g_live_bytes.load(std::memory_order_relaxed);
}
size_t Storage::peak_live_bytes() {
  return g_peak_live_bytes.load(std::memory_order_relaxed);
}
void Storage::reset_peak_live_bytes() {
  g_peak_live_bytes.store(g_live_bytes.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

void Storage::release_cached_blocks() {
  BlockCache::get().release();
}
size_t Storage::cached_bytes() {
  return BlockCache::get().cached();
}

namespace {
thread_local int t_huge_scopes = 0;
constexpr size_t kHugePage = size_t(2) << 20;

// 2 MiB-aligned and advised for THP; null where that fails (the caller falls back). A huge page is faulted in
// whole, so a last partial one is advised only when at least 3/4 of it is used: an unused tail on small pages
// is never touched and costs nothing resident. *size: the bytes allocated.
void* allocate_huge(size_t bytes, size_t* size) {
  const char* off = std::getenv("LMFORGE_NO_HUGE_PAGES");  // read each time: a few hundred calls per model
  if (off && *off && std::strcmp(off, "0") != 0) return nullptr;
  const size_t whole = (bytes + kHugePage / 4) / kHugePage * kHugePage;  // the last page if >= 3/4 used
  *size = std::max(whole, (bytes + 4095) / 4096 * 4096);
  void* p = nullptr;  // posix_memalign: aligned_alloc wants the size a multiple of the alignment
  if (::posix_memalign(&p, kHugePage, *size) != 0) return nullptr;
#ifdef MADV_HUGEPAGE
  ::madvise(p, whole, MADV_HUGEPAGE);  // advice only: on error, ordinary pages
#endif
  return p;
}
}  // namespace

HugePageScope::HugePageScope() {
  ++t_huge_scopes;
}
HugePageScope::~HugePageScope() {
  --t_huge_scopes;
}
bool HugePageScope::active() {
  return t_huge_scopes > 0;
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes) {
  auto s = std::shared_ptr<Storage>(new Storage());
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  BlockCache& cache = BlockCache::get();
  size_t capacity = cache.round(rounded);
  // Under a HugePageScope, a fresh huge-page block sized to the request rather than its size class (the class's
  // unused tail, up to a quarter, would be resident: a huge page is faulted in whole) and not cached when freed (a
  // cached block of an odd size would never be taken again).
  if (HugePageScope::active() && rounded >= kHugePage) {
    size_t size = 0;
    s->data_ = allocate_huge(rounded, &size);
    if (s->data_) {
      capacity = size;
      s->cacheable_ = false;
    }
  }
  if (!s->data_) s->data_ = cache.take(capacity);
  if (!s->data_) {
    s->data_ = std::aligned_alloc(64, capacity);
    if (!s->data_) {  // the cache may hold what we need
      cache.release();
      s->data_ = std::aligned_alloc(64, capacity);
    }
  }
  if (!s->data_) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
  s->bytes_ = bytes;
  s->capacity_ = capacity;
  s->owned_ = true;
  count_alloc(capacity);
  return s;
}

std::shared_ptr<Storage> Storage::borrow(void* data, size_t bytes, std::shared_ptr<void> keeper) {
  auto s = std::shared_ptr<Storage>(new Storage());
  s->data_ = data;
  s->bytes_ = bytes;
  s->keeper_ = std::move(keeper);
  return s;
}

Storage::~Storage() {
  if (owned_) g_live_bytes.fetch_sub(capacity_, std::memory_order_relaxed);
  if (owned_ && !(cacheable_ && BlockCache::get().give(data_, capacity_))) std::free(data_);
}

// ---- Tensor ----

static size_t bytes_for(DType dt, int64_t numel) {
  return static_cast<size_t>(numel / block_size(dt)) * type_size(dt);
}

static void check_shape(const Shape& shape, DType dt) {
  for (int64_t d : shape) LMF_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  if (is_quantized(dt)) {
    LMF_CHECK(!shape.empty() && shape.back() % block_size(dt) == 0, "a ", dtype_name(dt),
              " tensor needs its last dimension to be a multiple of ", block_size(dt), ", got shape ",
              shape_str(shape));
  }
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  check_shape(shape, dtype);
  Tensor t;
  t.storage_ = Storage::allocate(bytes_for(dtype, shape_numel(shape)));
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.storage_->data(), 0, t.storage_->bytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape, DType dtype) {
  LMF_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_vector: ", v.size(),
            " values do not fill shape ", shape_str(shape));
  Tensor f = empty(shape, DType::F32);
  std::memcpy(f.raw_data(), v.data(), v.size() * sizeof(float));
  return dtype == DType::F32 ? f : f.to(dtype);
}

Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& shape) {
  LMF_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_vector: ", v.size(),
            " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, DType::F64);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(double));
  return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& v, const Shape& shape) {
  LMF_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_ints: ", v.size(), " values do not fill shape ",
            shape_str(shape));
  Tensor t = empty(shape, DType::I32);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, DType dtype, const Shape& shape, int64_t offset) {
  check_shape(shape, dtype);
  LMF_CHECK(storage != nullptr, "from_storage: null storage");
  LMF_CHECK(offset >= 0 && offset % block_size(dtype) == 0, "from_storage: bad offset ", offset);
  size_t need = bytes_for(dtype, offset) + bytes_for(dtype, shape_numel(shape));
  LMF_CHECK(need <= storage->bytes(), "from_storage: ", dtype_name(dtype), shape_str(shape), " at offset ", offset,
            " needs ", need, " bytes, storage has ", storage->bytes());
  Tensor t;
  t.storage_ = std::move(storage);
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.offset_ = offset;
  return t;
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  LMF_CHECK(d >= 0 && d < n, "dimension ", d, " out of range for shape ", shape_str(shape_));
  return shape_[static_cast<size_t>(d)];
}

size_t Tensor::nbytes() const {
  return bytes_for(dtype_, numel());
}

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expect) return false;
    expect *= shape_[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  LMF_CHECK(defined(), "access to an undefined tensor");
  auto* base = static_cast<char*>(storage_->data());
  return base + bytes_for(dtype_, offset_);
}

static int64_t norm_dim(int64_t d, int64_t n, const Shape& shape) {
  if (d < 0) d += n;
  LMF_CHECK(d >= 0 && d < n, "dimension ", d, " out of range for shape ", shape_str(shape));
  return d;
}

Tensor Tensor::view(const Shape& shape_in) const {
  Shape shape = shape_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      LMF_CHECK(infer < 0, "view: more than one -1 in ", shape_str(shape_in));
      infer = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    LMF_CHECK(known > 0 && numel() % known == 0, "view: cannot infer ", shape_str(shape_in), " from ",
              shape_str(shape_));
    shape[static_cast<size_t>(infer)] = numel() / known;
  }
  LMF_CHECK(shape_numel(shape) == numel(), "view: shape ", shape_str(shape_in), " does not match ", shape_str(shape_),
            " (", numel(), " elements)");
  LMF_CHECK(is_contiguous(), "view: tensor of shape ", shape_str(shape_), " is not contiguous; use reshape");
  check_shape(shape, dtype_);
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  LMF_CHECK(!is_quantized(dtype_), "transpose of a quantized tensor");
  d0 = norm_dim(d0, dim(), shape_);
  d1 = norm_dim(d1, dim(), shape_);
  Tensor t = *this;
  std::swap(t.shape_[d0], t.shape_[d1]);
  std::swap(t.strides_[d0], t.strides_[d1]);
  return t;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  d = norm_dim(d, dim(), shape_);
  LMF_CHECK(0 <= start && start <= end && end <= shape_[d], "slice [", start, ", ", end, ") out of range for dim ", d,
            " of shape ", shape_str(shape_));
  if (is_quantized(dtype_) && d == dim() - 1) {
    LMF_CHECK(start % block_size(dtype_) == 0 && end % block_size(dtype_) == 0,
              "slice of a quantized tensor must keep whole blocks");
  }
  Tensor t = *this;
  t.offset_ += start * strides_[d];
  t.shape_[d] = end - start;
  return t;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = norm_dim(d, dim(), shape_);
  Tensor t = slice(d, index, index + 1);
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  int64_t n = dim() + 1;
  if (d < 0) d += n;
  LMF_CHECK(d >= 0 && d < n, "unsqueeze: dimension out of range");
  Tensor t = *this;
  int64_t st = d < dim() ? shape_[d] * strides_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, st);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  if (is_contiguous()) return view(shape);
  return contiguous().view(shape);
}

// Copies src (any strides, any float/int dtype) into dst (contiguous), converting element types.
static void strided_copy(const Tensor& src, Tensor& dst);

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor t = empty(shape_, dtype_);
  strided_copy(*this, t);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  strided_copy(*this, t);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype);
  strided_copy(*this, t);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  LMF_CHECK(src.shape_ == shape_, "copy_from: shape ", shape_str(src.shape_), " into ", shape_str(shape_));
  if (is_contiguous()) {
    strided_copy(src, *this);
    return;
  }
  LMF_CHECK(!is_quantized(dtype_), "copy_from into a non-contiguous quantized tensor");
  // Non-contiguous destination: copy through a contiguous temporary, then scatter element-wise in dst's dtype.
  Tensor tmp = src.to(dtype_).contiguous();
  const int64_t n = numel(), nd = dim();
  const size_t es = type_size(dtype_);
  auto* base = static_cast<char*>(storage_->data());
  const auto* s = static_cast<const char*>(tmp.raw_data());
  std::vector<int64_t> idx(static_cast<size_t>(nd), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = offset_;
    for (int64_t k = 0; k < nd; ++k) off += idx[k] * strides_[k];
    std::memcpy(base + off * es, s + i * es, es);
    for (int64_t k = nd - 1; k >= 0; --k) {
      if (++idx[k] < shape_[k]) break;
      idx[k] = 0;
    }
  }
}

void Tensor::fill(double value) {
  const int64_t n = numel();
  if (is_quantized(dtype_) || dtype_ == DType::U8 || dtype_ == DType::I8 || !is_contiguous()) {
    std::vector<float> v(static_cast<size_t>(n), static_cast<float>(value));
    copy_from(from_vector(v, shape_));
    return;
  }
  switch (dtype_) {
    case DType::F32:
      std::fill_n(data<float>(), n, static_cast<float>(value));
      break;
    case DType::F64:
      std::fill_n(data<double>(), n, value);
      break;
    case DType::I32:
      std::fill_n(data<int32_t>(), n, static_cast<int32_t>(value));
      break;
    case DType::BF16:
      std::fill_n(static_cast<uint16_t*>(raw_data()), n, f32_to_bf16(static_cast<float>(value)));
      break;
    case DType::F16:
      std::fill_n(static_cast<uint16_t*>(raw_data()), n, f32_to_f16(static_cast<float>(value)));
      break;
    default:
      break;
  }
}

double Tensor::item() const {
  LMF_CHECK(numel() == 1, "item() on a tensor of shape ", shape_str(shape_));
  return to_double_vector()[0];
}

std::vector<double> Tensor::to_double_vector() const {
  Tensor t = to(DType::F64).contiguous();
  const double* p = t.data<double>();
  return std::vector<double>(p, p + t.numel());
}

std::vector<float> Tensor::to_float_vector() const {
  Tensor t = to(DType::F32).contiguous();
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

std::vector<int32_t> Tensor::to_int_vector() const {
  Tensor t = to(DType::I32).contiguous();
  const int32_t* p = t.data<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

std::string Tensor::str() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape_);
}

// ---- conversion ----

namespace {

// Converts n contiguous elements of `from` into f32.
void row_to_f32(DType from, const void* src, float* dst, int64_t n) {
  switch (from) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<const double*>(src)[i]);
      break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<const int32_t*>(src)[i]);
      break;
    case DType::BF16:
      bf16_to_f32_row(static_cast<const uint16_t*>(src), dst, n);
      break;
    case DType::F16:
      f16_to_f32_row(static_cast<const uint16_t*>(src), dst, n);
      break;
    case DType::Q8_0:
      dequantize_row_q8_0(static_cast<const BlockQ8_0*>(src), dst, n);
      break;
    case DType::Q4_0:
      dequantize_row_q4_0(static_cast<const BlockQ4_0*>(src), dst, n);
      break;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: {  // the kernels' dequantization (ggml's, bit for bit), one super-block row of n values
      kernels::cpu::QWeight w;
      w.format = from == DType::Q4_K   ? kernels::cpu::QFormat::Q4_K
                 : from == DType::Q5_K ? kernels::cpu::QFormat::Q5_K
                                       : kernels::cpu::QFormat::Q6_K;
      w.rows = 1;
      w.cols = n;
      w.codes = src;
      kernels::cpu::dequantize_row(w, 0, dst);
      break;
    }
    case DType::U8:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<const uint8_t*>(src)[i]);
      break;
    case DType::I8:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<const int8_t*>(src)[i]);
      break;
  }
}

void row_from_f32(DType to, const float* src, void* dst, int64_t n) {
  switch (to) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) static_cast<double*>(dst)[i] = src[i];
      break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(src[i]);
      break;
    case DType::BF16:
      f32_to_bf16_row(src, static_cast<uint16_t*>(dst), n);
      break;
    case DType::F16:
      f32_to_f16_row(src, static_cast<uint16_t*>(dst), n);
      break;
    case DType::Q8_0:
      quantize_row_q8_0(src, static_cast<BlockQ8_0*>(dst), n);
      break;
    case DType::Q4_0:
      quantize_row_q4_0(src, static_cast<BlockQ4_0*>(dst), n);
      break;
    case DType::Q4_K:
      quantize_row_q4_K(src, static_cast<uint8_t*>(dst), n);
      break;
    case DType::Q5_K:
      quantize_row_q5_K(src, static_cast<uint8_t*>(dst), n);
      break;
    case DType::Q6_K:
      quantize_row_q6_K(src, static_cast<uint8_t*>(dst), n);
      break;
    case DType::U8:
      for (int64_t i = 0; i < n; ++i)
        static_cast<uint8_t*>(dst)[i] = static_cast<uint8_t>(std::clamp(std::nearbyint(src[i]), 0.0f, 255.0f));
      break;
    case DType::I8:
      for (int64_t i = 0; i < n; ++i)
        static_cast<int8_t*>(dst)[i] = static_cast<int8_t>(std::clamp(std::nearbyint(src[i]), -128.0f, 127.0f));
      break;
  }
}

}  // namespace

static void strided_copy(const Tensor& src, Tensor& dst) {
  LMF_CHECK(src.shape() == dst.shape(), "copy: shape ", shape_str(src.shape()), " into ", shape_str(dst.shape()));
  LMF_CHECK(dst.is_contiguous(), "copy: destination must be contiguous");
  const DType sd = src.dtype(), dd = dst.dtype();
  const int64_t n = src.numel();
  if (n == 0) return;
  const int64_t row = src.dim() == 0 ? 1 : src.shape().back();
  const int64_t rows = n / std::max<int64_t>(row, 1);
  char* out = static_cast<char*>(dst.raw_data());

  // Exact copies that need no float round trip.
  const bool same = sd == dd;
  const bool f64_i32 = (sd == DType::F64 && dd == DType::I32) || (sd == DType::I32 && dd == DType::F64);

  if (src.is_contiguous() && same) {
    std::memcpy(out, src.raw_data(), src.nbytes());
    return;
  }
  LMF_CHECK(!is_quantized(sd) || src.dim() == 0 || src.strides().back() == 1,
            "copy: quantized source must have contiguous rows");

  // Source rows: iterate over all leading indices.
  const int64_t nd = src.dim();
  std::vector<int64_t> idx(static_cast<size_t>(std::max<int64_t>(nd - 1, 0)), 0);
  const char* sbase = static_cast<const char*>(src.storage()->data());
  const int64_t last_stride = nd == 0 ? 1 : src.strides().back();
  const size_t ssz = type_size(sd);
  const size_t dsz = type_size(dd);
  std::vector<float> buf(static_cast<size_t>(row));
  std::vector<char> gathered(static_cast<size_t>(row) * (is_quantized(sd) ? 1 : ssz));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = src.offset();
    for (int64_t k = 0; k + 1 < nd; ++k) off += idx[k] * src.strides()[k];
    const char* srow;
    if (is_quantized(sd)) {
      srow = sbase + off / block_size(sd) * ssz;
    } else if (last_stride == 1) {
      srow = sbase + off * ssz;
    } else {
      for (int64_t j = 0; j < row; ++j)
        std::memcpy(gathered.data() + j * ssz, sbase + (off + j * last_stride) * ssz, ssz);
      srow = gathered.data();
    }
    char* drow = out + (r * row / block_size(dd)) * dsz;
    if (same) {
      std::memcpy(drow, srow, static_cast<size_t>(row / block_size(dd)) * dsz);
    } else if (f64_i32 || (sd == DType::F64 && dd != DType::F32)) {
      // Keep double precision where the destination can use it.
      for (int64_t j = 0; j < row; ++j) {
        double v =
            sd == DType::F64 ? reinterpret_cast<const double*>(srow)[j] : reinterpret_cast<const int32_t*>(srow)[j];
        if (dd == DType::F64) {
          reinterpret_cast<double*>(drow)[j] = v;
        } else if (dd == DType::I32) {
          reinterpret_cast<int32_t*>(drow)[j] = static_cast<int32_t>(v);
        } else {
          buf[j] = static_cast<float>(v);
        }
      }
      if (dd != DType::F64 && dd != DType::I32) row_from_f32(dd, buf.data(), drow, row);
    } else if (dd == DType::F64) {
      row_to_f32(sd, srow, buf.data(), row);
      for (int64_t j = 0; j < row; ++j) reinterpret_cast<double*>(drow)[j] = buf[j];
    } else {
      row_to_f32(sd, srow, buf.data(), row);
      row_from_f32(dd, buf.data(), drow, row);
    }
    for (int64_t k = nd - 2; k >= 0; --k) {
      if (++idx[k] < src.shape()[k]) break;
      idx[k] = 0;
    }
  }
}

}  // namespace lmforge
