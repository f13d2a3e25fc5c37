// Evaluation: BLEU, 13a tokenization and ROUGE-L on hand-computed examples (python3-sacrebleu and rouge-score are
// not packaged in Debian, so the expected values are worked out by hand in the comments); sliding-window
// perplexity and continuation log-likelihoods against CausalLM::forward computed window by window.
#include "lmforge/eval/eval.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "lmforge/io/safetensors.h"
#include "lmforge/tokenizer/tokenizer.h"
#include "quant/lm_perplexity.h"

namespace lmforge::eval {
namespace {

// The error a loader gives for a file holding one line ("no error" when it loads).
template <class Load>
std::string load_error(const std::string& path, const std::string& line, Load load) {
  std::ofstream(path) << line << "\n";
  try {
    load(path);
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::string("no error");
}

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

// No n-gram matched at all: sacrebleu stops early at 0 with every precision 0 (the "exp" smoothing would otherwise give
// 100 / (2 * 4), 100 / (4 * 3), ... and a positive score).
TEST(Bleu, NoMatchIsZero) {
  const BleuResult b = corpus_bleu({"a b c d"}, {"w x y z"});
  EXPECT_EQ(b.score, 0.0);
  for (double p : b.precisions) EXPECT_EQ(p, 0.0);
  EXPECT_EQ(b.bp, 1.0);
  EXPECT_EQ(b.sys_len, 4);
}

// Several references: each n-gram clipped by its count in the reference with most of it; the reference length is the
// closest one's (the shorter on a tie).
TEST(Bleu, HandComputedMultiReference) {
  // hyp "the cat sat on the mat" against "the cat is on the mat" and "a cat sat on a mat": 1-grams 6/6 (the x2 from
  // the first, sat from the second), 2-grams 5/5, 3-grams 2/4 (cat sat on, on the mat), 4-grams 0/3 -> 100 / 6:
  // (100 * 100 * 50 * 16.667)^(1/4) = 53.7285.
  BleuResult b = corpus_bleu_multi({"the cat sat on the mat"}, {{"the cat is on the mat", "a cat sat on a mat"}});
  EXPECT_NEAR(b.score, 53.7284965911771, 1e-9);
  EXPECT_EQ(b.ref_len, 6);
  // One reference in a list is the single-reference score.
  EXPECT_EQ(corpus_bleu_multi({"the cat sat on the mat"}, {{"the cat is on the mat"}}).score,
            corpus_bleu({"the cat sat on the mat"}, {"the cat is on the mat"}).score);
  // Hypothesis of 5 tokens, references of 4 and 6: a tie at distance 1 takes 4 (no brevity penalty); 6 and 8 take 6.
  b = corpus_bleu_multi({"the cat is on the"}, {{"the cat is on", "the cat is on the mat"}});
  EXPECT_EQ(b.ref_len, 4);
  EXPECT_EQ(b.bp, 1.0);
  b = corpus_bleu_multi({"the cat is on the"}, {{"the cat is on the mat", "the cat is on the mat right now"}});
  EXPECT_EQ(b.ref_len, 6);
  EXPECT_NEAR(b.score, 100 * std::exp(1.0 - 6.0 / 5.0), 1e-9);
  EXPECT_THROW(corpus_bleu_multi({"a"}, {{}}), Error);
}

// Generation task files: one reference or several; malformed ones name the file, line and field.
TEST(GenTasks, LoadsOneOrSeveralReferencesAndRejectsBadOnes) {
  const std::string path = ::testing::TempDir() + "/gen_tasks.jsonl";
  std::ofstream(path) << R"({"prompt": "a", "reference": "b"})"
                      << "\n"
                      << R"({"prompt": "c", "references": ["d", "e"]})"
                      << "\n";
  const std::vector<GenItem> items = load_gen_tasks(path);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].references, std::vector<std::string>{"b"});
  EXPECT_EQ(items[1].references, (std::vector<std::string>{"d", "e"}));
  const auto error_of = [&](const std::string& line) { return load_error(path, line, load_gen_tasks); };
  for (const char* bad : {R"({"prompt": "c", "references": []})", R"({"prompt": "c", "references": "d"})",
                          R"({"prompt": "c", "references": ["d", 3]})"})
    EXPECT_NE(error_of(bad).find(":1: field 'references' must be a non-empty array of strings"), std::string::npos)
        << bad;
  EXPECT_NE(error_of(R"({"prompt": "c"})").find(":1: field 'reference' must be a string"), std::string::npos);
  EXPECT_NE(error_of(R"({"reference": "c"})").find(":1: field 'prompt' must be a string"), std::string::npos);
  EXPECT_NE(error_of(R"({"prompt": "c", "reference": "d"} trailing)").find(":1: not a JSON object"), std::string::npos);
}

TEST(RougeL, HandComputed) {
  // LCS "the cat on the mat" = 5 of 6 and 6 tokens: F = 5/6 (case and punctuation ignored).
  EXPECT_NEAR(rouge_l("The cat sat on the mat.", "the cat is on the mat"), 5.0 / 6, 1e-12);
  // LCS 2 ("the gunman"): P 2/4, R 2/6, F = 2PR/(P+R) = 0.4.
  EXPECT_NEAR(rouge_l("police killed the gunman", "the gunman was killed by police"), 0.4, 1e-12);
  // Several references: the best F (rouge-score's score_multi).
  EXPECT_NEAR(rouge_l_multi("The cat sat on the mat.", {"the gunman was killed by police", "the cat is on the mat"}),
              5.0 / 6, 1e-12);
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

// Several continuations of one context: the context prefilled once, its cache forked for each (the engine's
// fork_sequence), against the full forward of context + continuation; a context too long for the model keeps its
// last tokens; every sequence is freed.
TEST(Choice, ForkedContinuationsMatchForward) {
  const Tiny t;
  model::Engine e = model::Engine::from_model(t.m);
  std::mt19937 rng(11);
  const auto draw = [&](size_t n) {
    std::vector<int32_t> v(n);
    for (auto& x : v) x = static_cast<int32_t>(rng() % 96);
    return v;
  };
  const int64_t max_pos = t.cfg.max_position_embeddings;  // 64
  for (const size_t ctx_len : {size_t{1}, size_t{9}, size_t{40}, size_t{70}}) {
    SCOPED_TRACE("context " + std::to_string(ctx_len));
    const std::vector<int32_t> ctx = draw(ctx_len);
    const std::vector<std::vector<int32_t>> conts = {draw(1), draw(2), draw(5), draw(12)};
    bool truncated = false;
    const std::vector<double> got = continuation_logliks(e, ctx, conts, &truncated);
    ASSERT_EQ(got.size(), conts.size());
    // The context the engine kept: its last max_pos - 12 tokens.
    const size_t keep = std::min<size_t>(ctx_len, static_cast<size_t>(max_pos) - 12);
    EXPECT_EQ(truncated, keep < ctx_len);
    const std::vector<int32_t> kept(ctx.end() - static_cast<int64_t>(keep), ctx.end());
    for (size_t k = 0; k < conts.size(); ++k) {
      std::vector<int32_t> all = kept;
      all.insert(all.end(), conts[k].begin(), conts[k].end());
      const std::vector<double> lp = t.window_logprobs(all, 0, static_cast<int64_t>(all.size()));
      double want = 0;
      for (size_t i = keep; i < all.size(); ++i) want += lp[i];
      EXPECT_NEAR(got[k], want, 1e-4) << "continuation " << k;
      if (keep == ctx_len) {
        EXPECT_NEAR(got[k], continuation_loglik(e, ctx, conts[k]), 1e-4);
      }
    }
    EXPECT_EQ(e.num_sequences(), 0u);
  }
  EXPECT_THROW(continuation_logliks(e, {1, 2}, {draw(static_cast<size_t>(max_pos))}), Error);
  EXPECT_THROW(continuation_logliks(e, {1, 2}, {{3}, {}}), Error);
  EXPECT_THROW(continuation_logliks(e, {}, {{3}}), Error);
  EXPECT_EQ(e.num_sequences(), 0u);
}

// Continuations are split from the whole encoding, as lm-evaluation-harness splits them: with a SentencePiece-style
// tokenizer (Llama-2's legacy Metaspace), " blue" on its own starts with an extra "▁" token that "The sky is blue"
// does not have.
TEST(Choice, ContinuationsSplitAsTheHarnessDoes) {
  const tokenizer::Tokenizer tok =
      tokenizer::Tokenizer::from_file(LMFORGE_SOURCE_DIR "/tests/tokenizer/fixtures/mini_spm_legacy.tokenizer.json");
  const auto enc = [&](const std::string& text) {
    tokenizer::EncodeOptions o;
    o.add_special_tokens = false;
    const std::vector<uint32_t> ids = tok.encode(text, o);
    return std::vector<int32_t>(ids.begin(), ids.end());
  };
  const std::vector<std::vector<int32_t>> conts = choice_continuations(enc, "The sky is", {" blue", " the"});
  ASSERT_EQ(conts.size(), 2u);
  const size_t n = enc("The sky is").size();
  for (const auto& [k, text] : {std::pair<size_t, std::string>{0, "The sky is blue"}, {1, "The sky is the"}}) {
    const std::vector<int32_t> whole = enc(text);
    EXPECT_EQ(conts[k], std::vector<int32_t>(whole.begin() + static_cast<int64_t>(n), whole.end())) << text;
  }
  EXPECT_EQ(enc(" blue").size(), conts[0].size() + 1);  // the standalone encoding's extra prefix token
  // Empty context: the continuation's own encoding.
  EXPECT_EQ(choice_continuations(enc, "", {" blue"})[0], enc(" blue"));
}

// acc picks the highest log-likelihood, acc_norm the highest per character of the choice (code points, as Python's
// len(): per byte, "ééé" would win the second case).
TEST(Choice, ContextIdsAsTheHarnessScoresThem) {
  // The tokenizer's BOS kept; a context written with the BOS text gets no second one; an empty context is BOS,
  // else EOS (the harness's prefix token); with neither, an error.
  EXPECT_EQ(choice_context({1, 7, 8}, false, 1, 1), (std::vector<int32_t>{1, 7, 8}));
  EXPECT_EQ(choice_context({1, 1, 7}, false, 1, 1), (std::vector<int32_t>{1, 7}));
  EXPECT_EQ(choice_context({7, 8}, false, -1, 2), (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(choice_context({1}, true, 1, 1), (std::vector<int32_t>{1}));
  EXPECT_EQ(choice_context({}, true, -1, 2), (std::vector<int32_t>{2}));
  EXPECT_THROW(choice_context({}, true, -1, -1), Error);
}

TEST(Choice, PicksNormaliseByCharacters) {
  EXPECT_EQ(utf8_length("h\xc3\xa9llo \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\xa6\x99"), 10);
  EXPECT_EQ(choice_picks({-6.0, -4.5}, {"abcdef", "ab"}), std::make_pair(int64_t{1}, int64_t{0}));
  EXPECT_EQ(choice_picks({-3.3, -4.0}, {"\xc3\xa9\xc3\xa9\xc3\xa9", "abcd"}), std::make_pair(int64_t{0}, int64_t{1}));
  EXPECT_EQ(choice_picks({-1.0, -1.0}, {"a", "b"}), std::make_pair(int64_t{0}, int64_t{0}));  // ties: the first
  EXPECT_THROW(choice_picks({-1.0}, {"a", "b"}), Error);
}

// Task files: our items, lm-evaluation-harness documents (query / gold, the " " delimiter), labels as digit strings;
// errors name the file, line and field.
TEST(Choice, LoadsOursAndHarnessDocuments) {
  const std::string path = ::testing::TempDir() + "/choice_tasks.jsonl";
  std::ofstream(path) << R"({"context": "The sky is", "choices": [" blue", " green"], "label": 0})"
                      << "\n\n"
                      << R"({"query": "Question: 2+2?\nAnswer:", "choices": ["4", "5", "6"], "gold": 0})"
                      << "\n"
                      << R"({"context": "x", "choices": ["a", "b", "c", "d"], "label": "3"})"
                      << "\n";
  const std::vector<ChoiceItem> items = load_choice_tasks(path);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].delimiter, "");
  EXPECT_EQ(items[0].choices[1], " green");
  EXPECT_EQ(items[1].context, "Question: 2+2?\nAnswer:");
  EXPECT_EQ(items[1].delimiter, " ");
  EXPECT_EQ(items[1].label, 0);
  EXPECT_EQ(items[2].label, 3);
  const auto error_of = [&](const std::string& line) { return load_error(path, line, load_choice_tasks); };
  EXPECT_NE(error_of(R"({"choices": ["a", "b"], "label": 0})").find(":1: field 'context' must be a string"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"query": "q", "choices": ["a", "b"], "gold": 2})").find(":1: gold 2 is not an index"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"context": "q", "choices": ["a", "b"], "label": "B"})")
                .find(":1: field 'label' must be an integer (or a string of digits)"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"context": "q", "choices": ["a"], "label": 0})").find("at least 2"), std::string::npos);
  EXPECT_NE(error_of(R"({"context": "q", "choices": ["a", "b"], "label": "12345678901234567890"})")
                .find("must be an integer (or a string of digits)"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"context": "q", "choices": ["a", ""], "label": 0})").find("non-empty strings"),
            std::string::npos);
}

}  // namespace
}  // namespace lmforge::eval
