#include "lmforge/kernels/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace lmforge::kernels {

bool cpu_has_avx2() {
  static const bool has = [] {
    const char* force = std::getenv("LMFORGE_CPU");
    if (force && std::strcmp(force, "generic") == 0) return false;
#if LMF_HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
  }();
  return has;
}

}  // namespace lmforge::kernels
