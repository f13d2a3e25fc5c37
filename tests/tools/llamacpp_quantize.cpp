// llama.cpp's own quantizer (llama_model_quantize, what its `llama-quantize` tool runs) from the prebuilt libllama
// inside node-llama-cpp, loaded at run time: the llama.cpp interop test (scripts/llamacpp_interop.sh) makes k-quant
// and IQ4 GGUF files with it, imports them with `lmforge import gguf` and compares the logits.
//
//   llamacpp_quantize LIBDIR IN.gguf OUT.gguf TYPE      (TYPE: Q4_K_M, Q6_K, IQ4_XS, ... as llama-quantize names them)
//
// Exit 0 on success, 2 on bad arguments, 1 when the library refuses, 77 when LIBDIR holds no libllama.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>

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

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: llamacpp_quantize LIBDIR IN.gguf OUT.gguf TYPE\n");
    return 2;
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
  const uint32_t rc = quantize(argv[2], argv[3], &p);
  if (rc != 0) {
    std::fprintf(stderr, "llamacpp_quantize: llama_model_quantize(%s -> %s, %s) returned %u\n", argv[2], argv[3],
                 type.c_str(), rc);
    return 1;
  }
  return 0;
}
