// Run-time CPU feature detection and the multiversioning helper the CPU kernels use.
//
// x86-64-v3 (AVX2 + FMA + F16C) is the fast path; every kernel also has a portable build. LMFORGE_CPU=generic
// in the environment forces the portable path (tests run both). Where the CPU also has AVX-512 VNNI, the q8_0 / q4_0
// product tiles use it (bit for bit the AVX2 tiles' results); LMFORGE_CPU=avx2 keeps them on AVX2.
#pragma once

namespace lmforge::kernels {

// True when the CPU has AVX2, FMA and F16C and the portable path is not forced.
bool cpu_has_avx2();

// True when the CPU has AVX2 (above) and AVX-512 F, BW, VL and VNNI with the OS saving their state, and neither
// LMFORGE_CPU=generic nor LMFORGE_CPU=avx2 is set.
bool cpu_has_avx512_vnni();

// The kernel set the dispatch above picks here: "avx512_vnni" (AVX2 plus the VNNI product tiles), "avx2" or
// "generic" (`bench generate` / `bench quant` report it as cpu_kernels).
const char* cpu_kernels_name();

}  // namespace lmforge::kernels

#if defined(__x86_64__) && defined(__GNUC__)
#define LMF_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define LMF_TARGET_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define LMF_HAVE_X86 1
#else
#define LMF_TARGET_AVX2
#define LMF_TARGET_VNNI
#define LMF_HAVE_X86 0
#endif
#define LMF_ALWAYS_INLINE inline __attribute__((always_inline))

// Builds `name` twice from the always-inline template body `name##_impl` — once compiled for AVX2/FMA, once
// portable — and a dispatcher that picks one at run time. The body is written once, in plain C++; GCC
// vectorises it for each target.
#define LMF_MULTIVERSION(ret, name, params, args)                                       \
  LMF_TARGET_AVX2 static ret name##_avx2 params {                                       \
    return name##_impl args;                                                            \
  }                                                                                     \
  static ret name##_generic params {                                                    \
    return name##_impl args;                                                            \
  }                                                                                     \
  ret name params {                                                                     \
    return ::lmforge::kernels::cpu_has_avx2() ? name##_avx2 args : name##_generic args; \
  }
