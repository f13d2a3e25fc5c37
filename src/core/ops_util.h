// Shared helpers of the op implementations: dtype policy, shape checks, type dispatch.
#pragma once
#include <string>

#include "lmforge/core/autograd.h"
#include "lmforge/core/error.h"
#include "lmforge/core/tensor.h"

namespace lmforge::ops::detail {

// The dtype an op computes in: f64 if any input is f64 (gradient checks), else f32 (bf16/f16 are storage
// formats, widened on load). Integer and quantized inputs are rejected, naming the op.
inline DType compute_dtype(const char* op, std::initializer_list<const Tensor*> ts) {
  bool f64 = false, other = false;
  for (const Tensor* t : ts) {
    LMF_CHECK(is_floating(t->dtype()), op, ": expected a floating-point tensor, got ", t->str());
    f64 = f64 || t->dtype() == DType::F64;
    other = other || t->dtype() != DType::F64;
  }
  LMF_CHECK(!(f64 && other), op, ": cannot mix f64 with other dtypes");
  return f64 ? DType::F64 : DType::F32;
}

// t in dtype dt, contiguous (no copy when it already is).
inline Tensor prepare(const Tensor& t, DType dt) {
  Tensor x = t.dtype() == dt ? t : t.to(dt);
  return x.contiguous();
}

inline void check_ids(const char* op, const Tensor& ids) {
  LMF_CHECK(ids.dtype() == DType::I32, op, ": indices must be i32, got ", ids.str());
}

}  // namespace lmforge::ops::detail

// Runs the statement with `T` bound to float or double according to dt.
#define LMF_FLOAT_DISPATCH(dt, ...)      \
  do {                                   \
    if ((dt) == ::lmforge::DType::F64) { \
      using T = double;                  \
      __VA_ARGS__;                       \
    } else {                             \
      using T = float;                   \
      __VA_ARGS__;                       \
    }                                    \
  } while (0)
