// Structured pruning of FFN channels: channel i of a SwiGLU MLP is gate row i, up row i and down column i; removing
// all three removes the channel exactly. Channels go by their L1 norm, the smallest first, the same count from every
// MLP (so intermediate_size and moe_intermediate_size stay one number each and the result is a normal model dir).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "lmforge/core/error.h"
#include "lmforge/quant/methods.h"

namespace lmforge::quant {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Keeps rows `keep` of [F, D] (gate/up) or columns of [D, F] (down).
Tensor keep_rows(const Tensor& w, const std::vector<int64_t>& keep) {
  const int64_t D = w.size(1);
  Tensor out = Tensor::empty({static_cast<int64_t>(keep.size()), D});
  for (size_t i = 0; i < keep.size(); ++i)
    std::copy(w.data<float>() + keep[i] * D, w.data<float>() + (keep[i] + 1) * D, out.data<float>() + i * D);
  return out;
}
Tensor keep_cols(const Tensor& w, const std::vector<int64_t>& keep) {
  const int64_t R = w.size(0), F = w.size(1), K = static_cast<int64_t>(keep.size());
  Tensor out = Tensor::empty({R, K});
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = 0; i < K; ++i) out.data<float>()[r * K + i] = w.data<float>()[r * F + keep[i]];
  return out;
}

}  // namespace

model::CausalLM prune_ffn(const model::CausalLM& m, double ratio, PruneReport* report) {
  LMF_CHECK(ratio > 0 && ratio < 1, "prune: --ratio must be in (0, 1), got ", ratio);
  model::ModelConfig cfg = m.config();
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, t] : m.state()) tensors[name] = t.contiguous();
  const auto new_size = [&](int64_t F) {
    const auto keep = static_cast<int64_t>(std::llround(static_cast<double>(F) * (1.0 - ratio)));
    return std::max<int64_t>(1, keep);
  };
  const int64_t F_dense = cfg.intermediate_size, F_moe = cfg.moe_intermediate_size;
  const int64_t K_dense = new_size(F_dense), K_moe = F_moe > 0 ? new_size(F_moe) : 0;
  // Every MLP prefix: "....mlp." (dense), "....mlp.experts.E.", "....mlp.shared_experts.".
  std::vector<std::string> prefixes;
  for (const auto& [name, t] : tensors)
    if (ends_with(name, "gate_proj.weight") && name.find("layers.") != std::string::npos)
      prefixes.push_back(name.substr(0, name.size() - std::string("gate_proj.weight").size()));
  for (const std::string& p : prefixes) {
    Tensor& gate = tensors[p + "gate_proj.weight"];
    Tensor& up = tensors[p + "up_proj.weight"];
    Tensor& down = tensors[p + "down_proj.weight"];
    const int64_t F = gate.size(0), D = gate.size(1);
    const bool shared = p.find("shared_experts") != std::string::npos;
    const bool expert = p.find("experts.") != std::string::npos && !shared;
    // Shared experts hold n_shared_experts * moe_intermediate_size channels; keep the same fraction.
    const int64_t K = expert ? K_moe : shared ? K_moe * cfg.n_shared_experts : K_dense;
    std::vector<double> l1(static_cast<size_t>(F), 0.0);
    for (int64_t i = 0; i < F; ++i)
      for (int64_t d = 0; d < D; ++d)
        l1[i] += std::fabs(gate.data<float>()[i * D + d]) + std::fabs(up.data<float>()[i * D + d]) +
                 std::fabs(down.data<float>()[d * F + i]);
    std::vector<int64_t> order(static_cast<size_t>(F));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l1[a] > l1[b]; });
    std::vector<int64_t> keep(order.begin(), order.begin() + K);
    std::sort(keep.begin(), keep.end());  // channel order kept: the pruned model is the original minus channels
    gate = keep_rows(gate, keep);
    up = keep_rows(up, keep);
    down = keep_cols(down, keep);
  }
  cfg.intermediate_size = K_dense;
  cfg.raw["intermediate_size"] = K_dense;
  if (F_moe > 0) {
    cfg.moe_intermediate_size = K_moe;
    cfg.raw["moe_intermediate_size"] = K_moe;
  }
  model::CausalLM out(cfg);
  out.load_weights(tensors, "pruned model");
  if (report) {
    report->intermediate_before = F_dense;
    report->intermediate_after = K_dense;
    report->moe_intermediate_before = F_moe;
    report->moe_intermediate_after = K_moe;
    report->params_before = m.num_parameters();
    report->params_after = out.num_parameters();
  }
  return out;
}

}  // namespace lmforge::quant
