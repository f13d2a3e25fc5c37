// GEMM on OpenBLAS, parallelised by our own pool: OpenBLAS runs single-threaded and each pool thread multiplies
// a block of rows (or columns) of C. One pool, no oversubscription (docs/ENGINE.md has the measurement).
#include <cblas.h>

#include <algorithm>
#include <mutex>

#include "lmforge/kernels/cpu.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge::kernels::cpu {

namespace {

std::once_flag g_blas_init;
void ensure_blas_single_threaded() {
  std::call_once(g_blas_init, [] { openblas_set_num_threads(1); });
}

inline void blas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
              alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}
inline void blas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                 const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
              alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

inline void gemv(bool trans, int64_t rows, int64_t cols, float alpha, const float* A, int64_t lda, const float* x,
                 float beta, float* y) {
  cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, (int)rows, (int)cols, alpha, A, (int)lda, x, 1, beta, y,
              1);
}
inline void gemv(bool trans, int64_t rows, int64_t cols, double alpha, const double* A, int64_t lda, const double* x,
                 double beta, double* y) {
  cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, (int)rows, (int)cols, alpha, A, (int)lda, x, 1, beta, y,
              1);
}

// C = beta * C when K == 0 (BLAS leaves C alone only for beta == 1).
template <typename T>
void scale_only(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : C[i * ldc + j] * beta;
}

}  // namespace

void blas_set_threads(int n) {
  ensure_blas_single_threaded();
  openblas_set_num_threads(std::max(1, n));
}

template <typename T>
void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                 int64_t ldb, T beta, T* C, int64_t ldc) {
  ensure_blas_single_threaded();
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, beta, C, ldc);
  blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  ensure_blas_single_threaded();
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, beta, C, ldc);
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.num_threads();
  if (M == 1 && !ta) {
    // A row vector times a matrix (decode): bandwidth-bound, and sgemm's packing wastes most of it. Each thread
    // runs gemv over its own slice of the output, reading only its slice of B (measured 2.8-3.7x over sgemm).
    auto slice = [&](int64_t n0, int64_t n1) {
      if (tb) {  // y[n] = sum_k B[n, k] x[k]: rows n0..n1 of B
        gemv(false, n1 - n0, K, alpha, B + n0 * ldb, ldb, A, beta, C + n0);
      } else {  // y[n] = sum_k x[k] B[k, n]: columns n0..n1 of B
        gemv(true, K, n1 - n0, alpha, B + n0, ldb, A, beta, C + n0);
      }
    };
    if (threads == 1 || pool.in_parallel_region() || N * K < (1 << 16)) {
      slice(0, N);
    } else {
      pool.parallel_for(N, 64, slice);
    }
    return;
  }
  const double flops = 2.0 * static_cast<double>(M) * N * K;
  if (threads == 1 || pool.in_parallel_region() || flops < 4.0e6) {
    blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the larger of M and N into one panel per thread, in multiples of 16 so panels stay kernel-aligned.
  const bool split_m = M >= N;
  const int64_t dim = split_m ? M : N;
  const int64_t align = 16;
  const int64_t units = (dim + align - 1) / align;
  const int64_t parts = std::min<int64_t>(threads, units);
  pool.parallel_for(parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = std::min(dim, units * p / parts * align);
      const int64_t e = std::min(dim, units * (p + 1) / parts * align);
      if (b >= e) continue;
      if (split_m) {
        const T* Ap = ta ? A + b : A + b * lda;
        blas(ta, tb, e - b, N, K, alpha, Ap, lda, B, ldb, beta, C + b * ldc, ldc);
      } else {
        const T* Bp = tb ? B + b * ldb : B + b;
        blas(ta, tb, M, e - b, K, alpha, A, lda, Bp, ldb, beta, C + b, ldc);
      }
    }
  });
}

#define LMF_INSTANTIATE_GEMM(T)                                                                                       \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, T*,        \
                        int64_t);                                                                                     \
  template void gemm_serial<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, T*, \
                               int64_t);
LMF_INSTANTIATE_GEMM(float)
LMF_INSTANTIATE_GEMM(double)

}  // namespace lmforge::kernels::cpu
