// kernels::cpu::argmax against a scalar reference: every length from 0 to 80 (the vector body, its 8-wide tail and
// the scalar tail), ties (the first index wins), -inf, NaNs (skipped), and a vocabulary-sized row. The portable
// build runs this suite again with LMFORGE_CPU=generic.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "lmforge/kernels/cpu.h"

namespace lmforge::kernels::cpu {
namespace {

// The first index of the largest non-NaN element; 0 when there is none.
int64_t reference(const std::vector<float>& x) {
  int64_t best = -1;
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isnan(x[i]) && (best < 0 || x[i] > x[static_cast<size_t>(best)])) best = static_cast<int64_t>(i);
  return best < 0 ? 0 : best;
}

TEST(Argmax, MatchesReferenceOnEveryShape) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-3, 3);  // few distinct values: many ties
  std::normal_distribution<float> normal;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int n = 0; n <= 80; ++n)
    for (int trial = 0; trial < 40; ++trial) {
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = trial % 2 ? static_cast<float>(small(rng)) : normal(rng);
      if (n > 0 && trial % 5 == 1) x[rng() % n] = nan;
      if (n > 0 && trial % 7 == 2) x[rng() % n] = -inf;
      if (n > 0 && trial % 11 == 3) x[rng() % n] = inf;
      ASSERT_EQ(argmax(x.data(), n), reference(x)) << "n " << n << " trial " << trial;
    }
}

TEST(Argmax, EdgeRows) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(37, -inf);
  EXPECT_EQ(argmax(x.data(), 37), 0);  // all equal: the first
  x.assign(37, nan);
  EXPECT_EQ(argmax(x.data(), 37), 0);  // nothing but NaN
  x[30] = -inf;
  EXPECT_EQ(argmax(x.data(), 37), 30);
  x[0] = nan;
  x[36] = 1.0f;
  EXPECT_EQ(argmax(x.data(), 37), 36);  // a leading NaN does not win (std::max_element would return 0)
  // A 32K vocabulary with its maximum twice, late: the first of the two.
  std::vector<float> v(32000);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (float& f : v) f = normal(rng);
  v[31001] = v[31999] = 9.0f;
  EXPECT_EQ(argmax(v.data(), 32000), 31001);
}

}  // namespace
}  // namespace lmforge::kernels::cpu
