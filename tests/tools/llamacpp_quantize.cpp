// llama.cpp's own quantizer (llama_model_quantize, what its `llama-quantize` tool runs) from the prebuilt libllama
// inside node-llama-cpp, loaded at run time: the llama.cpp interop test (scripts/llamacpp_interop.sh) makes k-quant
// and IQ4 GGUF files with it, imports them with `lmforge import gguf` and compares the logits.
//
//   llamacpp_quantize LIBDIR IN.gguf OUT.gguf TYPE [--imatrix F.dat] [--output-tensor-type T]
//                     [--token-embedding-type T] [--tensor-type PATTERN=T]... [--pure] [--leave-output-tensor]
//     TYPE: Q4_K_M, Q6_K, IQ4_XS, ... as llama-quantize names them; the options are llama-quantize's (T: f32 f16
//     q4_0 q8_0 q4_K q5_K q6_K); --imatrix takes llama.cpp's legacy format, handed to the library as llama-quantize
//     does (each entry's values over its call count).
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

// llama.h's llama_model_tensor_override: the entries end with a null pattern.
struct TensorOverride {
  const char* pattern;
  int32_t type;
};

// ggml_type ids (ggml.h).
int ggml_type_id(const std::string& t) {
  constexpr std::pair<const char*, int> kIds[] = {{"f32", 0},   {"f16", 1},   {"q4_0", 2}, {"q8_0", 8},
                                                  {"q4_K", 12}, {"q5_K", 13}, {"q6_K", 14}};
  for (const auto& [name, id] : kIds)
    if (t == name) return id;
  return -1;
}

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
  if (argc < 5) {
    std::fprintf(stderr, "usage: llamacpp_quantize LIBDIR IN.gguf OUT.gguf TYPE [options]\n");
    return 2;
  }
  std::vector<std::string> names, patterns;
  std::vector<std::vector<float>> values;
  std::vector<ImatrixData> imatrix;
  std::vector<TensorOverride> overrides;
  int out_type = -1, embd_type = -1;
  bool pure = false, leave_output = false;
  for (int i = 5; i < argc; ++i) {
    const std::string opt = argv[i];
    const bool has_value = i + 1 < argc;
    if (opt == "--pure") {
      pure = true;
    } else if (opt == "--leave-output-tensor") {
      leave_output = true;
    } else if (opt == "--imatrix" && has_value) {
      const char* f = argv[++i];
      if (!read_dat(f, names, values)) {
        std::fprintf(stderr, "llamacpp_quantize: %s is not a legacy imatrix file\n", f);
        return 2;
      }
    } else if ((opt == "--output-tensor-type" || opt == "--token-embedding-type") && has_value) {
      const int id = ggml_type_id(argv[++i]);
      if (id < 0) {
        std::fprintf(stderr, "llamacpp_quantize: unknown type %s\n", argv[i]);
        return 2;
      }
      (opt == "--output-tensor-type" ? out_type : embd_type) = id;
    } else if (opt == "--tensor-type" && has_value) {
      const std::string pt = argv[++i];
      const size_t eq = pt.rfind('=');
      const int id = eq == std::string::npos ? -1 : ggml_type_id(pt.substr(eq + 1));
      if (id < 0) {
        std::fprintf(stderr, "llamacpp_quantize: --tensor-type %s: expected PATTERN=TYPE\n", pt.c_str());
        return 2;
      }
      patterns.push_back(pt.substr(0, eq));
      overrides.push_back({nullptr, id});
    } else {
      std::fprintf(stderr, "llamacpp_quantize: unknown option %s\n", opt.c_str());
      return 2;
    }
  }
  for (size_t i = 0; i < names.size(); ++i) imatrix.push_back({names[i].c_str(), values[i].data(), values[i].size()});
  if (!imatrix.empty()) imatrix.push_back({nullptr, nullptr, 0});
  for (size_t i = 0; i < patterns.size(); ++i) overrides[i].pattern = patterns[i].c_str();
  if (!overrides.empty()) overrides.push_back({nullptr, 0});
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
  if (argc > 5) {
    // {output_tensor_type, token_embedding_type} = GGML_TYPE_COUNT twice, then six bools (allow_requantize,
    // quantize_output_tensor = true, only_copy, pure, keep_split, dry_run), then the pointers imatrix (offset 24),
    // kv_overrides (32) and tt_overrides (40), all null: llama.h's layout from late 2025 on. Anything else: unknown.
    int32_t out0 = 0, embd0 = 0;
    void* ptrs[3] = {};
    std::memcpy(&out0, p.rest, 4);
    std::memcpy(&embd0, p.rest + 4, 4);
    std::memcpy(ptrs, p.rest + 16, sizeof(ptrs));
    const unsigned char flags[6] = {0, 1, 0, 0, 0, 0};
    if (out0 != embd0 || out0 < 30 || std::memcmp(p.rest + 8, flags, 6) != 0 || ptrs[0] || ptrs[1] || ptrs[2]) {
      std::fprintf(stderr, "llamacpp_quantize: %s has a llama_model_quantize_params layout this tool does not know\n",
                   path.c_str());
      return 77;
    }
    if (out_type >= 0) std::memcpy(p.rest, &out_type, 4);
    if (embd_type >= 0) std::memcpy(p.rest + 4, &embd_type, 4);
    if (leave_output) p.rest[9] = 0;
    if (pure) p.rest[11] = 1;
    const ImatrixData* data = imatrix.empty() ? nullptr : imatrix.data();
    const TensorOverride* tt = overrides.empty() ? nullptr : overrides.data();
    std::memcpy(p.rest + 16, &data, sizeof(data));
    std::memcpy(p.rest + 32, &tt, sizeof(tt));
  }
  const uint32_t rc = quantize(argv[2], argv[3], &p);
  if (rc != 0) {
    std::fprintf(stderr, "llamacpp_quantize: llama_model_quantize(%s -> %s, %s) returned %u\n", argv[2], argv[3],
                 type.c_str(), rc);
    return 1;
  }
  return 0;
}
