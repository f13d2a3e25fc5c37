// Evaluation: BLEU, 13a tokenization and ROUGE-L on hand-computed examples (python3-sacrebleu and rouge-score are
// not packaged in Debian, so the expected values are worked out by hand in the comments); sliding-window
// perplexity and continuation log-likelihoods against CausalLM::forward computed window by window.
#include "lmforge/eval/eval.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lmforge/io/safetensors.h"
#include "quant/lm_perplexity.h"

namespace lmforge::eval {
namespace {

TEST(Bleu, Tokenize13a) {
  // Symbols split off ($ ! &), commas/periods split unless between digits, a dash after a digit split, &amp;
  // unescaped first.
  const std::vector<std::string> want = {"Hello", ",", "world", "!", "It",   "costs", "$",
                                         "3.50",  "-", "4.00",  "&", "more", "."};
  EXPECT_EQ(tokenize_13a("Hello, world! It costs $3.50-4.00 &amp; more."), want);
  EXPECT_EQ(tokenize_13a("a-\nb\nc"), (std::vector<std::string>{"ab", "c"}));
}

TEST(Bleu, HandComputedCorpusScores) {
  // hyp "the cat sat on the mat" vs ref "the cat is on the mat": 1-grams 5/6, 2-grams 3/5, 3-grams 1/4, 4-grams
  // 0/3 -> exp smoothing 100 / (2 * 3); BLEU = geometric mean of 83.33, 60, 25, 16.67 = 37.9918.
  BleuResult b = corpus_bleu({"the cat sat on the mat"}, {"the cat is on the mat"});
  EXPECT_NEAR(b.score, 37.99178428, 1e-6);
  EXPECT_NEAR(b.precisions[3], 100.0 / 6, 1e-9);
  EXPECT_EQ(b.bp, 1.0);
  // Corpus statistics are summed before the precisions: + "a dog ran" vs "the dog ran" gives 7/9, 4/7, 1/5, 0/3.
  b = corpus_bleu({"the cat sat on the mat", "a dog ran"}, {"the cat is on the mat", "the dog ran"});
  EXPECT_NEAR(b.score, 34.88783798, 1e-6);
  // No trigrams at all: that precision stays 0 and BLEU is 0 (sacrebleu without effective order).
  EXPECT_NEAR(corpus_bleu({"the cat"}, {"the cat is on the mat"}).score, 0.0, 1e-12);
  // Brevity: hyp 5 tokens, ref 6, all n-grams of the hyp match: 100 * exp(1 - 6/5).
  b = corpus_bleu({"the cat is on the"}, {"the cat is on the mat"});
  EXPECT_NEAR(b.bp, std::exp(1.0 - 6.0 / 5.0), 1e-12);
  EXPECT_NEAR(b.score, 100 * std::exp(1.0 - 6.0 / 5.0), 1e-9);
  EXPECT_NEAR(corpus_bleu({"same words here ok"}, {"same words here ok"}).score, 100.0, 1e-9);
  EXPECT_THROW(corpus_bleu({"a"}, {}), Error);
}

TEST(RougeL, HandComputed) {
  // LCS "the cat on the mat" = 5 of 6 and 6 tokens: F = 5/6 (case and punctuation ignored).
  EXPECT_NEAR(rouge_l("The cat sat on the mat.", "the cat is on the mat"), 5.0 / 6, 1e-12);
  // LCS 2 ("the gunman"): P 2/4, R 2/6, F = 2PR/(P+R) = 0.4.
  EXPECT_NEAR(rouge_l("police killed the gunman", "the gunman was killed by police"), 0.4, 1e-12);
  EXPECT_EQ(rouge_l("", "x"), 0.0);
  EXPECT_EQ(rouge_l("a b", "c d"), 0.0);
}

struct Tiny {
  model::ModelConfig cfg;
  model::CausalLM m;
  Tiny()
      : cfg(model::load_model_config(LMFORGE_SOURCE_DIR "/tests/reference/fixtures/model_llama_gqa_sliding.json")),
        m(cfg) {
    std::map<std::string, Tensor> w;
    for (const auto& [k, v] :
         io::load_safetensors(LMFORGE_SOURCE_DIR "/tests/reference/fixtures/model_llama_gqa_sliding.safetensors"))
      if (k.rfind("model.", 0) == 0 || k.rfind("lm_head.", 0) == 0) w.emplace(k, v);
    m.load_weights(w, "fixture");
  }
  // log p(ids[j] | ids[begin..j)) from the full forward of the window [begin, end).
  std::vector<double> window_logprobs(const std::vector<int32_t>& ids, int64_t begin, int64_t end) const {
    const std::vector<int32_t> w(ids.begin() + begin, ids.begin() + end);
    const Tensor l = m.forward(Tensor::from_ints(w, {1, end - begin})).logits.value();
    const int64_t V = cfg.vocab_size;
    std::vector<double> out(static_cast<size_t>(end - begin), NAN);
    for (int64_t j = begin + 1; j < end; ++j) {
      const float* row = l.data<float>() + (j - begin - 1) * V;
      double mx = row[0], z = 0;
      for (int64_t k = 0; k < V; ++k) mx = std::max<double>(mx, row[k]);
      for (int64_t k = 0; k < V; ++k) z += std::exp(row[k] - mx);
      out[j - begin] = row[ids[j]] - mx - std::log(z);
    }
    return out;
  }
};

TEST(Perplexity, SlidingWindowsScoreEachTokenOnce) {
  const Tiny t;
  model::Engine e = model::Engine::from_model(t.m);
  std::mt19937 rng(3);
  std::vector<int32_t> ids(50);
  for (auto& x : ids) x = static_cast<int32_t>(rng() % 96);
  // ctx 16, stride 6: windows [0,16) [6,22) [12,28) ... each scoring the tokens past the previous window's end.
  double nll = 0;
  int64_t n = 0, prev = 0, windows = 0;
  for (int64_t b = 0;; b += 6) {
    const int64_t end = std::min<int64_t>(b + 16, 50);
    const std::vector<double> lp = t.window_logprobs(ids, b, end);
    for (int64_t j = std::max(prev, b + 1); j < end; ++j) nll -= lp[j - b], ++n;
    prev = end;
    ++windows;
    if (end == 50) break;
  }
  using lm::perplexity;
  const lm::PerplexityResult r = perplexity(e, ids, {16, 6});
  EXPECT_EQ(r.tokens, 49);  // every token but the first
  EXPECT_EQ(n, 49);
  EXPECT_EQ(r.windows, windows);
  EXPECT_NEAR(r.nll, nll / n, 1e-5);
  EXPECT_NEAR(r.ppl, std::exp(nll / n), 1e-4 * r.ppl);
  // stride == ctx: disjoint windows; each window's first token has no context and is not scored.
  const lm::PerplexityResult d = perplexity(e, ids, {10, 10});
  // The f32 reference model gives the same windows.
  const lm::PerplexityResult f = perplexity(t.m, ids, {16, 6});
  EXPECT_EQ(f.tokens, r.tokens);
  EXPECT_EQ(f.windows, r.windows);
  EXPECT_NEAR(f.nll, r.nll, 1e-5);
  EXPECT_EQ(d.windows, 5);
  EXPECT_EQ(d.tokens, 45);
  EXPECT_THROW(perplexity(e, ids, {100, 10}), Error);  // past max_position_embeddings 64
  EXPECT_THROW(perplexity(t.m, ids, {100, 10}), Error);
  EXPECT_THROW(perplexity(e, ids, {10, 11}), Error);
  EXPECT_THROW(perplexity(e, ids, {10, -1}), Error);
  EXPECT_EQ(e.num_sequences(), 0u);
}

TEST(Choice, ContinuationLogLikelihoodMatchesForward) {
  const Tiny t;
  model::Engine e = model::Engine::from_model(t.m);
  const std::vector<int32_t> ctx = {3, 14, 15, 9, 2}, cont = {6, 5, 35};
  std::vector<int32_t> all = ctx;
  all.insert(all.end(), cont.begin(), cont.end());
  const std::vector<double> lp = t.window_logprobs(all, 0, 8);
  EXPECT_NEAR(continuation_loglik(e, ctx, cont), lp[5] + lp[6] + lp[7], 1e-4);
}

}  // namespace
}  // namespace lmforge::eval
