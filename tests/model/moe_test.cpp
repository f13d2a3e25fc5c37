#include "lmforge/model/moe.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "core/gradcheck.h"
#include "lmforge/core/error.h"
#include "lmforge/core/ops.h"

namespace lmforge::model {
namespace {

using testing::check_gradients;
using testing::random_tensor;

// Router logits spread wide enough that no selection is a near tie (finite differences must not flip it).
Tensor spread_logits(int64_t N, int64_t E, uint64_t seed) {
  Tensor t = random_tensor({N, E}, seed, -3.0, 3.0);
  double* p = t.data<double>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t e = 0; e < E; ++e) p[n * E + e] += 0.37 * static_cast<double>((e * 7 + n * 3) % E);
  return t;
}

struct Case {
  const char* name;
  RouteOptions opt;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  RouteOptions o;
  o.top_k = 2;
  c.push_back({"softmax greedy", o});
  o.norm_topk_prob = true;
  o.routed_scaling_factor = 1.5;
  c.push_back({"softmax greedy normalised", o});
  o = RouteOptions{};
  o.method = "group_limited_greedy";
  o.top_k = 2;
  o.n_group = 4;
  o.topk_group = 2;
  c.push_back({"softmax group-limited", o});
  o = RouteOptions{};
  o.sigmoid = true;
  o.method = "noaux_tc";
  o.top_k = 3;
  o.n_group = 4;
  o.topk_group = 2;
  o.norm_topk_prob = true;
  o.routed_scaling_factor = 2.5;
  c.push_back({"sigmoid noaux_tc", o});
  o.aux_loss_alpha = 0.01;
  c.push_back({"sigmoid noaux_tc + aux", o});
  o.seq_aux = true;
  o.batch = 2;
  c.push_back({"sigmoid noaux_tc + seq aux", o});
  o = RouteOptions{};
  o.top_k = 2;
  o.aux_loss_alpha = 0.1;
  o.capacity_factor = 0.6;
  o.noise_std = 0.1;
  o.noise_seed = 5;
  o.norm_topk_prob = true;
  c.push_back({"softmax capacity + noise + aux", o});
  return c;
}

TEST(MoeRoute, GradientsMatchFiniteDifferences) {
  const int64_t N = 10, E = 8;
  Tensor bias = random_tensor({E}, 77, -0.2, 0.2);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    Tensor logits = spread_logits(N, E, 11);
    // Output: the weights, plus the aux loss broadcast into them so both paths are exercised.
    auto f = [&](const std::vector<Var>& in) {
      Route r = route(in[0], bias, c.opt);
      if (r.aux_loss.defined()) return ops::add(r.weights, ops::scale(r.aux_loss, 50.0));
      return r.weights;
    };
    check_gradients(f, {logits}, {true}, 1e-6, 1e-5, 1e-4);
  }
}

TEST(MoeRoute, SelectionFollowsTheMethod) {
  // One token, 8 experts in 4 groups of 2. Scores favour expert 0 alone (group 0) but groups 2 and 3 have the
  // best pairs, so noaux_tc (groups by top-2 sum) must pick from groups 2 and 3 only.
  const double L[8] = {4.0, -4.0, 1.0, 0.9, 2.0, 1.9, 1.8, 1.7};
  Tensor logits = Tensor::from_vector(std::vector<double>(L, L + 8), {1, 8});
  Tensor zero = Tensor::zeros({8}, DType::F64);
  RouteOptions o;
  o.sigmoid = true;
  o.method = "noaux_tc";
  o.top_k = 2;
  o.n_group = 4;
  o.topk_group = 2;
  Route r = route(Var(logits), zero, o);
  std::set<int32_t> got{r.experts.data<int32_t>()[0], r.experts.data<int32_t>()[1]};
  EXPECT_EQ(got, (std::set<int32_t>{4, 5}));
  // group_limited_greedy ranks groups by their best score: groups 0 and 2.
  o.method = "group_limited_greedy";
  r = route(Var(logits), Tensor(), o);
  got = {r.experts.data<int32_t>()[0], r.experts.data<int32_t>()[1]};
  EXPECT_EQ(got, (std::set<int32_t>{0, 4}));
  // greedy: the global top two.
  o.method = "greedy";
  r = route(Var(logits), Tensor(), o);
  got = {r.experts.data<int32_t>()[0], r.experts.data<int32_t>()[1]};
  EXPECT_EQ(got, (std::set<int32_t>{0, 4}));
  // A bias steers noaux_tc selection, but weights stay the unbiased scores.
  Tensor bias = Tensor::from_vector(std::vector<double>{0, 0, 0, 0, 0, 0, 5, 5}, {8});
  o.method = "noaux_tc";
  r = route(Var(logits), bias, o);
  got = {r.experts.data<int32_t>()[0], r.experts.data<int32_t>()[1]};
  EXPECT_EQ(got, (std::set<int32_t>{6, 7}));
  EXPECT_NEAR(r.weights.value().to_double_vector()[0], 1.0 / (1.0 + std::exp(-1.8)), 1e-12);
}

