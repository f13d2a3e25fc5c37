#include "lmforge/model/moe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "core/ops_util.h"

namespace lmforge::model {

namespace {

using ops::detail::compute_dtype;
using ops::detail::prepare;

// Indices of the k largest values (descending; ties to the lower index, as a stable sort gives).
void top_indices(const double* v, int64_t n, int64_t k, int32_t* out, std::vector<int32_t>& scratch) {
  scratch.resize(static_cast<size_t>(n));
  std::iota(scratch.begin(), scratch.end(), 0);
  std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(),
                    [v](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  std::copy(scratch.begin(), scratch.begin() + k, out);
}

}  // namespace

RouteOptions route_options(const ModelConfig& c) {
  RouteOptions ro;
  ro.sigmoid = c.scoring_func == "sigmoid";
  ro.method = c.topk_method;
  ro.top_k = c.num_experts_per_tok;
  ro.n_group = c.n_group;
  ro.topk_group = c.topk_group;
  ro.norm_topk_prob = c.norm_topk_prob;
  ro.routed_scaling_factor = c.routed_scaling_factor;
  return ro;
}

Route route(const Var& logits, const Tensor& bias, const RouteOptions& o) {
  const DType dt = compute_dtype("moe route", {&logits.value()});
  LMF_CHECK(logits.dim() == 2, "moe route: logits must be [tokens, experts], got ", logits.value().str());
  const int64_t N = logits.size(0), E = logits.size(1), K = o.top_k;
  LMF_CHECK(K >= 1 && K <= E, "moe route: top_k ", K, " outside [1, ", E, "]");
  LMF_CHECK(o.n_group >= 1 && E % o.n_group == 0 && o.topk_group >= 1 && o.topk_group <= o.n_group,
            "moe route: n_group ", o.n_group, " / topk_group ", o.topk_group, " do not fit ", E, " experts");
  const bool noaux = o.method == "noaux_tc", grouped = o.method != "greedy";
  LMF_CHECK(noaux || o.method == "greedy" || o.method == "group_limited_greedy", "moe route: unknown topk_method '",
            o.method, "'");
  if (noaux) LMF_CHECK(bias.defined() && bias.numel() == E, "moe route: noaux_tc needs a bias of ", E, " values");
  const std::vector<double> L = logits.value().to_double_vector();
  std::vector<double> b = noaux ? bias.to_double_vector() : std::vector<double>(static_cast<size_t>(E), 0.0);

  // Scores (kept for backward).
  auto S = std::make_shared<std::vector<double>>(static_cast<size_t>(N * E));
  std::mt19937_64 rng(o.noise_seed);
  std::normal_distribution<double> noise(0.0, o.noise_std > 0 ? o.noise_std : 1.0);
  for (int64_t n = 0; n < N; ++n) {
    const double* l = &L[n * E];
    double* s = &(*S)[n * E];
    for (int64_t e = 0; e < E; ++e) s[e] = l[e] + (o.noise_std > 0 ? noise(rng) : 0.0);
    if (o.sigmoid) {
      for (int64_t e = 0; e < E; ++e) s[e] = 1.0 / (1.0 + std::exp(-s[e]));
    } else {
      const double m = *std::max_element(s, s + E);
      double z = 0;
      for (int64_t e = 0; e < E; ++e) z += (s[e] = std::exp(s[e] - m));
      for (int64_t e = 0; e < E; ++e) s[e] /= z;
    }
  }

  // Selection.
  std::vector<int32_t> idx(static_cast<size_t>(N * K)), scratch;
  {
    const int64_t G = o.n_group, per = E / G;
    std::vector<double> choice(static_cast<size_t>(E)), gscore(static_cast<size_t>(G));
    std::vector<int32_t> gsel(static_cast<size_t>(o.topk_group));
    for (int64_t n = 0; n < N; ++n) {
      const double* s = &(*S)[n * E];
      for (int64_t e = 0; e < E; ++e) choice[e] = s[e] + b[e];
      if (grouped && o.topk_group < G) {
        for (int64_t g = 0; g < G; ++g) {
          const double* c = &choice[g * per];
          if (noaux) {  // sum of the group's two best
            double a = -std::numeric_limits<double>::infinity(), a2 = a;
            for (int64_t i = 0; i < per; ++i) {
              if (c[i] > a) {
                a2 = a;
                a = c[i];
              } else if (c[i] > a2) {
                a2 = c[i];
              }
            }
            gscore[g] = per >= 2 ? a + a2 : a;
          } else {
            gscore[g] = *std::max_element(c, c + per);
          }
        }
        top_indices(gscore.data(), G, o.topk_group, gsel.data(), scratch);
        std::vector<bool> keep(static_cast<size_t>(G), false);
        for (int32_t g : gsel) keep[g] = true;
        for (int64_t e = 0; e < E; ++e)
          if (!keep[e / per]) choice[e] = -std::numeric_limits<double>::infinity();
      }
      top_indices(choice.data(), E, K, &idx[n * K], scratch);
    }
  }

  // Weights (before dropping) and their normaliser.
  auto denom = std::make_shared<std::vector<double>>(static_cast<size_t>(N), 1.0);
  const bool normalise = o.norm_topk_prob && K > 1;
  std::vector<double> W(static_cast<size_t>(N * K));
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0;
    for (int64_t j = 0; j < K; ++j) sum += (W[n * K + j] = (*S)[n * E + idx[n * K + j]]);
    if (normalise) (*denom)[n] = sum + 1e-20;
    for (int64_t j = 0; j < K; ++j) W[n * K + j] = W[n * K + j] / (*denom)[n] * o.routed_scaling_factor;
  }

