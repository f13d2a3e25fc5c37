// LMF_MULTIVERSION_T: the template form of LMF_MULTIVERSION (cpu_features.h). Defines name<T> that runs the
// always-inline body impl<T>, compiled for AVX2/FMA when the CPU has it and for the portable baseline otherwise.
#pragma once
#include "lmforge/kernels/cpu_features.h"

#define LMF_MULTIVERSION_T(ret, name, impl, params, args)                                     \
  template <typename T>                                                                       \
  LMF_TARGET_AVX2 ret name##_avx2 params {                                                    \
    return impl<T> args;                                                                      \
  }                                                                                           \
  template <typename T>                                                                       \
  ret name##_generic params {                                                                 \
    return impl<T> args;                                                                      \
  }                                                                                           \
  template <typename T>                                                                       \
  LMF_ALWAYS_INLINE ret name params {                                                         \
    return ::lmforge::kernels::cpu_has_avx2() ? name##_avx2<T> args : name##_generic<T> args; \
  }