TEST(MoeRoute, CapacityDropsInTokenOrderAndDispatchCoversKeptAssignments) {
  const int64_t N = 16, E = 4;
  Tensor logits = spread_logits(N, E, 3);
  RouteOptions o;
  o.top_k = 2;
  o.capacity_factor = 0.5;  // capacity ceil(0.5 * 32 / 4) = 4 per expert
  Route r = route(Var(logits), Tensor(), o);
  int64_t kept = 0;
  for (int64_t l : r.load) {
    EXPECT_LE(l, 4);
    kept += l;
  }
  EXPECT_EQ(kept + r.dropped, N * 2);
  EXPECT_GT(r.dropped, 0);
  Dispatch d = dispatch(r, E);
  int64_t rows = 0;
  auto w = r.weights.value().to_double_vector();
  for (int64_t e = 0; e < E; ++e) {
    if (!d.rows[e].defined()) continue;
    rows += d.rows[e].numel();
    for (int64_t i = 0; i < d.slots[e].numel(); ++i) {
      const int32_t s = d.slots[e].data<int32_t>()[i];
      EXPECT_EQ(r.experts.data<int32_t>()[s], e);
      EXPECT_EQ(d.rows[e].data<int32_t>()[i], s / 2);
    }
  }
  EXPECT_EQ(rows, kept);
  for (int64_t i = 0; i < N * 2; ++i)
    if (r.experts.data<int32_t>()[i] < 0) {
      EXPECT_EQ(w[i], 0.0);
    }
}

TEST(MoeRoute, AuxLossIsAlphaWhenPerfectlyBalanced) {
  // Uniform softmax scores and an even assignment: f_e = 1 and P_e = 1/E, so aux = alpha * sum_e 1/E = alpha.
  const int64_t E = 4;
  std::vector<double> l(4 * E, 0.0);
  for (int64_t n = 0; n < 4; ++n) l[n * E + n] = 1e-9;  // token n prefers expert n by a hair
  RouteOptions o;
  o.top_k = 1;
  o.aux_loss_alpha = 0.3;
  Route r = route(Var(Tensor::from_vector(l, {4, E})), Tensor(), o);
  EXPECT_NEAR(r.aux_loss.value().item(), 0.3, 1e-8);
}

TEST(MoeRoute, BadOptionsAreErrors) {
  Tensor logits = spread_logits(4, 6, 1);
  RouteOptions o;
  o.top_k = 7;
  EXPECT_THROW(route(Var(logits), Tensor(), o), Error);
  o.top_k = 2;
  o.method = "noaux_tc";
  EXPECT_THROW(route(Var(logits), Tensor(), o), Error);  // no bias
  o.method = "bogus";
  EXPECT_THROW(route(Var(logits), Tensor(), o), Error);
  o.method = "group_limited_greedy";
  o.n_group = 4;  // 6 experts do not split into 4 groups
  EXPECT_THROW(route(Var(logits), Tensor(), o), Error);
}

TEST(ScaleRows, GradientsMatchFiniteDifferences) {
  Tensor x = random_tensor({5, 7}, 1), w = random_tensor({5}, 2), w2 = random_tensor({5, 1}, 3);
  check_gradients([](const std::vector<Var>& in) { return ops::scale_rows(in[0], in[1]); }, {x, w}, {true, true});
  check_gradients([](const std::vector<Var>& in) { return ops::scale_rows(in[0], in[1]); }, {x, w2}, {true, true});
}

}  // namespace
}  // namespace lmforge::model
