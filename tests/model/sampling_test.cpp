// Sampling: the processing steps on hand-computed examples, the drawn frequencies against the distribution with a
// fixed seed, seed reproducibility, stop strings across token boundaries, and the generation loop on a real model.
#include "lmforge/model/sampling.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "lmforge/io/safetensors.h"

namespace lmforge::model {
namespace {

const std::vector<float> kLogits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};

std::vector<double> probs(const SamplingParams& p, const std::vector<float>& logits = kLogits,
                          const std::vector<int32_t>& prompt = {}, const std::vector<int32_t>& out = {}) {
  Sampler s(p, prompt);
  for (int32_t t : out) s.accept(t);
  return s.probabilities(logits.data(), static_cast<int64_t>(logits.size()));
}

void expect_probs(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "token " << i;
}

TEST(Sampling, TemperatureTopKTopPMinP) {
  SamplingParams p;
  expect_probs(probs(p), {0.5, 0.3, 0.2});
  p.temperature = 0.5;  // p^2 renormalised: .25 .09 .04 over .38
  expect_probs(probs(p), {0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38});
  p = {};
  p.top_k = 2;
  expect_probs(probs(p), {0.625, 0.375, 0});
  p = {};
  p.top_p = 0.7;  // 0.5 < 0.7 <= 0.8
  expect_probs(probs(p), {0.625, 0.375, 0});
  p.top_p = 0.5;
  expect_probs(probs(p), {1, 0, 0});
  p = {};
  p.min_p = 0.5;  // threshold 0.25
  expect_probs(probs(p), {0.625, 0.375, 0});
  p = {};
  p.temperature = 0;
  expect_probs(probs(p), {1, 0, 0});
}

TEST(Sampling, PenaltiesAndBiasOnHandExamples) {
  const std::vector<float> l = {2.0f, -1.0f, 0.5f, 0.0f};
  SamplingParams p;
  p.temperature = 1;
  // Repetition 2 over prompt {0, 1} and output {2}: 2 -> 1, -1 -> -2, 0.5 -> 0.25; token 3 untouched.
  p.repetition_penalty = 2.0;
  {
    const auto got = probs(p, l, {0, 1}, {2});
    const double z = std::exp(1.0) + std::exp(-2.0) + std::exp(0.25) + 1.0;
    expect_probs(got, {std::exp(1.0) / z, std::exp(-2.0) / z, std::exp(0.25) / z, 1.0 / z});
  }
  // Presence 0.5 + frequency 0.1 x count, output tokens only: token 2 seen 3 times -> 0.5 - 0.8 = -0.3; token 0 in
  // the prompt only -> unchanged. Logit bias +1 on token 3.
  p = {};
  p.presence_penalty = 0.5;
  p.frequency_penalty = 0.1;
  p.logit_bias[3] = 1.0f;
  {
    const auto got = probs(p, l, {0}, {2, 2, 2});
    const double z = std::exp(2.0) + std::exp(-1.0) + std::exp(-0.3) + std::exp(1.0);
    expect_probs(got, {std::exp(2.0) / z, std::exp(-1.0) / z, std::exp(-0.3) / z, std::exp(1.0) / z});
  }
  // Greedy follows the penalties too: token 0 loses its lead.
  p = {};
  p.temperature = 0;
  p.frequency_penalty = 5;
  Sampler s(p, {});
  s.accept(0);
  EXPECT_EQ(s.sample(l.data(), 4), 2);
  // Ties go to the lowest id, with the logits as given (the fast path: tokens 1 and 3) and after a penalty (the
  // processed path: presence 2.5 on tokens 1 and 3 leaves 0.5 for tokens 1 to 4).
  const std::vector<float> tie = {-1.0f, 3.0f, 0.5f, 3.0f, 0.5f};
  SamplingParams greedy;
  greedy.temperature = 0;
  EXPECT_EQ(Sampler(greedy, {}).sample(tie.data(), 5), 1);
  SamplingParams q;
  q.temperature = 0;
  q.presence_penalty = 2.5;
  Sampler t(q, {});
  t.accept(1);
  t.accept(3);
  EXPECT_EQ(t.sample(tie.data(), 5), 1);
  q.frequency_penalty = 0.25;
  Sampler u(q, {});
  u.accept(1);
  u.accept(3);
  EXPECT_EQ(u.sample(tie.data(), 5), 2);  // 1 and 3 fall to 0.25: 2 is the first at 0.5
}

// Steps 1-7 as written in sampling.h, the direct way: every probability in double, the whole vocabulary sorted
// (what Sampler did before it sorted only the likely tokens).
std::vector<double> reference_probabilities(const SamplingParams& p, const std::vector<float>& logits,
                                            const std::vector<int32_t>& prompt, const std::vector<int32_t>& out) {
  const auto V = static_cast<int64_t>(logits.size());
  std::vector<double> x(logits.begin(), logits.end());
  for (const auto& [id, b] : p.logit_bias) x[id] += b;
  std::map<int32_t, int64_t> count;
  for (int32_t t : out) ++count[t];
  std::set<int32_t> seen(prompt.begin(), prompt.end());
  for (const auto& [id, n] : count) seen.insert(id);
  if (p.repetition_penalty != 1.0)
    for (int32_t id : seen) x[id] = x[id] > 0 ? x[id] / p.repetition_penalty : x[id] * p.repetition_penalty;
  for (const auto& [id, n] : count) x[id] -= p.presence_penalty + p.frequency_penalty * static_cast<double>(n);
  const double mx = *std::max_element(x.begin(), x.end());
  std::vector<double> prob(static_cast<size_t>(V));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += prob[i] = std::exp((x[i] - mx) / p.temperature);
  for (double& v : prob) v /= sum;
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return prob[a] > prob[b]; });
  int64_t keep = p.top_k > 0 ? std::min(V, p.top_k) : V;
  double kept = 0, cum = 0;
  for (int64_t i = 0; i < keep; ++i) kept += prob[order[i]];
  if (p.top_p < 1) {
    int64_t n = 0;
    while (n < keep) {
      cum += prob[order[n++]] / kept;
      if (cum >= p.top_p) break;
    }
    keep = n;
  }
  const double thresh = p.min_p * prob[order[0]];
  for (int64_t i = 0; i < V; ++i)
    if (i >= keep || prob[order[i]] < thresh) prob[order[i]] = 0;
  double total = 0;
  for (double v : prob) total += v;
  for (double& v : prob) v /= total;
  return prob;
}

