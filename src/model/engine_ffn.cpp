// The engine's FFN: dense SwiGLU, or DeepSeekMoE with inference routing (the training forward's route() without
// noise or capacity) running only the experts some token chose.
#include <cstring>

#include "lmforge/kernels/cpu.h"
#include "lmforge/model/moe.h"
#include "model/engine_impl.h"

namespace lmforge::model {

namespace {

// out [n, D] = down(silu(gate x) * up x), or out += ... with accumulate.
void swiglu_mlp(const EngineMlp& m, const float* x, int64_t n, float* out, bool accumulate) {
  const int64_t F = m.inner();
  thread_local std::vector<float> g_buf, gu_buf;
  const Scratch g_s(g_buf, n * F), gu_s(gu_buf, n * 2 * F);  // gu: gate_up's rows, or up's
  float *g = g_s.data(), *gu = gu_s.data();
  if (m.gate_up.defined()) {
    weight_matmul(m.gate_up, x, n, gu);
    for (int64_t t = 0; t < n; ++t) kernels::cpu::swiglu(gu + t * 2 * F, gu + t * 2 * F + F, g + t * F, F);
  } else {
    weight_matmul(m.gate, x, n, g);
    weight_matmul(m.up, x, n, gu);
    kernels::cpu::swiglu(g, gu, g, n * F);
  }
  weight_matmul(m.down, g, n, out, accumulate);
}

}  // namespace

void Engine::Impl::ffn(int64_t layer, const float* h, int64_t N, float* out) {
  const EngineLayer& L = layers[layer];
  const int64_t D = c.hidden_size;
  if (!L.moe) {
    swiglu_mlp(L.mlp, h, N, out, false);
    return;
  }
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
  Tensor logits = Tensor::empty({N, E});
  weight_matmul(L.router, h, N, logits.data<float>());
  const Route r = route(Var(logits), L.expert_bias, route_options(c));
  const Tensor wts = r.weights.value().to(DType::F32).contiguous();
  const std::vector<int32_t> experts = r.experts.to_int_vector();
  // Tokens per expert, in token order; each chosen expert runs once over its tokens.
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t)
    for (int64_t j = 0; j < K; ++j)
      if (experts[t * K + j] >= 0) rows[experts[t * K + j]].push_back(t * K + j);
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(N * D));
  std::vector<float> xs, ys;
  for (int64_t e = 0; e < E; ++e) {
    const auto n = static_cast<int64_t>(rows[e].size());
    if (n == 0) continue;
    xs.resize(static_cast<size_t>(n * D));
    ys.resize(xs.size());
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(xs.data() + i * D, h + (rows[e][i] / K) * D, sizeof(float) * static_cast<size_t>(D));
    swiglu_mlp(L.experts[e], xs.data(), n, ys.data(), false);
    for (int64_t i = 0; i < n; ++i)
      kernels::cpu::axpy(wts.data<float>()[rows[e][i]], ys.data() + i * D, out + (rows[e][i] / K) * D, D);
  }
  if (L.shared.defined()) swiglu_mlp(L.shared, h, N, out, true);
}

}  // namespace lmforge::model
