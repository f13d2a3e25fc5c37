// Matmul, element-wise arithmetic, reductions and shape ops.
#include <algorithm>

#include "core/ops_util.h"
#include "lmforge/core/half.h"
#include "lmforge/core/ops.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge::ops {

using detail::compute_dtype;
using detail::keep;
using detail::prepare;
namespace k = kernels::cpu;

namespace detail {

void round_in_place(Tensor& t, DType narrow) {
  if (narrow == DType::F32 || !t.defined()) return;
  LMF_CHECK(t.dtype() == DType::F32 && t.is_contiguous(), "round_in_place: needs a contiguous f32 tensor");
  float* x = t.data<float>();
  const int64_t n = t.numel();
  if (narrow == DType::BF16) {
    parallel_for(n, 1 << 16, [x](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
    });
  } else {
    parallel_for(n, 1 << 16, [x](int64_t i0, int64_t i1) {
      uint16_t buf[1024];
      for (int64_t i = i0; i < i1; i += 1024) {
        const int64_t m = std::min<int64_t>(1024, i1 - i);
        f32_to_f16_row(x + i, buf, m);
        f16_to_f32_row(buf, x + i, m);
      }
    });
  }
}

}  // namespace detail

// ---- matmul ----

namespace {

struct MatmulPlan {
  int64_t batch;  // 1 when b is shared
  int64_t M, N, K;
  bool batched;
  Shape out_shape;
};

MatmulPlan plan_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  LMF_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: need at least 2-d operands, got ", a.str(), " and ", b.str());
  MatmulPlan p{};
  const int64_t a_rows = a.size(-2), a_cols = a.size(-1);
  const int64_t b_rows = b.size(-2), b_cols = b.size(-1);
  const int64_t Ka = ta ? a_rows : a_cols;
  const int64_t Kb = tb ? b_cols : b_rows;
  LMF_CHECK(Ka == Kb, "matmul: inner dimensions differ: ", a.str(), (ta ? "ᵀ" : ""), " x ", b.str(), (tb ? "ᵀ" : ""));
  p.K = Ka;
  p.N = tb ? b_rows : b_cols;
  Shape lead(a.shape().begin(), a.shape().end() - 2);
  if (b.dim() == 2) {
    p.batched = false;
    if (ta) {  // a's [K, M] blocks cannot be folded into one gemm: one gemm per block against the shared b
      p.batch = shape_numel(lead);
      p.M = a_cols;
    } else {
      p.batch = 1;
      p.M = a_rows * shape_numel(lead);
    }
  } else {
    Shape blead(b.shape().begin(), b.shape().end() - 2);
    LMF_CHECK(blead == lead, "matmul: batch dimensions differ: ", a.str(), " and ", b.str());
    p.batched = true;
    p.batch = shape_numel(lead);
    p.M = ta ? a_cols : a_rows;
  }
  p.out_shape = lead;
  p.out_shape.push_back(ta ? a_cols : a_rows);
  p.out_shape.push_back(p.N);
  return p;
}

// C[batch] = op(A) op(B) (+ C when accumulate); A, B, C contiguous.
template <typename T>
void run_matmul(const T* A, const T* B, T* C, int64_t batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
                bool b_shared, bool accumulate) {
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  for (int64_t i = 0; i < batch; ++i) {
    k::gemm<T>(ta, tb, M, N, K, T(1), A + i * M * K, lda, B + (b_shared ? 0 : i * K * N), ldb, accumulate ? T(1) : T(0),
               C + i * M * N, N);
  }
}

}  // namespace

