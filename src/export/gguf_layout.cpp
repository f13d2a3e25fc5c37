#include "gguf_layout.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "lmforge/core/error.h"

namespace lmforge::exporter {

namespace {

// Row r_out of the result is row src_row(r_out) of `t`, rows being the first dimension; any dtype (q8_0 / q4_0
// rows move as whole rows of blocks), kept.
template <typename F>
Tensor gather_rows(const Tensor& t, F src_row) {
  Tensor in = t.contiguous();
  Tensor out = Tensor::empty(in.shape(), in.dtype());
  const int64_t rows = in.size(0);
  const size_t row_bytes = in.nbytes() / static_cast<size_t>(rows);
  const auto* s = static_cast<const unsigned char*>(in.raw_data());
  auto* d = static_cast<unsigned char*>(out.raw_data());
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(d + static_cast<size_t>(r) * row_bytes, s + static_cast<size_t>(src_row(r)) * row_bytes, row_bytes);
  return out;
}

void check_heads(const Tensor& t, int64_t n_head) {
  LMF_CHECK(n_head > 0 && t.dim() >= 1 && t.size(0) % (2 * n_head) == 0, "Q/K permutation: ", t.str(),
            " rows are not a multiple of 2 x ", n_head, " heads");
}

}  // namespace

Tensor permute_qk_to_gguf(const Tensor& t, int64_t n_head) {
  check_heads(t, n_head);
  const int64_t d = t.size(0) / n_head, half = d / 2;
  return gather_rows(t, [=](int64_t r) {
    const int64_t h = r / d, k = r % d, i = k / 2, j = k % 2;
    return h * d + j * half + i;
  });
}

Tensor unpermute_qk_from_gguf(const Tensor& t, int64_t n_head) {
  check_heads(t, n_head);
  const int64_t d = t.size(0) / n_head;
  return gather_rows(t, [=](int64_t r) { return gguf_qk_row(r, d); });
}

void split_kv_b(const Tensor& kv_b, int64_t n_head, int64_t nope, int64_t v, Tensor& k_b, Tensor& v_b) {
  LMF_CHECK(kv_b.dim() == 2 && kv_b.size(0) == n_head * (nope + v), "kv_b_proj ", kv_b.str(), " is not [", n_head,
            " * (", nope, " + ", v, "), r]");
  const int64_t r = kv_b.size(1);
  Tensor t = kv_b.to(DType::F32).contiguous().view({n_head, nope + v, r});
  k_b = t.slice(1, 0, nope).transpose(1, 2).contiguous();  // [H, r, nope]
  v_b = t.slice(1, nope, nope + v).contiguous();           // [H, v, r]
}

Tensor join_kv_b(const Tensor& k_b, const Tensor& v_b) {
  LMF_CHECK(k_b.dim() == 3 && v_b.dim() == 3 && k_b.size(0) == v_b.size(0) && k_b.size(1) == v_b.size(2), "attn_k_b ",
            k_b.str(), " and attn_v_b ", v_b.str(), " do not fit together ([H, r, nope], [H, v, r])");
  const int64_t H = k_b.size(0), r = k_b.size(1), nope = k_b.size(2), v = v_b.size(1);
  Tensor k = k_b.to(DType::F32).contiguous().transpose(1, 2).contiguous();  // [H, nope, r]
  Tensor vv = v_b.to(DType::F32).contiguous();
  Tensor out = Tensor::empty({H, nope + v, r}, DType::F32);
  for (int64_t h = 0; h < H; ++h) {
    std::memcpy(out.data<float>() + h * (nope + v) * r, k.data<float>() + h * nope * r,
                static_cast<size_t>(nope * r) * 4);
    std::memcpy(out.data<float>() + (h * (nope + v) + nope) * r, vv.data<float>() + h * v * r,
                static_cast<size_t>(v * r) * 4);
  }
  return out.view({H * (nope + v), r});
}

double shortest_float(double x) {
  const auto f = static_cast<float>(x);
  char buf[64];
  for (int p = 1; p <= 9; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, static_cast<double>(f));
    const double d = std::strtod(buf, nullptr);
    if (static_cast<float>(d) == f) return d;
  }
  return f;
}

}  // namespace lmforge::exporter
