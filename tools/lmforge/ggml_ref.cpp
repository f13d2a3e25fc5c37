#include "ggml_ref.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "lmforge/core/error.h"
#include "lmforge/core/tensor.h"

namespace lmforge::bench {

namespace {

// The few declarations of ggml.h / ggml-cpu.h used here (the headers are not installed with the prebuilt library).
// ggml_type's values are the GGUF tensor type codes, fixed by the file format.
struct GgmlInitParams {
  size_t mem_size;
  void* mem_buffer;
  bool no_alloc;
};
constexpr int kTypeF32 = 0, kTypeF16 = 1, kTypeQ4_0 = 2, kTypeQ8_0 = 8, kTypeQ4_K = 12, kTypeQ5_K = 13, kTypeQ6_K = 14,
              kTypeBF16 = 30;

int ggml_type_of(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32:
      return kTypeF32;
    case WeightFormat::F16:
      return kTypeF16;
    case WeightFormat::BF16:
      return kTypeBF16;
    case WeightFormat::Q8_0:
      return kTypeQ8_0;
    case WeightFormat::Q4_0:
      return kTypeQ4_0;
    case WeightFormat::Q4_K:
      return kTypeQ4_K;
    case WeightFormat::Q5_K:
      return kTypeQ5_K;
    case WeightFormat::Q6_K:
      return kTypeQ6_K;
    default:
      return -1;
  }
}

}  // namespace

struct Ggml::Impl {
  void* base = nullptr;
  void* cpu = nullptr;
  void* (*init)(GgmlInitParams) = nullptr;
  void (*free)(void*) = nullptr;
  void (*reset)(void*) = nullptr;
  void* (*new_tensor_2d)(void*, int, int64_t, int64_t) = nullptr;
  void* (*mul_mat)(void*, void*, void*) = nullptr;
  void* (*new_graph)(void*) = nullptr;
  void (*build_forward_expand)(void*, void*) = nullptr;
  void* (*get_data)(const void*) = nullptr;
  size_t (*nbytes)(const void*) = nullptr;
  size_t (*tensor_overhead)() = nullptr;
  size_t (*graph_overhead)() = nullptr;
  int (*compute_with_ctx)(void*, void*, int) = nullptr;
  void (*cpu_init)() = nullptr;

  ~Impl() {
    if (cpu) dlclose(cpu);
    if (base) dlclose(base);
  }
};

namespace {

template <typename F>
void bind_symbol(void* lib, const char* name, F& fn, const std::string& file) {
  void* p = dlsym(lib, name);
  LMF_CHECK(p != nullptr, "--ggml: ", file, " has no symbol ", name, " (not a ggml build this benchmark knows)");
  fn = reinterpret_cast<F>(p);
}

}  // namespace

std::unique_ptr<Ggml> Ggml::open(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  LMF_CHECK(fs::is_directory(dir, ec), "--ggml: ", dir, " is not a directory");
  const std::string base_path = (fs::path(dir) / "libggml-base.so").string();
  LMF_CHECK(fs::exists(base_path, ec), "--ggml: ", dir, " holds no libggml-base.so");
  std::unique_ptr<Ggml> g(new Ggml());
  g->impl_ = std::make_unique<Impl>();
  Impl& s = *g->impl_;
  // RTLD_GLOBAL: the CPU variants resolve their ggml_* references against this copy.
  s.base = dlopen(base_path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  LMF_CHECK(s.base != nullptr, "--ggml: cannot load ", base_path, ": ", dlerror());
  // Every CPU variant scores this CPU (0: it lacks an instruction the variant needs); the best one is kept.
  std::vector<std::string> variants;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("libggml-cpu", 0) == 0 && name.size() > 3 && name.compare(name.size() - 3, 3, ".so") == 0)
      variants.push_back(e.path().string());
  }
  std::sort(variants.begin(), variants.end());
  LMF_CHECK(!variants.empty(), "--ggml: ", dir, " holds no libggml-cpu*.so");
  int best_score = 0;
  for (const std::string& v : variants) {
    void* lib = dlopen(v.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) continue;
    auto score = reinterpret_cast<int (*)()>(dlsym(lib, "ggml_backend_score"));
    const int sc = score != nullptr ? score() : 0;
    if (sc > best_score) {
      if (s.cpu != nullptr) dlclose(s.cpu);
      s.cpu = lib;
      best_score = sc;
      g->variant_ = fs::path(v).filename().string();
    } else {
      dlclose(lib);
    }
  }
  LMF_CHECK(s.cpu != nullptr, "--ggml: no libggml-cpu*.so in ", dir, " runs on this CPU");
  bind_symbol(s.base, "ggml_init", s.init, base_path);
  bind_symbol(s.base, "ggml_free", s.free, base_path);
  bind_symbol(s.base, "ggml_reset", s.reset, base_path);
  bind_symbol(s.base, "ggml_new_tensor_2d", s.new_tensor_2d, base_path);
  bind_symbol(s.base, "ggml_mul_mat", s.mul_mat, base_path);
  bind_symbol(s.base, "ggml_new_graph", s.new_graph, base_path);
  bind_symbol(s.base, "ggml_build_forward_expand", s.build_forward_expand, base_path);
  bind_symbol(s.base, "ggml_get_data", s.get_data, base_path);
  bind_symbol(s.base, "ggml_nbytes", s.nbytes, base_path);
  bind_symbol(s.base, "ggml_tensor_overhead", s.tensor_overhead, base_path);
  bind_symbol(s.base, "ggml_graph_overhead", s.graph_overhead, base_path);
  bind_symbol(s.cpu, "ggml_graph_compute_with_ctx", s.compute_with_ctx, g->variant_);
  bind_symbol(s.cpu, "ggml_cpu_init", s.cpu_init, g->variant_);
  s.cpu_init();
  return g;
}

