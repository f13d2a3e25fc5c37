// Layer ops: embedding, RMSNorm, RoPE, activations, softmax, attention, cross-entropy, and MoE routing helpers.
#include <cmath>

#include "core/ops_util.h"
#include "lmforge/core/ops.h"

namespace lmforge::ops {

using detail::check_ids;
using detail::compute_dtype;
using detail::keep;
using detail::keep_output;
using detail::prepare;
namespace k = kernels::cpu;

// ---- embedding ----

Var embedding(const Var& weight, const Tensor& ids_in) {
  check_ids("embedding", ids_in);
  LMF_CHECK(weight.dim() == 2, "embedding: weight must be [vocab, dim], got ", weight.value().str());
  const DType dt = compute_dtype("embedding", {&weight.value()});
  const int64_t V = weight.size(0), D = weight.size(1);
  Tensor ids = ids_in.contiguous();
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    LMF_CHECK(id[i] >= 0 && id[i] < V, "embedding: token id ", id[i], " at position ", i,
              " is outside the vocabulary [0, ", V, ")");
  Tensor W = prepare(weight.value(), dt);
  Shape shape = ids.shape();
  shape.push_back(D);
  Tensor Y = Tensor::empty(shape, dt);
  LMF_FLOAT_DISPATCH(dt, k::gather_rows<T>(W.data<T>(), id, Y.data<T>(), ids.numel(), D));
  Var out(Y);
  if (needs_record({&weight})) {
    active_tape()->record("embedding", {out}, [weight = weight.grad_ref(), ids, dt, V, D, o = out.impl()] {
      Tensor dY = prepare(o->grad, dt);
      Tensor g = Tensor::zeros({V, D}, dt);
      LMF_FLOAT_DISPATCH(dt, k::scatter_add_rows<T>(g.data<T>(), ids.data<int32_t>(), dY.data<T>(), ids.numel(), D));
      weight.accumulate_grad(g);
    });
  }
  return out;
}

// ---- rmsnorm ----

Var rmsnorm(const Var& x, const Var& w, double eps) {
  const DType dt = compute_dtype("rmsnorm", {&x.value(), &w.value()});
  LMF_CHECK(w.dim() == 1 && x.size(-1) == w.size(0), "rmsnorm: weight ", w.value().str(),
            " does not match the last dimension of ", x.value().str());
  Tensor X = prepare(x.value(), dt), W = prepare(w.value(), dt);
  const int64_t d = w.size(0), rows = X.numel() / std::max<int64_t>(d, 1);
  Tensor Y = Tensor::empty(X.shape(), dt), R = Tensor::empty({rows}, dt);
  LMF_FLOAT_DISPATCH(dt, k::rmsnorm<T>(X.data<T>(), W.data<T>(), Y.data<T>(), R.data<T>(), rows, d, eps));
  Var out(Y);
  if (needs_record({&x, &w})) {
    active_tape()->record(
        "rmsnorm", {out},
        [x = x.grad_ref(), w = w.grad_ref(), sX = keep(x, X), sW = keep(w, W), R, rows, d, dt, o = out.impl()] {
          Tensor dY = prepare(o->grad, dt);
          const Tensor X = prepare(sX, dt), W = prepare(sW, dt);
          Tensor dX = Tensor::empty(X.shape(), dt), dW = Tensor::zeros({d}, dt);
          LMF_FLOAT_DISPATCH(dt, k::rmsnorm_backward<T>(dY.data<T>(), X.data<T>(), W.data<T>(), R.data<T>(),
                                                        dX.data<T>(), dW.data<T>(), rows, d));
          x.accumulate_grad(dX);
          w.accumulate_grad(dW);
        });
  }
  return out;
}

// ---- rope ----

std::pair<Tensor, Tensor> rope_tables(int64_t T_, int64_t rot, double theta, int64_t pos0, DType dtype) {
  LMF_CHECK(rot > 0 && rot % 2 == 0, "rope: rotary dimension must be even and positive, got ", rot);
  const int64_t half = rot / 2;
  std::vector<double> c(static_cast<size_t>(T_ * half)), s(c.size());
  for (int64_t t = 0; t < T_; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(rot));
      const double ang = static_cast<double>(pos0 + t) * inv_freq;
      c[t * half + i] = std::cos(ang);
      s[t * half + i] = std::sin(ang);
    }
  }
  Tensor ct = Tensor::from_vector(c, {T_, half}), st = Tensor::from_vector(s, {T_, half});
  return {ct.to(dtype), st.to(dtype)};
}

