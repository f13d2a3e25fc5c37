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

// What an op keeps of input `v` (already prepared as `t`) for its backward: a leaf (a parameter, or a constant)
// stays alive anyway and is kept as is; an activation is kept under the current SavedPrecision.
inline Tensor keep(const Var& v, const Tensor& t) {
  const DType n = saved_dtype();
  if (v.impl()->is_leaf || n == DType::F32 || t.dtype() != DType::F32) return t;
  // Reshaped views share their source's narrow copy.
  std::shared_ptr<VarImpl> p = v.impl();
  while (auto base = p->view_of.lock()) p = base;
  if (!p->narrow.defined() || p->narrow.dtype() != n || p->narrow.numel() != t.numel())
    p->narrow = t.contiguous().to(n);
  return p->narrow.view(t.shape());
}

// The narrow dtype products compute in under mixed precision (BF16 / F16 for f32 ops), or F32 when they do not.
inline DType lowp_dtype(DType dt) {
  return dt == DType::F32 ? saved_dtype() : DType::F32;
}

// t's values rounded to `narrow` (kept in f32): what a bf16/f16 product sees and gives. No-op for F32. In f16,
// values past its range become inf, as they would on hardware; the fp16 loss scaler watches for them.
inline Tensor round_through(const Tensor& t, DType narrow) {
  if (narrow == DType::F32 || !t.defined()) return t;
  return t.to(narrow).to(DType::F32);
}
// The same in place, on a fresh contiguous f32 tensor (an op's own output): no extra memory.
void round_in_place(Tensor& t, DType narrow);

// For an op's own output: its narrow copy under mixed precision, recorded on the output so that later ops saving
// the same variable (or a reshaped view of it) share it; t itself in f32.
inline Tensor keep_output(const Var& out, const Tensor& t) {
  const DType n = saved_dtype();
  if (n == DType::F32 || t.dtype() != DType::F32) return t;
  out.impl()->narrow = t.contiguous().to(n);
  return out.impl()->narrow;
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