  // Auxiliary loss coefficients a[n][e] = d aux / d p[n][e], where p is the per-token normalised score.
  Route r;
  r.load.assign(static_cast<size_t>(E), 0);
  const bool aux = o.aux_loss_alpha > 0;
  auto aux_coef = std::make_shared<std::vector<double>>();
  double aux_value = 0;
  if (aux) {
    const int64_t Bn = o.seq_aux ? o.batch : 1;
    LMF_CHECK(Bn >= 1 && N % Bn == 0, "moe route: ", N, " tokens do not split into ", Bn, " sequences");
    const int64_t Tn = N / Bn;
    aux_coef->assign(static_cast<size_t>(Bn * E), 0.0);
    for (int64_t bb = 0; bb < Bn; ++bb) {
      std::vector<double> ce(static_cast<size_t>(E), 0.0), P(static_cast<size_t>(E), 0.0);
      for (int64_t n = bb * Tn; n < (bb + 1) * Tn; ++n) {
        for (int64_t j = 0; j < K; ++j) ce[idx[n * K + j]] += 1.0;
        const double* s = &(*S)[n * E];
        const double z = o.sigmoid ? std::accumulate(s, s + E, 0.0) : 1.0;
        for (int64_t e = 0; e < E; ++e) P[e] += s[e] / z;
      }
      for (int64_t e = 0; e < E; ++e) {
        const double f = ce[e] * static_cast<double>(E) / static_cast<double>(Tn * K);
        aux_value += o.aux_loss_alpha * f * P[e] / static_cast<double>(Tn) / static_cast<double>(Bn);
        (*aux_coef)[bb * E + e] = o.aux_loss_alpha * f / static_cast<double>(Tn) / static_cast<double>(Bn);
      }
    }
  }

  // Capacity: assignments beyond an expert's capacity are dropped, in token order.
  std::vector<int32_t> kept = idx;
  const int64_t capacity =
      o.capacity_factor > 0
          ? std::max<int64_t>(1, static_cast<int64_t>(std::ceil(o.capacity_factor * static_cast<double>(N * K) /
                                                                static_cast<double>(E))))
          : std::numeric_limits<int64_t>::max();
  for (int64_t i = 0; i < N * K; ++i) {
    if (r.load[kept[i]] >= capacity) {
      kept[i] = -1;
      W[i] = 0.0;
      ++r.dropped;
    } else {
      ++r.load[kept[i]];
    }
  }