Var rope(const Var& x, const Tensor& cos, const Tensor& sin, k::RopeLayout layout) {
  LMF_CHECK(x.dim() == 4, "rope: expected x of shape [B, T, H, D], got ", x.value().str());
  const DType dt = compute_dtype("rope", {&x.value()});
  const int64_t B = x.size(0), Tn = x.size(1), H = x.size(2), D = x.size(3);
  LMF_CHECK(cos.dim() == 2 && cos.shape() == sin.shape() && cos.size(0) == Tn && 2 * cos.size(1) <= D,
            "rope: cos/sin tables ", cos.str(), " / ", sin.str(), " do not fit x ", x.value().str());
  const int64_t rot = 2 * cos.size(1);
  Tensor X = prepare(x.value(), dt), C = prepare(cos, dt), S = prepare(sin, dt);
  Tensor Y = Tensor::empty(X.shape(), dt);
  LMF_FLOAT_DISPATCH(dt,
                     k::rope<T>(X.data<T>(), Y.data<T>(), C.data<T>(), S.data<T>(), B, Tn, H, D, rot, layout, false));
  Var out(Y);
  if (needs_record({&x})) {
    active_tape()->record("rope", {out}, [x = x.grad_ref(), C, S, B, Tn, H, D, rot, layout, dt, o = out.impl()] {
      Tensor dY = prepare(o->grad, dt);
      Tensor dX = Tensor::empty(dY.shape(), dt);
      LMF_FLOAT_DISPATCH(
          dt, k::rope<T>(dY.data<T>(), dX.data<T>(), C.data<T>(), S.data<T>(), B, Tn, H, D, rot, layout, true));
      x.accumulate_grad(dX);
    });
  }
  return out;
}

// ---- activations ----

Var silu(const Var& x) {
  const DType dt = compute_dtype("silu", {&x.value()});
  Tensor X = prepare(x.value(), dt);
  Tensor Y = Tensor::empty(X.shape(), dt);
  LMF_FLOAT_DISPATCH(dt, k::silu<T>(X.data<T>(), Y.data<T>(), X.numel()));
  Var out(Y);
  if (needs_record({&x})) {
    active_tape()->record("silu", {out}, [x = x.grad_ref(), sX = keep(x, X), dt, o = out.impl()] {
      Tensor dY = prepare(o->grad, dt);
      const Tensor X = prepare(sX, dt);
      Tensor dX = Tensor::empty(X.shape(), dt);
      LMF_FLOAT_DISPATCH(dt, k::silu_backward<T>(X.data<T>(), dY.data<T>(), dX.data<T>(), X.numel()));
      x.accumulate_grad(dX);
    });
  }
  return out;
}

