#include "lmforge/core/optim.h"

#include <gtest/gtest.h>

#include <cmath>

#include "lmforge/core/ops.h"

namespace lmforge {
namespace {

// A parameter that gets no gradient on a step (an unused MoE expert) is skipped, and its own bias correction
// continues from its own step count, as torch.optim does: its first real update is the same as a fresh one's.
TEST(Optim, AdamWSkipsParametersWithoutGradientsPerParameterStep) {
  Var a = parameter(Tensor::full({4}, 1.0), "a"), b = parameter(Tensor::full({4}, 1.0), "b");
  Var fresh = parameter(Tensor::full({4}, 1.0), "fresh");
  AdamW opt({{{a, b}, 0.0, 1.0, "g"}}, {0.1, 0.9, 0.999, 1e-8});
  AdamW ref({{{fresh}, 0.0, 1.0, "g"}}, {0.1, 0.9, 0.999, 1e-8});
  const Tensor g = Tensor::full({4}, 0.5);
  for (int step = 0; step < 3; ++step) {  // b gets no gradient for three steps
    a.accumulate_grad(g);
    opt.step();
    opt.zero_grad();
  }
  EXPECT_EQ(b.value().to_float_vector(), std::vector<float>(4, 1.0f));
  b.accumulate_grad(g);
  opt.step();
  fresh.accumulate_grad(g);
  ref.step();
  EXPECT_EQ(b.value().to_float_vector(), fresh.value().to_float_vector());
  // The first Adam step moves every coordinate by lr (sign of the gradient).
  EXPECT_NEAR(fresh.value().to_float_vector()[0], 0.9f, 1e-6);
}

TEST(Optim, StateRoundTripContinuesIdentically) {
  auto make = [] { return parameter(Tensor::from_vector(std::vector<float>{0.5f, -1.0f, 2.0f}, {3}), "w"); };
  Var w1 = make(), w2 = make();
  AdamW o1({{{w1}, 0.1, 1.0, "g"}}, {0.01, 0.9, 0.95, 1e-8});
  auto grad = [](int s) { return Tensor::from_vector(std::vector<float>{0.1f * s, -0.2f, 0.3f / s}, {3}); };
  for (int s = 1; s <= 3; ++s) {
    w1.accumulate_grad(grad(s));
    o1.step();
    o1.zero_grad();
  }
  w2.mutable_value().copy_from(w1.value());
  AdamW o2({{{w2}, 0.1, 1.0, "g"}}, {0.01, 0.9, 0.95, 1e-8});
  o2.load_state(o1.state(), o1.steps());
  for (int s = 4; s <= 6; ++s) {
    w1.accumulate_grad(grad(s));
    o1.step();
    w2.accumulate_grad(grad(s));
    o2.step();
  }
  EXPECT_EQ(w1.value().to_float_vector(), w2.value().to_float_vector());
  auto bad = o1.state();
  bad.pop_back();
  EXPECT_THROW(o2.load_state(bad, 6), Error);
}

TEST(Optim, ClipGradNorm) {
  Var a = parameter(Tensor::from_vector(std::vector<float>{3.0f, 0.0f}, {2}), "a"),
      b = parameter(Tensor::from_vector(std::vector<float>{4.0f}, {1}), "b");
  a.accumulate_grad(Tensor::from_vector(std::vector<float>{3.0f, 0.0f}, {2}));
  b.accumulate_grad(Tensor::from_vector(std::vector<float>{4.0f}, {1}));
  EXPECT_NEAR(clip_grad_norm({a, b}, 1.0), 5.0, 1e-9);
  EXPECT_NEAR(a.grad().to_float_vector()[0], 3.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(clip_grad_norm({a, b}, 10.0), 1.0, 1e-5);  // below max: unchanged
  b.zero_grad();
  b.accumulate_grad(Tensor::from_vector(std::vector<float>{NAN}, {1}));
  EXPECT_FALSE(std::isfinite(clip_grad_norm({a, b}, 1.0)));
}

TEST(Optim, DecayGroups) {
  Var w = parameter(Tensor::zeros({2, 2}), "layers.0.mlp.up_proj.weight");
  Var n = parameter(Tensor::zeros({2}), "layers.0.input_layernorm.weight");
  Var e = parameter(Tensor::zeros({5, 2}), "model.embed_tokens.weight");
  auto groups = decay_groups({w, n, e}, 0.1);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params.size(), 1u);
  EXPECT_EQ(groups[0].weight_decay, 0.1);
  EXPECT_EQ(groups[1].params.size(), 2u);
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  EXPECT_THROW(AdamW({{{Var(Tensor::zeros({2}))}, 0.0, 1.0, "x"}}, {}), Error);  // not a parameter
}

}  // namespace
}  // namespace lmforge