// Random vocabularies of 50 to 32,000 logits, peaked and flat, against the reference: the same tokens kept, the
// same probabilities (float enters only the mass of tokens far below the kept ones, and the no-filter case).
TEST(Sampling, MatchesTheFullSortOnRandomVocabularies) {
  std::mt19937 rng(11);
  struct Case {
    double temperature;
    int64_t top_k;
    double top_p, min_p;
  };
  const Case cases[] = {{1.0, 0, 1.0, 0.0},   {0.7, 0, 0.9, 0.0}, {1.3, 40, 1.0, 0.0}, {0.8, 40, 0.95, 0.05},
                        {1.0, 0, 1.0, 0.1},   {2.0, 0, 0.5, 0.0}, {0.5, 1, 1.0, 0.0},  {1.0, 5000, 0.99, 0.0},
                        {1.0, 0, 0.999, 0.0}, {0.9, 0, 0.8, 0.02}};
  for (int64_t V : {50, 1000, 32000})
    for (double spread : {0.5, 3.0, 8.0})
      for (const Case& c : cases) {
        std::normal_distribution<float> nd(0.0f, static_cast<float>(spread));
        std::vector<float> logits(static_cast<size_t>(V));
        for (float& l : logits) l = nd(rng);
        SamplingParams p;
        p.temperature = c.temperature;
        p.top_k = c.top_k;
        p.top_p = c.top_p;
        p.min_p = c.min_p;
        p.repetition_penalty = 1.1;
        p.logit_bias[3] = 2.0f;
        const std::vector<int32_t> prompt = {1, 2, 3}, out = {2, 7};
        const std::vector<double> want = reference_probabilities(p, logits, prompt, out);
        const std::vector<double> got = probs(p, logits, prompt, out);
        ASSERT_EQ(got.size(), want.size());
        for (int64_t i = 0; i < V; ++i) {
          ASSERT_EQ(got[i] > 0, want[i] > 0) << "V " << V << " spread " << spread << " top_k " << c.top_k << " top_p "
                                             << c.top_p << " min_p " << c.min_p << " token " << i;
          ASSERT_NEAR(got[i], want[i], 1e-6 * want[i] + 1e-12) << "V " << V << " token " << i;
        }
      }
}

