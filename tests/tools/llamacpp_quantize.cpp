// llama.cpp's own quantizer (llama_model_quantize, what its `llama-quantize` tool runs) from the prebuilt libllama
// inside node-llama-cpp, loaded at run time: the llama.cpp interop test (scripts/llamacpp_interop.sh) makes k-quant
// and IQ4 GGUF files with it, imports them with `lmforge import gguf` and compares the logits.
//
//   llamacpp_quantize LIBDIR IN.gguf OUT.gguf TYPE [IMATRIX.dat]
//     TYPE: Q4_K_M, Q6_K, IQ4_XS, ... as llama-quantize names them; IMATRIX.dat: an importance matrix in llama.cpp's
//     legacy format, handed to the library as llama-quantize --imatrix does (each entry's values over its call count).
//
// Exit 0 on success, 2 on bad arguments, 1 when the library refuses, 77 when LIBDIR holds no libllama (or, with an
// imatrix, one whose llama_model_quantize_params this tool does not know).
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace {

// llama_ftype values (llama.h).
constexpr std::pair<const char*, int> kTypes[] = {
    {"F32", 0},     {"F16", 1},     {"Q4_0", 2},    {"Q4_1", 3},    {"Q8_0", 7},    {"Q5_0", 8},    {"Q5_1", 9},
    {"Q2_K", 10},   {"Q3_K_S", 11}, {"Q3_K_M", 12}, {"Q3_K_L", 13}, {"Q4_K_S", 14}, {"Q4_K_M", 15}, {"Q5_K_S", 16},
    {"Q5_K_M", 17}, {"Q6_K", 18},   {"Q2_K_S", 21}, {"IQ4_NL", 25}, {"IQ4_XS", 30}, {"BF16", 32},
};

// llama_model_quantize_params begins {int32_t nthread; enum llama_ftype ftype; ...} in every llama.cpp release
// that has it; the rest is left as llama_model_quantize_default_params() makes it. The tail is oversized so the
// library's struct, whatever its length, fits (it is returned through a hidden pointer either way).
struct Params {
  int32_t nthread;
  int32_t ftype;
  unsigned char rest[1024];
};

// llama.h's llama_model_imatrix_data: the entries end with a null name.
struct ImatrixData {
  const char* name;
  const float* data;
  size_t size;
};

// A legacy .dat imatrix as tools/quantize loads it: per entry, the stored values divided by the call count.
bool read_dat(const std::string& path, std::vector<std::string>& names, std::vector<std::vector<float>>& values) {
  std::ifstream in(path, std::ios::binary);
  int32_t n = 0;
  if (!in.read(reinterpret_cast<char*>(&n), 4) || n <= 0) return false;
  for (int32_t i = 0; i < n; ++i) {
    int32_t len = 0, ncall = 0, nval = 0;
    if (!in.read(reinterpret_cast<char*>(&len), 4) || len <= 0 || len > 4096) return false;
    std::string name(static_cast<size_t>(len), '\0');
    if (!in.read(name.data(), len) || !in.read(reinterpret_cast<char*>(&ncall), 4) ||
        !in.read(reinterpret_cast<char*>(&nval), 4) || ncall <= 0 || nval <= 0)
      return false;
    std::vector<float> v(static_cast<size_t>(nval));
    if (!in.read(reinterpret_cast<char*>(v.data()), 4 * static_cast<std::streamsize>(nval))) return false;
    for (float& x : v) x = x / static_cast<float>(ncall);
    names.push_back(std::move(name));
    values.push_back(std::move(v));
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: llamacpp_quantize LIBDIR IN.gguf OUT.gguf TYPE [IMATRIX.dat]\n");
    return 2;
  }
  std::vector<std::string> names;
  std::vector<std::vector<float>> values;
  std::vector<ImatrixData> imatrix;
  if (argc == 6) {
    if (!read_dat(argv[5], names, values)) {
      std::fprintf(stderr, "llamacpp_quantize: %s is not a legacy imatrix file\n", argv[5]);
      return 2;
    }
    for (size_t i = 0; i < names.size(); ++i) imatrix.push_back({names[i].c_str(), values[i].data(), values[i].size()});
    imatrix.push_back({nullptr, nullptr, 0});
  }
  const std::string dir = argv[1], type = argv[4];
  int ftype = -1;
  for (const auto& [name, id] : kTypes)
    if (type == name) ftype = id;
  if (ftype < 0) {
    std::fprintf(stderr, "llamacpp_quantize: unknown type %s\n", type.c_str());
    return 2;
  }
  const std::string lib = dir + "/libllama.v0.5.0.so";
  std::string path = lib;
  if (!std::filesystem::exists(path)) {
    path.clear();
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("libllama.", 0) == 0 && n.find(".so") != std::string::npos) path = e.path().string();
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "llamacpp_quantize: no libllama*.so in %s\n", dir.c_str());
    return 77;
  }
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    std::fprintf(stderr, "llamacpp_quantize: cannot load %s: %s\n", path.c_str(), dlerror());
    return 1;
  }
  auto backend_init = reinterpret_cast<void (*)()>(dlsym(h, "llama_backend_init"));
  auto defaults = reinterpret_cast<Params (*)()>(dlsym(h, "llama_model_quantize_default_params"));
  auto quantize =
      reinterpret_cast<uint32_t (*)(const char*, const char*, const Params*)>(dlsym(h, "llama_model_quantize"));
  if (!backend_init || !defaults || !quantize) {
    std::fprintf(stderr, "llamacpp_quantize: %s lacks llama_model_quantize\n", path.c_str());
    return 1;
  }
  backend_init();
  Params p = defaults();
  p.ftype = ftype;
  p.nthread = 2;
  if (!imatrix.empty()) {
    // {output_tensor_type, token_embedding_type} = GGML_TYPE_COUNT twice, then six bools (quantize_output_tensor
    // true), then the imatrix pointer at offset 24 (null): llama.h's layout from 2025 on. Anything else: unknown.
    int32_t out_type = 0, embd_type = 0;
    void* ptr = nullptr;
    std::memcpy(&out_type, p.rest, 4);
    std::memcpy(&embd_type, p.rest + 4, 4);
    std::memcpy(&ptr, p.rest + 16, sizeof(ptr));
    const unsigned char flags[6] = {0, 1, 0, 0, 0, 0};
    if (out_type != embd_type || out_type < 30 || std::memcmp(p.rest + 8, flags, 6) != 0 || ptr != nullptr) {
      std::fprintf(stderr, "llamacpp_quantize: %s has a llama_model_quantize_params layout this tool does not know\n",
                   path.c_str());
      return 77;
    }
    const ImatrixData* data = imatrix.data();
    std::memcpy(p.rest + 16, &data, sizeof(data));
  }
  const uint32_t rc = quantize(argv[2], argv[3], &p);
  if (rc != 0) {
    std::fprintf(stderr, "llamacpp_quantize: llama_model_quantize(%s -> %s, %s) returned %u\n", argv[2], argv[3],
                 type.c_str(), rc);
    return 1;
  }
  return 0;
}
