// Every op's backward against central finite differences in double precision, and its f32 path against f64.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>

#include "gradcheck.h"
#include "lmforge/core/ops.h"

namespace lmforge {
namespace {

using testing::check_gradients;
using testing::random_tensor;
namespace k = kernels::cpu;

TEST(OpsGrad, MatmulAllTransposes) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "ta=" << ta << " tb=" << tb);
      Tensor a = random_tensor(ta ? Shape{7, 5} : Shape{5, 7}, 1);
      Tensor b = random_tensor(tb ? Shape{6, 7} : Shape{7, 6}, 2);
      check_gradients([&](const std::vector<Var>& v) { return ops::matmul(v[0], v[1], ta, tb); }, {a, b}, {true, true});
    }
  }
}

TEST(OpsGrad, MatmulSharedWeightWithLeadingDims) {
  Tensor x = random_tensor({2, 3, 8}, 3), w = random_tensor({5, 8}, 4);
  check_gradients([](const std::vector<Var>& v) { return ops::linear(v[0], v[1]); }, {x, w}, {true, true});
}

TEST(OpsGrad, MatmulBatched) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Tensor a = random_tensor(ta ? Shape{3, 4, 5} : Shape{3, 5, 4}, 5);
      Tensor b = random_tensor(tb ? Shape{3, 6, 4} : Shape{3, 4, 6}, 6);
      check_gradients([&](const std::vector<Var>& v) { return ops::matmul(v[0], v[1], ta, tb); }, {a, b}, {true, true});
    }
  }
}

TEST(OpsGrad, LargeMatmulUsesThreadedPath) {
  // Big enough for gemm to split across the pool.
  Tensor a = random_tensor({96, 80}, 7), b = random_tensor({80, 72}, 8);
  check_gradients([](const std::vector<Var>& v) { return ops::matmul(v[0], v[1]); }, {a, b}, {true, true}, 1e-6, 1e-5,
                  1e-4, 50);
}

TEST(OpsGrad, ElementwiseAndBroadcast) {
  Tensor a = random_tensor({4, 6}, 9), b = random_tensor({4, 6}, 10), row = random_tensor({6}, 11);
  Tensor s = random_tensor({1}, 12);
  for (auto op : {ops::add, ops::sub, ops::mul}) {
    check_gradients([&](const std::vector<Var>& v) { return op(v[0], v[1]); }, {a, b}, {true, true});
    check_gradients([&](const std::vector<Var>& v) { return op(v[0], v[1]); }, {a, row}, {true, true});
    check_gradients([&](const std::vector<Var>& v) { return op(v[0], v[1]); }, {a, s}, {true, true});
  }
  // Broadcast operand first for the commutative ops.
  check_gradients([](const std::vector<Var>& v) { return ops::mul(v[1], v[0]); }, {a, row}, {true, true});
  check_gradients([](const std::vector<Var>& v) { return ops::scale(v[0], -2.5); }, {a}, {true});
  check_gradients([](const std::vector<Var>& v) { return ops::mean(ops::mul(v[0], v[0])); }, {a}, {true});
}

TEST(OpsGrad, ShapeOps) {
  Tensor a = random_tensor({2, 3, 4}, 13), b = random_tensor({2, 3, 2}, 14);
  check_gradients([](const std::vector<Var>& v) { return ops::reshape(v[0], {6, 4}); }, {a}, {true});
  check_gradients([](const std::vector<Var>& v) { return ops::transpose(v[0], 0, 2); }, {a}, {true});
  check_gradients([](const std::vector<Var>& v) { return ops::slice(v[0], 2, 1, 3); }, {a}, {true});
  check_gradients([](const std::vector<Var>& v) { return ops::concat({v[0], v[1]}, -1); }, {a, b}, {true, true});
}

TEST(OpsGrad, Embedding) {
  Tensor w = random_tensor({10, 4}, 15);
  Tensor ids = Tensor::from_ints({3, 1, 3, 9, 0, 3}, {2, 3});  // repeated ids accumulate
  check_gradients([&](const std::vector<Var>& v) { return ops::embedding(v[0], ids); }, {w}, {true});
}

TEST(OpsGrad, RmsNorm) {
  Tensor x = random_tensor({5, 3, 16}, 16), w = random_tensor({16}, 17, 0.5, 1.5);
  check_gradients([](const std::vector<Var>& v) { return ops::rmsnorm(v[0], v[1], 1e-5); }, {x, w}, {true, true});
}

TEST(OpsGrad, RopeBothLayoutsAndPartialRotation) {
  Tensor x = random_tensor({2, 5, 3, 8}, 18);
  for (auto layout : {k::RopeLayout::HalfSplit, k::RopeLayout::Interleaved}) {
    for (int64_t rot : {8, 4}) {
      auto [c, s] = ops::rope_tables(5, rot, 10000.0, 3, DType::F64);
      check_gradients([&](const std::vector<Var>& v) { return ops::rope(v[0], c, s, layout); }, {x}, {true});
    }
  }
}

