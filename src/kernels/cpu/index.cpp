// Indexing kernels for embeddings and MoE routing: row gather, deterministic scatter-add, top-k.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge::kernels::cpu {

template <typename T>
void gather_rows(const T* x, const int32_t* idx, T* y, int64_t m, int64_t d) {
  parallel_for(m, std::max<int64_t>(1, 4096 / std::max<int64_t>(d, 1)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) std::memcpy(y + i * d, x + static_cast<int64_t>(idx[i]) * d, sizeof(T) * d);
  });
}

template <typename T>
void scatter_add_rows(T* dst, const int32_t* idx, const T* src, int64_t m, int64_t d) {
  // Split columns, not rows: every destination element is summed by one thread in source order, so duplicate
  // indices neither race nor change the result with the thread count.
  parallel_for(d, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < m; ++i) {
      T* out = dst + static_cast<int64_t>(idx[i]) * d;
      const T* in = src + i * d;
      for (int64_t c = c0; c < c1; ++c) out[c] += in[c];
    }
  });
}

template <typename T>
void topk(const T* x, T* values, int32_t* indices, int64_t rows, int64_t n, int64_t k) {
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<int32_t> order(static_cast<size_t>(n));
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * n;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int32_t a, int32_t b) { return xr[a] > xr[b] || (xr[a] == xr[b] && a < b); });
      for (int64_t j = 0; j < k; ++j) {
        indices[r * k + j] = order[j];
        values[r * k + j] = xr[order[j]];
      }
    }
  });
}

#define LMF_INST(T)                                                                  \
  template void gather_rows<T>(const T*, const int32_t*, T*, int64_t, int64_t);      \
  template void scatter_add_rows<T>(T*, const int32_t*, const T*, int64_t, int64_t); \
  template void topk<T>(const T*, T*, int32_t*, int64_t, int64_t, int64_t);
LMF_INST(float)
LMF_INST(double)

}  // namespace lmforge::kernels::cpu