Var matmul(const Var& a, const Var& b, bool ta, bool tb) {
  const DType dt = compute_dtype("matmul", {&a.value(), &b.value()});
  MatmulPlan p = plan_matmul(a.value(), b.value(), ta, tb);
  // Mixed precision: operands and result rounded to bf16/f16 (a bf16 GEMM with f32 accumulation), and so are the
  // gradients the backward computes; f32 master weights are untouched.
  const DType lowp = detail::lowp_dtype(dt);
  Tensor A = prepare(a.value(), dt), B = prepare(b.value(), dt);
  // What backward keeps: activations as (shared) narrow copies; a leaf (the f32 master weight) as itself, rounded
  // again in backward rather than kept twice.
  Tensor sA = keep(a, A), sB = keep(b, B);
  if (lowp != DType::F32) {
    A = sA.dtype() == lowp ? sA.to(DType::F32) : detail::round_through(A, lowp);
    B = sB.dtype() == lowp ? sB.to(DType::F32) : detail::round_through(B, lowp);
  }
  Tensor C = Tensor::empty(p.out_shape, dt);
  LMF_FLOAT_DISPATCH(
      dt, run_matmul<T>(A.data<T>(), B.data<T>(), C.data<T>(), p.batch, p.M, p.N, p.K, ta, tb, !p.batched, false));
  detail::round_in_place(C, lowp);
  Var out(C);
  if (needs_record({&a, &b})) {
    // dA needs B and dB needs A: keep only what a gradient will use.
    if (!b.requires_grad()) sA = Tensor();
    if (!a.requires_grad()) sB = Tensor();
    active_tape()->record(
        "matmul", {out}, [a = a.grad_ref(), b = b.grad_ref(), sA, sB, p, ta, tb, dt, lowp, o = out.impl()] {
          Tensor dY = prepare(o->grad, dt);
          if (lowp != DType::F32) {
            // Round the incoming gradient in place when nothing else holds it (the usual case), else a copy.
            if (dY.storage().use_count() <= 2 && dY.is_contiguous() && dY.offset() == 0) {
              o->grad = Tensor();
              detail::round_in_place(dY, lowp);
            } else {
              dY = detail::round_through(dY, lowp);
            }
          }
          if (a.requires_grad()) {
            const Tensor B = sB.dtype() == dt ? detail::round_through(sB, lowp) : prepare(sB, dt);
            Tensor dA = Tensor::empty(a.shape(), dt);
            // dA = dY op(B)ᵀ, or for a stored transposed: dAᵀ... = op(B) dYᵀ.
            LMF_FLOAT_DISPATCH(dt, {
              const int64_t M = p.M, N = p.N, K = p.K;
              for (int64_t i = 0; i < p.batch; ++i) {
                const T* Bi = B.data<T>() + (p.batched ? i * K * N : 0);
                const T* dYi = dY.data<T>() + i * M * N;
                T* dAi = dA.data<T>() + i * M * K;
                if (!ta) {
                  k::gemm<T>(false, !tb, M, K, N, T(1), dYi, N, Bi, tb ? K : N, T(0), dAi, K);
                } else {
                  k::gemm<T>(tb, true, K, M, N, T(1), Bi, tb ? K : N, dYi, N, T(0), dAi, M);
                }
              }
            });
            detail::round_in_place(dA, lowp);
            a.accumulate_grad(dA);
          }
          if (b.requires_grad()) {
            const Tensor A = sA.dtype() == dt ? detail::round_through(sA, lowp) : prepare(sA, dt);
            Tensor dB = Tensor::empty(b.shape(), dt);
            LMF_FLOAT_DISPATCH(dt, {
              const int64_t M = p.M, N = p.N, K = p.K;
              for (int64_t i = 0; i < p.batch; ++i) {
                const T* Ai = A.data<T>() + i * M * K;
                const T* dYi = dY.data<T>() + i * M * N;
                T* dBi = dB.data<T>() + (p.batched ? i * K * N : 0);
                const T beta = (!p.batched && i > 0) ? T(1) : T(0);  // a shared b sums over a's blocks
                if (!tb) {
                  k::gemm<T>(!ta, false, K, N, M, T(1), Ai, ta ? M : K, dYi, N, beta, dBi, N);
                } else {
                  k::gemm<T>(true, ta, N, K, M, T(1), dYi, N, Ai, ta ? M : K, beta, dBi, K);
                }
              }
            });
            detail::round_in_place(dB, lowp);
            b.accumulate_grad(dB);
          }
        });
  }
  return out;
}

// ---- element-wise ----

