#include "lmforge/kernels/cpu_features.h"

#include <cstdlib>
#include <cstring>

#if LMF_HAVE_X86
#include <cpuid.h>
#endif

namespace lmforge::kernels {

namespace {
#if LMF_HAVE_X86
// AVX2 + FMA + F16C from CPUID, and YMM state enabled by the OS (XGETBV), read directly so GCC and clang agree.
bool detect_avx2() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  if (!(fma && osxsave && avx && f16c)) return false;
  unsigned xlo, xhi;
  __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  if ((xlo & 0x6u) != 0x6u) return false;  // XMM and YMM state saved by the OS
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return b & (1u << 5);  // AVX2
}
// AVX-512 F/BW/VL + VNNI (vpdpbusd on 256-bit registers; Zen 4, Ice Lake and later servers), with the OS saving the
// opmask and ZMM state (XCR0 bits 5-7).
bool detect_avx512_vnni() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool f = b & (1u << 16), bw = b & (1u << 30), vl = b & (1u << 31), vnni = c & (1u << 11);
  if (!(f && bw && vl && vnni)) return false;
  unsigned xlo, xhi;
  __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  return (xlo & 0xe6u) == 0xe6u;
}
#endif
}  // namespace

bool cpu_has_avx2() {
  static const bool has = [] {
    const char* force = std::getenv("LMFORGE_CPU");
    if (force && std::strcmp(force, "generic") == 0) return false;
#if LMF_HAVE_X86
    return detect_avx2();
#else
    return false;
#endif
  }();
  return has;
}

const char* cpu_kernels_name() {
  return cpu_has_avx512_vnni() ? "avx512_vnni" : cpu_has_avx2() ? "avx2" : "generic";
}

bool cpu_has_avx512_vnni() {
  static const bool has = [] {
    const char* force = std::getenv("LMFORGE_CPU");
    if (force && (std::strcmp(force, "generic") == 0 || std::strcmp(force, "avx2") == 0)) return false;
#if LMF_HAVE_X86
    return cpu_has_avx2() && detect_avx512_vnni();
#else
    return false;
#endif
  }();
  return has;
}

}  // namespace lmforge::kernels