  Tensor wt = Tensor::from_vector(W, {N, K}).to(dt);
  r.weights = Var(wt);
  r.experts = Tensor::from_ints(kept, {N, K});
  if (aux) r.aux_loss = Var(Tensor::full({1}, aux_value, dt));

  std::vector<Var> outs{r.weights};
  if (aux) outs.push_back(r.aux_loss);
  if (needs_record({&logits})) {
    active_tape()->record("moe_route", outs,
                          [logits = logits.grad_ref(), S, denom, aux_coef, idx, kept, N, E, K, o, normalise, dt,
                           w = r.weights.impl(), a = aux ? r.aux_loss.impl() : nullptr] {
                            const std::vector<double> gw = w->grad.defined()
                                                               ? w->grad.to_double_vector()
                                                               : std::vector<double>(static_cast<size_t>(N * K), 0.0);
                            const double ga = a && a->grad.defined() ? a->grad.item() : 0.0;
                            const int64_t per_seq = o.seq_aux ? N / o.batch : N;
                            const double rsf = o.routed_scaling_factor;
                            std::vector<double> dl(static_cast<size_t>(N * E)), ds(static_cast<size_t>(E));
                            for (int64_t n = 0; n < N; ++n) {
                              const double* s = &(*S)[n * E];
                              const double D = (*denom)[n];
                              std::fill(ds.begin(), ds.end(), 0.0);
                              // Weights: w_j = rsf * s[idx_j] / D for kept assignments (dropped ones are constant
                              // zeros); with normalisation D sums every selected score, dropped or not.
                              double dot = 0;
                              for (int64_t j = 0; j < K; ++j) {
                                const int32_t e = kept[n * K + j];
                                if (e < 0) continue;
                                ds[e] += rsf * gw[n * K + j] / D;
                                dot += gw[n * K + j] * s[e];
                              }
                              if (normalise)
                                for (int64_t j = 0; j < K; ++j) ds[idx[n * K + j]] -= rsf * dot / (D * D);
                              // Auxiliary loss: aux = sum_e coef[seq][e] * sum_n p[n][e], p = s / z (z = sum of s for
                              // sigmoid).
                              if (ga != 0.0) {
                                const double* c = &(*aux_coef)[(n / per_seq) * E];
                                if (o.sigmoid) {
                                  const double z = std::accumulate(s, s + E, 0.0);
                                  double pd = 0;
                                  for (int64_t e = 0; e < E; ++e) pd += c[e] * s[e] / z;
                                  for (int64_t e = 0; e < E; ++e) ds[e] += ga * (c[e] - pd) / z;
                                } else {
                                  for (int64_t e = 0; e < E; ++e) ds[e] += ga * c[e];
                                }
                              }
                              if (o.sigmoid) {
                                for (int64_t e = 0; e < E; ++e) dl[n * E + e] = ds[e] * s[e] * (1.0 - s[e]);
                              } else {
                                double sd = 0;
                                for (int64_t e = 0; e < E; ++e) sd += ds[e] * s[e];
                                for (int64_t e = 0; e < E; ++e) dl[n * E + e] = s[e] * (ds[e] - sd);
                              }
                            }
                            logits.accumulate_grad(Tensor::from_vector(dl, {N, E}).to(dt));
                          });
  }
  return r;
}

Dispatch dispatch(const Route& r, int64_t n_experts) {
  const Tensor ex = r.experts.contiguous();
  const int32_t* e = ex.data<int32_t>();
  const int64_t N = ex.size(0), K = ex.size(1);
  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(n_experts)), slots(rows.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < K; ++j) {
      const int32_t x = e[n * K + j];
      if (x < 0) continue;
      rows[x].push_back(static_cast<int32_t>(n));
      slots[x].push_back(static_cast<int32_t>(n * K + j));
    }
  Dispatch d;
  for (int64_t x = 0; x < n_experts; ++x) {
    const auto m = static_cast<int64_t>(rows[x].size());
    d.rows.push_back(m ? Tensor::from_ints(rows[x], {m}) : Tensor());
    d.slots.push_back(m ? Tensor::from_ints(slots[x], {m}) : Tensor());
  }
  return d;
}

}  // namespace lmforge::model