namespace {

enum class Bcast { Same, RowVec, Scalar };

Bcast classify(const char* op, const Tensor& a, const Tensor& b) {
  if (a.shape() == b.shape()) return Bcast::Same;
  if (b.numel() == 1) return Bcast::Scalar;
  const Shape& as = a.shape();
  const Shape& bs = b.shape();
  bool suffix = bs.size() <= as.size() && std::equal(bs.begin(), bs.end(), as.end() - static_cast<int64_t>(bs.size()));
  LMF_CHECK(suffix, op, ": shapes ", shape_str(as), " and ", shape_str(bs),
            " do not broadcast (b must match a, a suffix of a's shape, or be one element)");
  return Bcast::RowVec;
}

// The gradient of a broadcast operand: dy summed over the broadcast rows.
Tensor reduce_to(const Tensor& dy, const Shape& shape, DType dt) {
  if (dy.shape() == shape) return dy;
  const int64_t n = shape_numel(shape);
  const int64_t rows = dy.numel() / n;
  Tensor out = Tensor::empty(shape, dt);
  LMF_FLOAT_DISPATCH(dt, k::sum_rows<T>(dy.data<T>(), out.data<T>(), rows, n));
  return out;
}

enum class Arith { Add, Sub, Mul };

Tensor arith(Arith op, const Tensor& A, const Tensor& B, Bcast bc, DType dt) {
  Tensor Y = Tensor::empty(A.shape(), dt);
  const int64_t n = A.numel();
  LMF_FLOAT_DISPATCH(dt, {
    const T* a = A.data<T>();
    const T* b = B.data<T>();
    T* y = Y.data<T>();
    if (bc == Bcast::Same) {
      if (op == Arith::Add) k::add<T>(a, b, y, n);
      if (op == Arith::Sub) k::sub<T>(a, b, y, n);
      if (op == Arith::Mul) k::mul<T>(a, b, y, n);
    } else if (bc == Bcast::Scalar) {
      if (op == Arith::Mul) {
        k::scale<T>(a, b[0], y, n);
      } else {
        Tensor full = Tensor::full(A.shape(), static_cast<double>(b[0]), dt);
        if (op == Arith::Add) k::add<T>(a, full.data<T>(), y, n);
        if (op == Arith::Sub) k::sub<T>(a, full.data<T>(), y, n);
      }
    } else {
      const int64_t m = B.numel();
      if (op == Arith::Mul) {
        k::mul_rowvec<T>(a, b, y, n / m, m);
      } else if (op == Arith::Add) {
        k::add_rowvec<T>(a, b, y, n / m, m);
      } else {
        Tensor neg = Tensor::empty(B.shape(), dt);
        k::scale<T>(b, T(-1), neg.data<T>(), m);
        k::add_rowvec<T>(a, neg.data<T>(), y, n / m, m);
      }
    }
  });
  return Y;
}

Var binary(Arith op, const char* name, const Var& a_in, const Var& b_in) {
  // Commutative ops accept the broadcast operand on either side.
  const bool swap = op != Arith::Sub && a_in.value().numel() < b_in.value().numel();
  const Var& a = swap ? b_in : a_in;
  const Var& b = swap ? a_in : b_in;
  const DType dt = compute_dtype(name, {&a.value(), &b.value()});
  const Bcast bc = classify(name, a.value(), b.value());
  Tensor A = prepare(a.value(), dt), B = prepare(b.value(), dt);
  Var out(arith(op, A, B, bc, dt));
  if (needs_record({&a, &b})) {
    // Save operands only when the gradient needs them (mul).
    const bool mul = op == Arith::Mul;
    Tensor sa = mul && b.requires_grad() ? keep(a, A) : Tensor(), sb = mul && a.requires_grad() ? keep(b, B) : Tensor();
    active_tape()->record(name, {out}, [op, a = a.grad_ref(), b = b.grad_ref(), sa, sb, bc, dt, o = out.impl()] {
      Tensor dY = prepare(o->grad, dt);
      if (a.requires_grad()) {
        a.accumulate_grad(op == Arith::Mul ? arith(Arith::Mul, dY, prepare(sb, dt), bc, dt) : dY);
      }
      if (b.requires_grad()) {
        Tensor g;
        if (op == Arith::Mul) {
          g = reduce_to(arith(Arith::Mul, dY, prepare(sa, dt), Bcast::Same, dt), b.shape(), dt);
        } else {
          g = reduce_to(dY, b.shape(), dt);
          if (op == Arith::Sub) {
            Tensor neg = Tensor::empty(g.shape(), dt);
            LMF_FLOAT_DISPATCH(dt, k::scale<T>(g.data<T>(), T(-1), neg.data<T>(), g.numel()));
            g = neg;
          }
        }
        b.accumulate_grad(g);
      }
    });
  }
  return out;
}

}  // namespace

Var add(const Var& a, const Var& b) {
  return binary(Arith::Add, "add", a, b);
}
Var sub(const Var& a, const Var& b) {
  return binary(Arith::Sub, "sub", a, b);
}
Var mul(const Var& a, const Var& b) {
  return binary(Arith::Mul, "mul", a, b);
}

Var scale(const Var& a, double s) {
  const DType dt = compute_dtype("scale", {&a.value()});
  Tensor A = prepare(a.value(), dt);
  Tensor Y = Tensor::empty(A.shape(), dt);
  LMF_FLOAT_DISPATCH(dt, k::scale<T>(A.data<T>(), static_cast<T>(s), Y.data<T>(), A.numel()));
  Var out(Y);
  if (needs_record({&a})) {
    active_tape()->record("scale", {out}, [a = a.grad_ref(), s, dt, o = out.impl()] {
      Tensor dY = prepare(o->grad, dt);
      Tensor g = Tensor::empty(dY.shape(), dt);
      LMF_FLOAT_DISPATCH(dt, k::scale<T>(dY.data<T>(), static_cast<T>(s), g.data<T>(), g.numel()));
      a.accumulate_grad(g);
    });
  }
  return out;
}