Var swiglu(const Var& gate, const Var& up) {
  const DType dt = compute_dtype("swiglu", {&gate.value(), &up.value()});
  LMF_CHECK(gate.shape() == up.shape(), "swiglu: gate ", gate.value().str(), " and up ", up.value().str(),
            " differ in shape");
  Tensor G = prepare(gate.value(), dt), U = prepare(up.value(), dt);
  Tensor Y = Tensor::empty(G.shape(), dt);
  LMF_FLOAT_DISPATCH(dt, k::swiglu<T>(G.data<T>(), U.data<T>(), Y.data<T>(), G.numel()));
  detail::round_in_place(Y, detail::lowp_dtype(dt));  // an element-wise op on bf16/f16 inputs
  Var out(Y);
  if (needs_record({&gate, &up})) {
    active_tape()->record(
        "swiglu", {out},
        [gate = gate.grad_ref(), up = up.grad_ref(), sG = keep(gate, G), sU = keep(up, U), dt, o = out.impl()] {
          Tensor dY = prepare(o->grad, dt);
          const Tensor G = prepare(sG, dt), U = prepare(sU, dt);
          Tensor dG = Tensor::empty(G.shape(), dt), dU = Tensor::empty(U.shape(), dt);
          LMF_FLOAT_DISPATCH(
              dt, k::swiglu_backward<T>(G.data<T>(), U.data<T>(), dY.data<T>(), dG.data<T>(), dU.data<T>(), G.numel()));
          gate.accumulate_grad(dG);
          up.accumulate_grad(dU);
        });
  }
  return out;
}

Var softmax(const Var& x) {
  const DType dt = compute_dtype("softmax", {&x.value()});
  Tensor X = prepare(x.value(), dt);
  const int64_t n = X.size(-1), rows = X.numel() / std::max<int64_t>(n, 1);
  Tensor Y = Tensor::empty(X.shape(), dt);
  LMF_FLOAT_DISPATCH(dt, k::softmax<T>(X.data<T>(), Y.data<T>(), rows, n));
  Var out(Y);
  if (needs_record({&x})) {
    active_tape()->record("softmax", {out}, [x = x.grad_ref(), sY = keep_output(out, Y), rows, n, dt, o = out.impl()] {
      Tensor dY = prepare(o->grad, dt);
      const Tensor Y = prepare(sY, dt);
      Tensor dX = Tensor::empty(Y.shape(), dt);
      LMF_FLOAT_DISPATCH(dt, k::softmax_backward<T>(Y.data<T>(), dY.data<T>(), dX.data<T>(), rows, n));
      x.accumulate_grad(dX);
    });
  }
  return out;
}

// ---- attention ----

Var attention(const Var& q, const Var& kk, const Var& v, const AttentionOptions& opt) {
  const DType dt = compute_dtype("attention", {&q.value(), &kk.value(), &v.value()});
  LMF_CHECK(q.dim() == 4 && kk.dim() == 4 && v.dim() == 4, "attention: expected q, k, v of shape [B, T, H, D], got ",
            q.value().str(), ", ", kk.value().str(), ", ", v.value().str());
  k::AttentionDims d;
  d.B = q.size(0);
  d.Tq = q.size(1);
  d.Hq = q.size(2);
  d.Dk = q.size(3);
  d.Tk = kk.size(1);
  d.Hkv = kk.size(2);
  d.Dv = v.size(3);
  LMF_CHECK(kk.size(0) == d.B && v.size(0) == d.B && kk.size(3) == d.Dk && v.size(1) == d.Tk && v.size(2) == d.Hkv,
            "attention: q ", q.value().str(), ", k ", kk.value().str(), ", v ", v.value().str(), " do not agree");
  LMF_CHECK(d.Hkv > 0 && d.Hq % d.Hkv == 0, "attention: ", d.Hq, " query heads are not a multiple of ", d.Hkv,
            " key/value heads");
  LMF_CHECK(opt.window >= 0 && opt.q_offset >= 0, "attention: window and q_offset must be >= 0");
  d.causal = opt.causal;
  d.window = opt.window;
  d.q_offset = opt.q_offset;
  d.scale = opt.scale > 0 ? opt.scale : 1.0 / std::sqrt(static_cast<double>(d.Dk));
  Tensor Q = prepare(q.value(), dt), K = prepare(kk.value(), dt), Vt = prepare(v.value(), dt);
  Tensor O = Tensor::empty({d.B, d.Tq, d.Hq, d.Dv}, dt), L = Tensor::empty({d.B, d.Hq, d.Tq}, dt);
  LMF_FLOAT_DISPATCH(dt, k::attention<T>(d, Q.data<T>(), K.data<T>(), Vt.data<T>(), O.data<T>(), L.data<T>()));
  detail::round_in_place(O, detail::lowp_dtype(dt));  // bf16/f16 attention output under mixed precision
  Var out(O);
  if (needs_record({&q, &kk, &v})) {
    active_tape()->record("attention", {out},
                          [q = q.grad_ref(), kk = kk.grad_ref(), v = v.grad_ref(), sQ = keep(q, Q), sK = keep(kk, K),
                           sV = keep(v, Vt), sO = keep_output(out, O), L, d, dt, o = out.impl()] {
                            Tensor dO = prepare(o->grad, dt);
                            const Tensor Q = prepare(sQ, dt), K = prepare(sK, dt), Vt = prepare(sV, dt),
                                         O = prepare(sO, dt);
                            Tensor dQ = Tensor::empty(Q.shape(), dt), dK = Tensor::empty(K.shape(), dt),
                                   dV = Tensor::empty(Vt.shape(), dt);
                            LMF_FLOAT_DISPATCH(dt, k::attention_backward<T>(d, Q.data<T>(), K.data<T>(), Vt.data<T>(),
                                                                            O.data<T>(), L.data<T>(), dO.data<T>(),
                                                                            dQ.data<T>(), dK.data<T>(), dV.data<T>()));
                            q.accumulate_grad(dQ);
                            kk.accumulate_grad(dK);
                            v.accumulate_grad(dV);
                          });
  }
  return out;
}