TEST(OpsGrad, Activations) {
  Tensor x = random_tensor({3, 40}, 19, -4, 4), u = random_tensor({3, 40}, 20);
  check_gradients([](const std::vector<Var>& v) { return ops::silu(v[0]); }, {x}, {true});
  check_gradients([](const std::vector<Var>& v) { return ops::swiglu(v[0], v[1]); }, {x, u}, {true, true});
  check_gradients([](const std::vector<Var>& v) { return ops::softmax(v[0]); }, {x}, {true});
}

TEST(OpsGrad, CrossEntropyWithIgnoreIndex) {
  Tensor logits = random_tensor({6, 11}, 21, -3, 3);
  Tensor targets = Tensor::from_ints({1, -100, 10, 0, 5, -100}, {6});
  check_gradients([&](const std::vector<Var>& v) { return ops::cross_entropy(v[0], targets); }, {logits}, {true});
}

TEST(OpsGrad, Attention) {
  struct Case {
    int64_t B, Tq, Tk, Hq, Hkv, Dk, Dv;
    ops::AttentionOptions opt;
  };
  std::vector<Case> cases = {
      {2, 9, 9, 2, 2, 8, 8, {}},
      {1, 11, 11, 4, 2, 6, 4, {true, 3, 0, 0.0}},  // GQA, sliding window, Dk != Dv
      {1, 3, 10, 2, 1, 8, 8, {true, 0, 7, 0.0}},   // decode-style: queries at positions 7..9
      {1, 7, 7, 2, 2, 4, 4, {false, 0, 0, 0.3}},   // non-causal, explicit scale
  };
  for (const Case& c : cases) {
    Tensor q = random_tensor({c.B, c.Tq, c.Hq, c.Dk}, 22), kk = random_tensor({c.B, c.Tk, c.Hkv, c.Dk}, 23);
    Tensor v = random_tensor({c.B, c.Tk, c.Hkv, c.Dv}, 24);
    check_gradients([&](const std::vector<Var>& in) { return ops::attention(in[0], in[1], in[2], c.opt); }, {q, kk, v},
                    {true, true, true});
  }
}

TEST(OpsGrad, Routing) {
  Tensor x = random_tensor({5, 8}, 25);
  check_gradients([](const std::vector<Var>& v) { return ops::topk(v[0], 3).first; }, {x}, {true});
  Tensor idx = Tensor::from_ints({4, 0, 4, 2, 1, 4}, {6});
  check_gradients([&](const std::vector<Var>& v) { return ops::gather_rows(v[0], idx); }, {x}, {true});
  Tensor src = random_tensor({6, 8}, 26);
  check_gradients([&](const std::vector<Var>& v) { return ops::scatter_add_rows(v[0], idx, 5); }, {src}, {true});
}

TEST(OpsGrad, CheckpointGivesTheSameGradients) {
  Tensor x = random_tensor({4, 8}, 27), w1 = random_tensor({8, 8}, 28), w2 = random_tensor({8, 8}, 29);
  auto block = [](const Var& x, const Var& a, const Var& b) { return ops::linear(ops::silu(ops::linear(x, a)), b); };
  auto run = [&](bool ckpt) {
    Var xv(x, true), a = parameter(w1, "a"), b = parameter(w2, "b");
    Tape tape;
    Var loss;
    {
      TapeScope scope(&tape);
      Var y =
          ckpt ? checkpoint([&](const std::vector<Var>& in) { return std::vector<Var>{block(in[0], a, b)}; }, {xv})[0]
               : block(xv, a, b);
      loss = ops::sum(ops::mul(y, y));
    }
    const size_t nodes = tape.size();
    tape.backward(loss);
    return std::make_tuple(xv.grad(), a.grad(), b.grad(), nodes);
  };
  auto [gx0, ga0, gb0, n0] = run(false);
  auto [gx1, ga1, gb1, n1] = run(true);
  EXPECT_LT(n1, n0);  // the block's internals were not recorded
  EXPECT_EQ(gx0.to_double_vector(), gx1.to_double_vector());
  EXPECT_EQ(ga0.to_double_vector(), ga1.to_double_vector());
  EXPECT_EQ(gb0.to_double_vector(), gb1.to_double_vector());
}

}  // namespace
}  // namespace lmforge