Var sum(const Var& a) {
  const DType dt = compute_dtype("sum", {&a.value()});
  Tensor A = prepare(a.value(), dt);
  double s = 0;
  LMF_FLOAT_DISPATCH(dt, s = k::sum<T>(A.data<T>(), A.numel()));
  Var out(Tensor::full({1}, s, dt));
  if (needs_record({&a})) {
    active_tape()->record("sum", {out}, [a = a.grad_ref(), dt, o = out.impl()] {
      a.accumulate_grad(Tensor::full(a.shape(), o->grad.item(), dt));
    });
  }
  return out;
}

Var mean(const Var& a) {
  const int64_t n = std::max<int64_t>(1, a.value().numel());
  return scale(sum(a), 1.0 / static_cast<double>(n));
}

// ---- shape ----

Var reshape(const Var& a, const Shape& shape) {
  Var out(a.value().reshape(shape));
  if (needs_record({&a})) {
    // A view: ops that save it and ops that save `a` share one narrow copy (see detail::keep).
    if (out.value().storage() == a.value().storage()) out.impl()->view_of = a.impl();
    active_tape()->record("reshape", {out},
                          [a = a.grad_ref(), o = out.impl()] { a.accumulate_grad(o->grad.reshape(a.shape())); });
  }
  return out;
}

Var transpose(const Var& a, int64_t d0, int64_t d1) {
  Var out(a.value().transpose(d0, d1).contiguous());
  if (needs_record({&a})) {
    active_tape()->record("transpose", {out}, [a = a.grad_ref(), d0, d1, o = out.impl()] {
      a.accumulate_grad(o->grad.transpose(d0, d1).contiguous());
    });
  }
  return out;
}

Var slice(const Var& a, int64_t dim, int64_t start, int64_t end) {
  Var out(a.value().slice(dim, start, end).contiguous());
  if (needs_record({&a})) {
    active_tape()->record("slice", {out}, [a = a.grad_ref(), dim, start, end, o = out.impl()] {
      DType dt = o->grad.dtype();
      Tensor g = Tensor::zeros(a.shape(), dt);
      Tensor view = g.slice(dim, start, end);
      view.copy_from(o->grad);
      a.accumulate_grad(g);
    });
  }
  return out;
}

Var concat(const std::vector<Var>& parts, int64_t dim) {
  LMF_CHECK(!parts.empty(), "concat: no inputs");
  const Tensor& first = parts[0].value();
  const int64_t nd = first.dim();
  if (dim < 0) dim += nd;
  LMF_CHECK(dim >= 0 && dim < nd, "concat: dimension out of range for ", first.str());
  Shape shape = first.shape();
  int64_t total = 0;
  for (const Var& p : parts) {
    LMF_CHECK(p.dim() == nd && p.dtype() == first.dtype(), "concat: ", p.value().str(), " does not match ",
              first.str());
    for (int64_t d = 0; d < nd; ++d)
      LMF_CHECK(d == dim || p.shape()[d] == shape[d], "concat: ", p.value().str(), " does not match ", first.str(),
                " outside dimension ", dim);
    total += p.shape()[dim];
  }
  shape[dim] = total;
  Tensor out_t = Tensor::empty(shape, first.dtype());
  int64_t at = 0;
  std::vector<int64_t> starts;
  for (const Var& p : parts) {
    starts.push_back(at);
    Tensor view = out_t.slice(dim, at, at + p.shape()[dim]);
    view.copy_from(p.value());
    at += p.shape()[dim];
  }
  Var out(out_t);
  bool any = false;
  for (const Var& p : parts) any = any || p.requires_grad();
  if (active_tape() && any) {
    std::vector<GradRef> refs;
    for (const Var& p : parts) refs.push_back(p.grad_ref());
    active_tape()->record("concat", {out}, [refs, starts, dim, o = out.impl()] {
      for (size_t i = 0; i < refs.size(); ++i) {
        if (!refs[i].requires_grad()) continue;
        refs[i].accumulate_grad(o->grad.slice(dim, starts[i], starts[i] + refs[i].shape()[dim]).contiguous());
      }
    });
  }
  return out;
}

}  // namespace lmforge::ops