// ---- cross-entropy ----

Var cross_entropy(const Var& logits, const Tensor& targets_in, int32_t ignore_index) {
  check_ids("cross_entropy", targets_in);
  const DType dt = compute_dtype("cross_entropy", {&logits.value()});
  LMF_CHECK(logits.dim() >= 1, "cross_entropy: logits must have a vocabulary dimension");
  const int64_t V = logits.size(-1), rows = logits.value().numel() / std::max<int64_t>(V, 1);
  LMF_CHECK(targets_in.numel() == rows, "cross_entropy: ", targets_in.str(), " targets for logits ",
            logits.value().str());
  Tensor targets = targets_in.contiguous();
  const int32_t* t = targets.data<int32_t>();
  int64_t valid = 0;
  for (int64_t i = 0; i < rows; ++i) {
    if (t[i] == ignore_index) continue;
    LMF_CHECK(t[i] >= 0 && t[i] < V, "cross_entropy: target ", t[i], " at row ", i, " is outside [0, ", V, ")");
    ++valid;
  }
  Tensor X = prepare(logits.value(), dt);
  Tensor loss_rows = Tensor::empty({rows}, dt), lse = Tensor::empty({rows}, dt);
  double total = 0;
  LMF_FLOAT_DISPATCH(dt, {
    k::cross_entropy<T>(X.data<T>(), t, loss_rows.data<T>(), lse.data<T>(), rows, V, ignore_index);
    total = k::sum<T>(loss_rows.data<T>(), rows);
  });
  // All targets ignored: the loss is 0 with zero gradients (PyTorch would give NaN; a NaN here would only trip
  // the training loop's NaN guard on a harmless batch).
  const double denom = valid > 0 ? static_cast<double>(valid) : 1.0;
  Var out(Tensor::full({1}, total / denom, dt));
  if (needs_record({&logits})) {
    active_tape()->record(
        "cross_entropy", {out},
        [logits = logits.grad_ref(), sX = keep(logits, X), targets, lse, rows, V, denom, ignore_index, dt,
         o = out.impl()] {
          const double g = o->grad.item() / denom;
          Tensor dX = Tensor::empty(sX.shape(), dt);
          // Narrow saved logits are widened a block of rows at a time, not all at once: this is the step's
          // memory peak (the whole [tokens, vocab] gradient is being made).
          const int64_t block = sX.dtype() == dt ? rows : std::max<int64_t>(1, (int64_t{1} << 21) / V);
          for (int64_t r0 = 0; r0 < rows; r0 += block) {
            const int64_t n = std::min(block, rows - r0);
            const Tensor X = prepare(sX.view({rows, V}).slice(0, r0, r0 + n), dt);
            LMF_FLOAT_DISPATCH(
                dt, k::cross_entropy_backward<T>(X.data<T>(), targets.data<int32_t>() + r0, lse.data<T>() + r0,
                                                 static_cast<T>(g), dX.data<T>() + r0 * V, n, V, ignore_index));
          }
          logits.accumulate_grad(dX.view(logits.shape()));
        });
  }
  return out;
}

