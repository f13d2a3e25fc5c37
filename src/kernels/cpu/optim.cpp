// Fused optimizer steps: one pass over parameter, gradient and state, in the order PyTorch applies them so the
// weights match torch.optim step for step.
#include <cmath>

#include "kernels/cpu/multiversion.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge::kernels::cpu {

namespace {
template <typename T>
LMF_ALWAYS_INLINE void adamw_impl(T* p, const T* g, T* m, T* v, int64_t n, T lr, T b1, T b2, T eps, T decay,
                                  T step_size, T inv_sqrt_bc2) {
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T pi = p[i] * decay;
    const T mi = b1 * m[i] + (T(1) - b1) * gi;
    const T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}
LMF_MULTIVERSION_T(void, adamw_mv, adamw_impl,
                   (T * p, const T* g, T* m, T* v, int64_t n, T lr, T b1, T b2, T eps, T decay, T step_size,
                    T inv_sqrt_bc2),
                   (p, g, m, v, n, lr, b1, b2, eps, decay, step_size, inv_sqrt_bc2))

template <typename T>
LMF_ALWAYS_INLINE void sgd_impl(T* p, const T* g, T* buf, int64_t n, T lr, T mom, T damp, T wd, bool nesterov,
                                bool first) {
  for (int64_t i = 0; i < n; ++i) {
    T gi = g[i] + wd * p[i];
    T b = first ? gi : mom * buf[i] + (T(1) - damp) * gi;
    buf[i] = b;
    p[i] -= lr * (nesterov ? gi + mom * b : b);
  }
}
LMF_MULTIVERSION_T(void, sgd_mv, sgd_impl,
                   (T * p, const T* g, T* buf, int64_t n, T lr, T mom, T damp, T wd, bool nesterov, bool first),
                   (p, g, buf, n, lr, mom, damp, wd, nesterov, first))

constexpr int64_t kGrain = 1 << 14;
}  // namespace

template <typename T>
void adamw(T* p, const T* g, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
           double weight_decay, int64_t step) {
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const T decay = static_cast<T>(1.0 - lr * weight_decay);
  const T step_size = static_cast<T>(lr / bc1);
  const T inv_sqrt_bc2 = static_cast<T>(1.0 / std::sqrt(bc2));
  parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    adamw_mv<T>(p + s, g + s, m + s, v + s, e - s, static_cast<T>(lr), static_cast<T>(beta1), static_cast<T>(beta2),
                static_cast<T>(eps), decay, step_size, inv_sqrt_bc2);
  });
}

template <typename T>
void sgd(T* p, const T* g, T* buf, int64_t n, double lr, double momentum, double dampening, double weight_decay,
         bool nesterov, bool first_step) {
  parallel_for(n, kGrain, [&](int64_t s, int64_t e) {
    sgd_mv<T>(p + s, g + s, buf + s, e - s, static_cast<T>(lr), static_cast<T>(momentum), static_cast<T>(dampening),
              static_cast<T>(weight_decay), nesterov, first_step);
  });
}

template void adamw<float>(float*, const float*, float*, float*, int64_t, double, double, double, double, double,
                           int64_t);
template void adamw<double>(double*, const double*, double*, double*, int64_t, double, double, double, double, double,
                            int64_t);
template void sgd<float>(float*, const float*, float*, int64_t, double, double, double, double, bool, bool);
template void sgd<double>(double*, const double*, double*, int64_t, double, double, double, double, bool, bool);

}  // namespace lmforge::kernels::cpu