Ggml::~Ggml() = default;

bool Ggml::supports(WeightFormat f) {
  return ggml_type_of(f) >= 0;
}

GgmlMatmul::GgmlMatmul(Ggml& g, const WeightMatrix& w, int copies, int64_t n, const float* x, int threads)
    : g_(g), m_(w.rows()), n_(n), threads_(threads) {
  Ggml::Impl& s = g.impl();
  const int type = ggml_type_of(w.format());
  LMF_CHECK(type >= 0, "ggml has no ", weight_format_name(w.format()), " weights");
  LMF_CHECK(!w.interleaved(), "GgmlMatmul: the weight must be in the GGUF layout");
  LMF_CHECK(copies >= 1, "GgmlMatmul: copies >= 1");
  const int64_t k = w.cols();
  const size_t wbytes = w.nbytes();
  // Enough products to a graph that it runs ~256 MiB of weights (thread start-up is then noise), at least 4; fewer
  // for prefill shapes (n > 1), whose products are long.
  // ggml's default graph holds 2048 nodes and 2048 leaves: at most kMaxOps products of at most kMaxOps weights.
  constexpr size_t kMaxOps = 1024;
  copies = std::min(copies, static_cast<int>(kMaxOps));
  ops_ = static_cast<int>(std::min(kMaxOps, (size_t{256} << 20) / std::max<size_t>(wbytes, 1) + 1));
  ops_ = std::max({ops_, 4, copies});
  if (n > 1) ops_ = std::max(2, ops_ / static_cast<int>(std::min<int64_t>(n, 1 << 20)));  // prefill: long products
  const size_t slack = size_t{1} << 20;
  const size_t mem = static_cast<size_t>(copies) * (wbytes + s.tensor_overhead() + 64) +
                     static_cast<size_t>(n * k) * 4 + s.tensor_overhead() +
                     static_cast<size_t>(ops_) * (static_cast<size_t>(n * m_) * 4 + 2 * s.tensor_overhead() + 64) +
                     s.graph_overhead() + slack;
  ctx_ = s.init(GgmlInitParams{mem, nullptr, false});
  LMF_CHECK(ctx_ != nullptr, "ggml_init failed (", mem, " bytes)");
  std::vector<void*> ws;
  for (int c = 0; c < copies; ++c) {
    void* t = s.new_tensor_2d(ctx_, type, k, m_);
    LMF_CHECK(t != nullptr && s.nbytes(t) == wbytes, "ggml's ", weight_format_name(w.format()), " tensor of ", m_,
              " x ", k, " has ", t ? s.nbytes(t) : 0, " bytes, ours ", wbytes);
    std::memcpy(s.get_data(t), w.codes().raw_data(), wbytes);
    ws.push_back(t);
  }
  void* xt = s.new_tensor_2d(ctx_, kTypeF32, k, n);
  std::memcpy(s.get_data(xt), x, static_cast<size_t>(n * k) * 4);
  graph_ = s.new_graph(ctx_);
  for (int i = 0; i < ops_; ++i) {
    last_ = s.mul_mat(ctx_, ws[static_cast<size_t>(i % copies)], xt);
    s.build_forward_expand(graph_, last_);
  }
  // The work buffer (activations converted to the weights' dot-product type) is allocated per compute call.
  const size_t work = static_cast<size_t>(n * k) * 4 + 64 * static_cast<size_t>(threads) * 64 + slack;
  work_ctx_ = s.init(GgmlInitParams{work, nullptr, false});
  LMF_CHECK(work_ctx_ != nullptr, "ggml_init failed (work buffer)");
}

GgmlMatmul::~GgmlMatmul() {
  Ggml::Impl& s = g_.impl();
  if (work_ctx_) s.free(work_ctx_);
  if (ctx_) s.free(ctx_);
}

double GgmlMatmul::run_ms() {
  Ggml::Impl& s = g_.impl();
  s.reset(work_ctx_);
  const auto t0 = std::chrono::steady_clock::now();
  const int status = s.compute_with_ctx(work_ctx_, graph_, threads_);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  LMF_CHECK(status == 0, "ggml_graph_compute_with_ctx returned status ", status);
  return ms / ops_;
}

std::vector<float> GgmlMatmul::output() const {
  const float* y = static_cast<const float*>(g_.impl().get_data(last_));
  return std::vector<float>(y, y + m_ * n_);
}

GgmlDecodeProbe::GgmlDecodeProbe(Ggml& g, WeightFormat f, int threads, int64_t m, int64_t k) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> wv(static_cast<size_t>(m * k)), x(static_cast<size_t>(k));
  for (float& v : wv) v = nd(rng);
  for (float& v : x) v = nd(rng) * 50.0f;
  const WeightMatrix w = WeightMatrix::quantize(Tensor::from_vector(wv, {m, k}), f);
  wv = {};
  bytes_ = static_cast<double>(w.nbytes());
  const int copies = std::max(1, static_cast<int>((96.0 * (1 << 20) + bytes_ - 1) / bytes_));
  mm_ = std::make_unique<GgmlMatmul>(g, w, copies, 1, x.data(), threads);
  mm_->run_ms();  // pages the weights in
}

double GgmlDecodeProbe::sample_ms() {
  // lmforge's pool workers spin briefly after their last job before they sleep: not on ggml's cores.
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return mm_->run_ms();
}

}  // namespace lmforge::bench
