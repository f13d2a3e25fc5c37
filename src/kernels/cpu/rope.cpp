// Rotary position embedding. Half-split pairs (i, i + rot/2) as HF Llama's rotate_half; interleaved pairs
// (2i, 2i+1) as the original RoFormer and DeepSeek's checkpoints.
#include "kernels/cpu/multiversion.h"
#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge::kernels::cpu {

namespace {
template <typename T>
LMF_ALWAYS_INLINE void rope_rows_impl(const T* x, T* y, const T* cos, const T* sin, int64_t row0, int64_t row1,
                                      int64_t Tn, int64_t H, int64_t D, int64_t rot, bool interleaved, bool inverse) {
  const int64_t half = rot / 2;
  const T sgn = inverse ? T(-1) : T(1);
  for (int64_t row = row0; row < row1; ++row) {  // row = (b * Tn + t) * H + h
    const int64_t t = (row / H) % Tn;
    const T* c = cos + t * half;
    const T* s = sin + t * half;
    const T* xr = x + row * D;
    T* yr = y + row * D;
    if (interleaved) {
      for (int64_t i = 0; i < half; ++i) {
        const T a = xr[2 * i], b = xr[2 * i + 1], si = sgn * s[i];
        yr[2 * i] = a * c[i] - b * si;
        yr[2 * i + 1] = b * c[i] + a * si;
      }
    } else {
      for (int64_t i = 0; i < half; ++i) {
        const T a = xr[i], b = xr[i + half], si = sgn * s[i];
        yr[i] = a * c[i] - b * si;
        yr[i + half] = b * c[i] + a * si;
      }
    }
    for (int64_t i = rot; i < D; ++i) yr[i] = xr[i];
  }
}
LMF_MULTIVERSION_T(void, rope_rows, rope_rows_impl,
                   (const T* x, T* y, const T* cos, const T* sin, int64_t row0, int64_t row1, int64_t Tn, int64_t H,
                    int64_t D, int64_t rot, bool interleaved, bool inverse),
                   (x, y, cos, sin, row0, row1, Tn, H, D, rot, interleaved, inverse))
}  // namespace

template <typename T>
void rope(const T* x, T* y, const T* cos, const T* sin, int64_t B, int64_t Tn, int64_t H, int64_t D, int64_t rot,
          RopeLayout layout, bool inverse) {
  const bool inter = layout == RopeLayout::Interleaved;
  parallel_for(B * Tn * H, std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1)),
               [&](int64_t r0, int64_t r1) { rope_rows<T>(x, y, cos, sin, r0, r1, Tn, H, D, rot, inter, inverse); });
}

template void rope<float>(const float*, float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                          RopeLayout, bool);
template void rope<double>(const double*, double*, const double*, const double*, int64_t, int64_t, int64_t, int64_t,
                           int64_t, RopeLayout, bool);

}  // namespace lmforge::kernels::cpu