TEST(Sampling, DrawsFollowTheDistributionAndTheSeed) {
  SamplingParams p;
  p.seed = 1234;
  p.top_k = 2;
  Sampler s(p, {});
  std::vector<int> n(3, 0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++n[s.sample(kLogits.data(), 3)];
  // Expected 0.625 / 0.375 / 0; binomial sd ~0.0034, bound 5 sd.
  EXPECT_NEAR(n[0] / double(draws), 0.625, 0.017);
  EXPECT_NEAR(n[1] / double(draws), 0.375, 0.017);
  EXPECT_EQ(n[2], 0);
  auto seq = [&](uint64_t seed) {
    SamplingParams q;
    q.seed = seed;
    Sampler a(q, {});
    std::vector<int32_t> v;
    for (int i = 0; i < 64; ++i) v.push_back(a.sample(kLogits.data(), 3));
    return v;
  };
  EXPECT_EQ(seq(7), seq(7));
  EXPECT_NE(seq(7), seq(8));
}

TEST(Sampling, BadParametersNameTheField) {
  SamplingParams p;
  p.top_p = 0;
  EXPECT_THROW(validate(p), Error);
  p = {};
  p.temperature = -1;
  try {
    validate(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("temperature"), std::string::npos);
  }
  p = {};
  p.repetition_penalty = 0;
  EXPECT_THROW(validate(p), Error);
}

TEST(StopStream, StopStringAcrossTokenBoundaries) {
  StopStream s({"END", "\n\n"});
  EXPECT_EQ(s.push("ab"), "ab");
  EXPECT_EQ(s.push("cE"), "c");  // "E" may start "END"
  EXPECT_EQ(s.push("N"), "");
  EXPECT_EQ(s.push("Dxyz"), "");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.push("more"), "");
  EXPECT_EQ(s.finish(), "");

  StopStream t({"END"});
  EXPECT_EQ(t.push("E"), "");
  EXPECT_EQ(t.push("x"), "Ex");  // not a stop after all: released
  EXPECT_EQ(t.push("EN"), "");
  EXPECT_EQ(t.finish(), "EN");
  EXPECT_FALSE(t.stopped());

  StopStream u({"\n\n"});
  EXPECT_EQ(u.push("a\n"), "a");
  EXPECT_EQ(u.push("\nb"), "");
  EXPECT_TRUE(u.stopped());
}

TEST(StopStream, HoldsBackHalfACharacter) {
  StopStream s({});
  EXPECT_EQ(s.push("a\xE4\xB8"), "a");
  EXPECT_EQ(s.push("\xAD"), "\xE4\xB8\xAD");  // 中
  EXPECT_EQ(s.push("\xE4"), "");
  EXPECT_EQ(s.finish(), "\xEF\xBF\xBD");  // cut off: U+FFFD
  StopStream t({});
  EXPECT_EQ(t.push("x\xEE\xFCy\xC0"),
            "x\xEF\xBF\xBD\xEF\xBF\xBDy\xEF\xBF\xBD");  // \xC0 never starts a character  // invalid bytes replaced
}

TEST(Generate, StopsOnIdsStringsAndLength) {
  const std::string dir = LMFORGE_SOURCE_DIR "/tests/reference/fixtures/";
  ModelConfig cfg = load_model_config(dir + "model_llama_gqa_sliding.json");
  CausalLM m(cfg);
  std::map<std::string, Tensor> w;
  for (const auto& [k, v] : io::load_safetensors(dir + "model_llama_gqa_sliding.safetensors"))
    if (k.rfind("model.", 0) == 0 || k.rfind("lm_head.", 0) == 0) w.emplace(k, v);
  m.load_weights(w, "fixture");
  Engine e = Engine::from_model(m);
  // Each token's "bytes": a letter per id, so stop strings can be placed on known token sequences.
  auto bytes = [](int32_t t) { return std::string(1, static_cast<char>('A' + t % 26)); };
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = 12;
  p.ignore_eos = true;
  const std::vector<int32_t> prompt = {5, 9, 13, 7};
  std::string streamed;
  const GenerateResult g = generate(e, prompt, p, bytes, [&](std::string_view s) { streamed += s; });
  ASSERT_EQ(g.tokens.size(), 12u);
  EXPECT_EQ(g.finish_reason, "length");
  EXPECT_EQ(streamed, g.text);
  EXPECT_EQ(e.num_sequences(), 0u);
  // Greedy decode equals argmax of the full forward at each step.
  std::vector<int32_t> ids = prompt;
  for (size_t i = 0; i < 3; ++i) {
    const Tensor l = m.forward(Tensor::from_ints(ids, {1, static_cast<int64_t>(ids.size())})).logits.value();
    const float* last = l.data<float>() + (ids.size() - 1) * cfg.vocab_size;
    const auto best = static_cast<int32_t>(std::max_element(last, last + cfg.vocab_size) - last);
    EXPECT_EQ(g.tokens[i], best) << "step " << i;
    ids.push_back(best);
  }
  // A stop string spanning generated tokens 2-3 cuts the text before it.
  SamplingParams ps = p;
  ps.stop = {g.text.substr(2, 2)};
  const GenerateResult gs = generate(e, prompt, ps, bytes);
  EXPECT_EQ(gs.finish_reason, "stop");
  EXPECT_EQ(gs.text, g.text.substr(0, g.text.find(ps.stop[0])));
  // A stop id ends generation without being part of the output.
  SamplingParams pi = p;
  pi.stop_ids = {g.tokens[4]};
  const GenerateResult gi = generate(e, prompt, pi, bytes);
  EXPECT_EQ(gi.finish_reason, "stop");
  EXPECT_LE(gi.tokens.size(), 4u);
}

}  // namespace
}  // namespace lmforge::model