namespace lmforge {
namespace {

// A whole pre-norm transformer block composed from the ops: checks the tape's accumulation over shared inputs
// (x feeds the residual and the norm; h feeds three projections).
TEST(OpsGrad, TransformerBlockComposite) {
  const int64_t B = 2, T = 6, H = 2, hd = 4, D = H * hd, F = 12;
  auto [c, s] = ops::rope_tables(T, hd, 10000.0, 0, DType::F64);
  auto block = [&, c = c, s = s](const std::vector<Var>& v) {
    const Var &x = v[0], &n1 = v[1], &wq = v[2], &wk = v[3], &wv = v[4], &wo = v[5], &n2 = v[6], &wg = v[7], &wu = v[8],
              &wd = v[9];
    Var h = ops::rmsnorm(x, n1, 1e-5);
    auto heads = [&](const Var& w) { return ops::reshape(ops::linear(h, w), {B, T, H, hd}); };
    Var q = ops::rope(heads(wq), c, s, kernels::cpu::RopeLayout::HalfSplit);
    Var k = ops::rope(heads(wk), c, s, kernels::cpu::RopeLayout::HalfSplit);
    Var a = ops::attention(q, k, heads(wv));
    Var x1 = ops::add(x, ops::linear(ops::reshape(a, {B, T, D}), wo));
    Var h2 = ops::rmsnorm(x1, n2, 1e-5);
    return ops::add(x1, ops::linear(ops::swiglu(ops::linear(h2, wg), ops::linear(h2, wu)), wd));
  };
  std::vector<Tensor> in = {testing::random_tensor({B, T, D}, 40),     testing::random_tensor({D}, 41, 0.5, 1.5),
                            testing::random_tensor({D, D}, 42),        testing::random_tensor({D, D}, 43),
                            testing::random_tensor({D, D}, 44),        testing::random_tensor({D, D}, 45),
                            testing::random_tensor({D}, 46, 0.5, 1.5), testing::random_tensor({F, D}, 47),
                            testing::random_tensor({F, D}, 48),        testing::random_tensor({D, F}, 49)};
  testing::check_gradients(block, in, std::vector<bool>(in.size(), true), 1e-6, 1e-5, 1e-4, 60);
}

}  // namespace
}  // namespace lmforge

namespace lmforge {
namespace {

// M = 1 (a decode step) takes the gemv path; large enough to be split over the pool.
TEST(OpsGrad, MatmulRowVectorPath) {
  for (bool tb : {false, true}) {
    Tensor x = testing::random_tensor({1, 300}, 50);
    Tensor w = testing::random_tensor(tb ? Shape{700, 300} : Shape{300, 700}, 51);
    testing::check_gradients([&](const std::vector<Var>& v) { return ops::matmul(v[0], v[1], false, tb); }, {x, w},
                             {true, true}, 1e-6, 1e-5, 1e-4, 40);
  }
}

}  // namespace
}  // namespace lmforge

namespace lmforge {
namespace {

// Backward closures keep gradient slots, not values: an intermediate the backward does not need is freed as soon
// as the model code drops it, and the gradient still arrives.
TEST(Autograd, UnneededIntermediatesAreFreedAndGradientsStillFlow) {
  Var x = parameter(Tensor::full({4, 8}, 0.5), "x");
  Tape tape;
  Var y;
  std::weak_ptr<Storage> mid;
  {
    TapeScope scope(&tape);
    Var a = ops::scale(x, 2.0);  // scale's backward needs no value
    mid = a.value().storage();
    y = ops::sum(ops::scale(a, 3.0));
  }
  EXPECT_TRUE(mid.expired());
  tape.backward(y);
  ASSERT_TRUE(x.grad().defined());
  EXPECT_FLOAT_EQ(static_cast<float>(x.grad().to_double_vector()[0]), 6.0f);
}

// Under SavedPrecision BF16 the activations a backward needs are kept as bf16 copies; the gradients stay within
// bf16's rounding of the f32 ones, and a tape-less forward (inference) is untouched by the scope.
TEST(Autograd, Bf16SavedActivationsGiveCloseGradients) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rnd = [&](Shape s) {
    std::vector<float> v(static_cast<size_t>(shape_numel(s)));
    for (float& f : v) f = nd(rng);
    return Tensor::from_vector(v, s);
  };
  const Tensor xv = rnd({16, 32}), wv = rnd({24, 32}), gv = rnd({16, 24});
  auto grads = [&](SavedPrecision p, std::weak_ptr<Storage>* saved_input) {
    SavedPrecisionScope scope(p);
    Var x = parameter(xv, "x"), w = parameter(wv, "w");
    Tape tape;
    Var loss;
    {
      TapeScope ts(&tape);
      Var h = ops::silu(ops::matmul(x, w, false, true));
      if (saved_input) *saved_input = h.value().storage();
      loss = ops::sum(ops::mul(h, Var(gv)));
    }
    tape.backward(loss);
    return std::make_pair(x.grad().to_double_vector(), w.grad().to_double_vector());
  };
  std::weak_ptr<Storage> h32, h16;
  auto [gx32, gw32] = grads(SavedPrecision::F32, &h32);
  auto [gx16, gw16] = grads(SavedPrecision::BF16, &h16);
  auto rel = [](const std::vector<double>& a, const std::vector<double>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num += (a[i] - b[i]) * (a[i] - b[i]);
      den += b[i] * b[i];
    }
    return std::sqrt(num / den);
  };
  EXPECT_GT(rel(gx16, gx32), 0.0);  // it really ran in reduced precision
  EXPECT_LT(rel(gx16, gx32), 2e-2);
  EXPECT_LT(rel(gw16, gw32), 2e-2);
}

}  // namespace
}  // namespace lmforge