// ---- routing ----

std::pair<Var, Tensor> topk(const Var& x, int64_t kk) {
  const DType dt = compute_dtype("topk", {&x.value()});
  LMF_CHECK(x.dim() == 2, "topk: expected [rows, n], got ", x.value().str());
  const int64_t rows = x.size(0), n = x.size(1);
  LMF_CHECK(kk >= 1 && kk <= n, "topk: k = ", kk, " is outside [1, ", n, "]");
  Tensor X = prepare(x.value(), dt);
  Tensor vals = Tensor::empty({rows, kk}, dt), idx = Tensor::empty({rows, kk}, DType::I32);
  LMF_FLOAT_DISPATCH(dt, k::topk<T>(X.data<T>(), vals.data<T>(), idx.data<int32_t>(), rows, n, kk));
  Var out(vals);
  if (needs_record({&x})) {
    active_tape()->record("topk", {out}, [x = x.grad_ref(), idx, rows, n, kk, dt, o = out.impl()] {
      Tensor dV = prepare(o->grad, dt);
      Tensor g = Tensor::zeros({rows, n}, dt);
      LMF_FLOAT_DISPATCH(dt, {
        const int32_t* ix = idx.data<int32_t>();
        const T* dv = dV.data<T>();
        T* gp = g.data<T>();
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < kk; ++j) gp[r * n + ix[r * kk + j]] += dv[r * kk + j];
      });
      x.accumulate_grad(g);
    });
  }
  return {out, idx};
}

Var gather_rows(const Var& x, const Tensor& idx_in) {
  check_ids("gather_rows", idx_in);
  const DType dt = compute_dtype("gather_rows", {&x.value()});
  LMF_CHECK(x.dim() == 2, "gather_rows: expected x of shape [rows, dim], got ", x.value().str());
  const int64_t N = x.size(0), D = x.size(1);
  Tensor idx = idx_in.contiguous();
  const int64_t M = idx.numel();
  const int32_t* ix = idx.data<int32_t>();
  for (int64_t i = 0; i < M; ++i)
    LMF_CHECK(ix[i] >= 0 && ix[i] < N, "gather_rows: index ", ix[i], " at ", i, " is outside [0, ", N, ")");
  Tensor X = prepare(x.value(), dt);
  Tensor Y = Tensor::empty({M, D}, dt);
  LMF_FLOAT_DISPATCH(dt, k::gather_rows<T>(X.data<T>(), ix, Y.data<T>(), M, D));
  Var out(Y);
  if (needs_record({&x})) {
    active_tape()->record("gather_rows", {out}, [x = x.grad_ref(), idx, N, M, D, dt, o = out.impl()] {
      Tensor dY = prepare(o->grad, dt);
      Tensor g = Tensor::zeros({N, D}, dt);
      LMF_FLOAT_DISPATCH(dt, k::scatter_add_rows<T>(g.data<T>(), idx.data<int32_t>(), dY.data<T>(), M, D));
      x.accumulate_grad(g);
    });
  }
  return out;
}

Var scatter_add_rows(const Var& src, const Tensor& idx_in, int64_t rows) {
  check_ids("scatter_add_rows", idx_in);
  const DType dt = compute_dtype("scatter_add_rows", {&src.value()});
  LMF_CHECK(src.dim() == 2, "scatter_add_rows: expected src of shape [m, dim], got ", src.value().str());
  const int64_t M = src.size(0), D = src.size(1);
  Tensor idx = idx_in.contiguous();
  LMF_CHECK(idx.numel() == M, "scatter_add_rows: ", idx.str(), " indices for ", src.value().str());
  const int32_t* ix = idx.data<int32_t>();
  for (int64_t i = 0; i < M; ++i)
    LMF_CHECK(ix[i] >= 0 && ix[i] < rows, "scatter_add_rows: index ", ix[i], " at ", i, " is outside [0, ", rows, ")");
  Tensor S = prepare(src.value(), dt);
  Tensor Y = Tensor::zeros({rows, D}, dt);
  LMF_FLOAT_DISPATCH(dt, k::scatter_add_rows<T>(Y.data<T>(), ix, S.data<T>(), M, D));
  Var out(Y);
  if (needs_record({&src})) {
    active_tape()->record("scatter_add_rows", {out}, [src = src.grad_ref(), idx, M, D, dt, o = out.impl()] {
      Tensor dY = prepare(o->grad, dt);
      Tensor g = Tensor::empty({M, D}, dt);
      LMF_FLOAT_DISPATCH(dt, k::gather_rows<T>(dY.data<T>(), idx.data<int32_t>(), g.data<T>(), M, D));
      src.accumulate_grad(g);
    });
  }
  return out;
}

Var scale_rows(const Var& x, const Var& w) {
  const DType dt = compute_dtype("scale_rows", {&x.value(), &w.value()});
  LMF_CHECK(x.dim() == 2 && w.value().numel() == x.size(0) && (w.dim() == 1 || (w.dim() == 2 && w.size(1) == 1)),
            "scale_rows: weights ", w.value().str(), " do not give one value per row of ", x.value().str());
  const int64_t M = x.size(0), D = x.size(1);
  Tensor X = prepare(x.value(), dt), Wt = prepare(w.value(), dt);
  Tensor Y = Tensor::empty({M, D}, dt);
  LMF_FLOAT_DISPATCH(dt, {
    const T* xp = X.data<T>();
    const T* wp = Wt.data<T>();
    T* yp = Y.data<T>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t d = 0; d < D; ++d) yp[m * D + d] = xp[m * D + d] * wp[m];
  });
  Var out(Y);
  if (needs_record({&x, &w})) {
    active_tape()->record(
        "scale_rows", {out},
        [x = x.grad_ref(), w = w.grad_ref(), sX = keep(x, X), sW = keep(w, Wt), M, D, dt, o = out.impl()] {
          Tensor dY = prepare(o->grad, dt);
          const Tensor X = prepare(sX, dt), Wt = prepare(sW, dt);
          Tensor dX = Tensor::empty({M, D}, dt), dW = Tensor::empty(w.shape(), dt);
          LMF_FLOAT_DISPATCH(dt, {
            const T* g = dY.data<T>();
            const T* xp = X.data<T>();
            const T* wp = Wt.data<T>();
            T* dx = dX.data<T>();
            T* dw = dW.data<T>();
            for (int64_t m = 0; m < M; ++m) {
              T acc = 0;
              for (int64_t d = 0; d < D; ++d) {
                dx[m * D + d] = g[m * D + d] * wp[m];
                acc += g[m * D + d] * xp[m * D + d];
              }
              dw[m] = acc;
            }
          });
          if (x.requires_grad()) x.accumulate_grad(dX);
          if (w.requires_grad()) w.accumulate_grad(dW);
        });
  }
  return out;
}

}  // namespace lmforge::ops
