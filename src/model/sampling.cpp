// Sampling, stop strings and the generation loop (semantics in sampling.h).
#include "lmforge/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "lmforge/core/error.h"
#include "lmforge/kernels/cpu.h"

namespace lmforge::model {

namespace {

// Reductions over a vocabulary row in plain loops with four accumulators (kept in registers: a running value the
// compiler leaves in memory costs a store-to-load round trip, ~9 cycles, per element).
double max_of(const std::vector<double>& x) {
  double m[4] = {x[0], x[0], x[0], x[0]};
  const size_t n = x.size();
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) m[k] = x[i + k] > m[k] ? x[i + k] : m[k];
  for (; i < n; ++i) m[0] = x[i] > m[0] ? x[i] : m[0];
  return std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
}

// Sum of the elements of p (below `below`, if given) in double.
double sum_below(const float* p, int64_t n, float below = std::numeric_limits<float>::infinity()) {
  double a[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) a[k] += p[i + k] < below ? p[i + k] : 0.0f;
  for (; i < n; ++i) a[0] += p[i] < below ? p[i] : 0.0f;
  return (a[0] + a[1]) + (a[2] + a[3]);
}

}  // namespace

void validate(const SamplingParams& p) {
  LMF_CHECK(p.temperature >= 0 && std::isfinite(p.temperature), "sampling: temperature must be >= 0, got ",
            p.temperature);
  LMF_CHECK(p.top_p > 0 && p.top_p <= 1, "sampling: top_p must be in (0, 1], got ", p.top_p);
  LMF_CHECK(p.min_p >= 0 && p.min_p <= 1, "sampling: min_p must be in [0, 1], got ", p.min_p);
  LMF_CHECK(p.top_k >= 0, "sampling: top_k must be >= 0 (0: off), got ", p.top_k);
  LMF_CHECK(p.repetition_penalty > 0 && std::isfinite(p.repetition_penalty),
            "sampling: repetition_penalty must be > 0, got ", p.repetition_penalty);
  LMF_CHECK(std::isfinite(p.presence_penalty) && std::isfinite(p.frequency_penalty),
            "sampling: presence_penalty and frequency_penalty must be finite");
  LMF_CHECK(p.max_tokens >= 0, "sampling: max_tokens must be >= 0, got ", p.max_tokens);
  for (const std::string& s : p.stop) LMF_CHECK(!s.empty(), "sampling: a stop string is empty");
}

Sampler::Sampler(const SamplingParams& p, const std::vector<int32_t>& prompt) : p_(p), rng_(p.seed) {
  validate(p);
  for (int32_t t : prompt) prompt_seen_[t] = 1;
}

void Sampler::accept(int32_t token) {
  ++output_count_[token];
}

std::vector<double> Sampler::processed_logits(const float* logits, int64_t vocab) const {
  std::vector<double> x(logits, logits + vocab);
  for (const auto& [id, b] : p_.logit_bias)
    if (id >= 0 && id < vocab) x[id] += b;
  if (p_.repetition_penalty != 1.0) {
    auto penalise = [&](int32_t id) {
      if (id < 0 || id >= vocab) return;
      x[id] = x[id] > 0 ? x[id] / p_.repetition_penalty : x[id] * p_.repetition_penalty;
    };
    for (const auto& [id, n] : prompt_seen_) penalise(id);
    for (const auto& [id, n] : output_count_)
      if (!prompt_seen_.count(id)) penalise(id);
  }
  for (const auto& [id, n] : output_count_)
    if (id >= 0 && id < vocab) x[id] -= p_.presence_penalty + p_.frequency_penalty * static_cast<double>(n);
  return x;
}

// Steps 4-7 without sorting the vocabulary (a stable sort of 32K ids took ~4 ms a token, as long as a q8_0 decode
// step of infer-250m). Probabilities in float (one vectorised softmax) pick a set S of the most likely tokens,
// lowering a threshold until S surely holds what top-k / top-p keep (a 1% margin covers float's rounding); only S
// is sorted, and its tokens' probabilities are computed again in double, so every comparison with top_p and min_p
// is made on the same double values as a full sort would use. The tokens outside S enter only the normaliser, in
// float. Without top-k and top-p nothing is ordered: min_p is one pass.
std::vector<std::pair<int32_t, double>> Sampler::kept(const float* logits, int64_t vocab) const {
  const std::vector<double> x = processed_logits(logits, vocab);
  const double mx = max_of(x);
  const double inv_t = 1.0 / p_.temperature;
  std::vector<float> pf(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) pf[i] = static_cast<float>((x[i] - mx) * inv_t);
  kernels::cpu::softmax(pf.data(), pf.data(), 1, vocab);
  const float pmax = pf[kernels::cpu::argmax(pf.data(), vocab)];
  std::vector<std::pair<int32_t, double>> out;
  const bool ordered = p_.top_k > 0 || p_.top_p < 1.0;
  if (!ordered && p_.min_p <= 0) {  // every token, float probabilities
    const double total = sum_below(pf.data(), vocab);
    out.reserve(static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i)
      if (pf[i] > 0) out.emplace_back(static_cast<int32_t>(i), pf[i] / total);
    return out;
  }
  // S: the tokens with pf >= t. `sure`: those with pf >= 1.01 t, whose double probabilities are above those of
  // every token outside S. t falls by 16x until the sure tokens hold what top-k / top-p keep (t = 0: all tokens).
  const float min_t = std::numeric_limits<float>::min();
  float t = ordered ? pmax / 16 : static_cast<float>(p_.min_p) * pmax * 0.99f;
  for (; ordered; t /= 16) {
    if (t < min_t) {
      t = 0;
      break;
    }
    const float t_sure = 1.01f * t;
    if (p_.top_k > 0) {
      int64_t sure = 0;
      for (int64_t i = 0; i < vocab; ++i) sure += pf[i] >= t_sure;
      if (sure >= p_.top_k) break;
    } else if (1.0 - sum_below(pf.data(), vocab, t_sure) >= p_.top_p + 1e-3) {
      break;
    }
  }
  std::vector<int32_t> S;
  for (int64_t i = 0; i < vocab; ++i)
    if (pf[i] >= t) S.push_back(static_cast<int32_t>(i));
  const double outside = t > 0 ? sum_below(pf.data(), vocab, t) : 0.0;             // float mass outside S
  auto exact = [&](int32_t i) { return std::exp((x[i] - mx) / p_.temperature); };  // as a full sort would use
  std::vector<double> e(S.size());
  double inside = 0;
  for (size_t j = 0; j < S.size(); ++j) inside += e[j] = exact(S[j]);
  // The normaliser in double units: the float mass outside S is that share of the whole.
  const double total = outside < 1 ? inside / (1 - outside) : inside;
  std::vector<size_t> order(S.size());
  std::iota(order.begin(), order.end(), size_t{0});
  int64_t keep = static_cast<int64_t>(S.size());
  if (ordered) {
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return e[a] > e[b]; });  // ties: lower id
    if (p_.top_k > 0) keep = std::min<int64_t>(keep, p_.top_k);
    if (p_.top_p < 1.0) {
      double kept_mass = 0, cum = 0;
      if (p_.top_k > 0) {
        for (int64_t i = 0; i < keep; ++i) kept_mass += e[order[i]];
      } else {
        kept_mass = total;
      }
      int64_t n = 0;
      // top-p on the distribution left by top-k, renormalised (vLLM applies top-k, then top-p on its softmax).
      while (n < keep) {
        cum += e[order[n]] / kept_mass;
        ++n;
        if (cum >= p_.top_p) break;
      }
      keep = n;
    }
  }
  const double thresh = p_.min_p * (order.empty() ? 0.0
                                    : ordered     ? e[order[0]]
                                                  : *std::max_element(e.begin(), e.end()));
  std::vector<char> in(S.size(), 0);
  for (int64_t i = 0; i < keep; ++i) in[order[i]] = e[order[i]] >= thresh;
  double sum = 0;
  for (size_t j = 0; j < S.size(); ++j)
    if (in[j]) sum += e[j];
  for (size_t j = 0; j < S.size(); ++j)
    if (in[j]) out.emplace_back(S[j], e[j] / sum);
  return out;
}

std::vector<double> Sampler::probabilities(const float* logits, int64_t vocab) const {
  std::vector<double> prob(static_cast<size_t>(vocab), 0.0);
  if (p_.temperature == 0) {
    const std::vector<double> x = processed_logits(logits, vocab);
    prob[std::max_element(x.begin(), x.end()) - x.begin()] = 1.0;
    return prob;
  }
  for (const auto& [id, q] : kept(logits, vocab)) prob[id] = q;
  return prob;
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (p_.temperature == 0) {
    // Greedy: the logits as they are where nothing would change them.
    if (p_.logit_bias.empty() && p_.repetition_penalty == 1.0 && p_.presence_penalty == 0 && p_.frequency_penalty == 0)
      return static_cast<int32_t>(kernels::cpu::argmax(logits, vocab));
    const std::vector<double> x = processed_logits(logits, vocab);
    int64_t best = 0;  // the first of equal maxima, as std::max_element, without its load-compare chain
    double m = x[0];
    for (int64_t i = 1; i < vocab; ++i)
      if (x[i] > m) m = x[i], best = i;
    return static_cast<int32_t>(best);
  }
  const std::vector<std::pair<int32_t, double>> cand = kept(logits, vocab);
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  double cum = 0;
  int32_t last = 0;
  for (const auto& [id, q] : cand) {  // id order
    last = id;
    cum += q;
    if (u < cum) return last;
  }
  return last;  // rounding left u above the total
}

StopStream::StopStream(std::vector<std::string> stops) : stops_(std::move(stops)) {}

namespace {

// Bytes at the end of s that start a UTF-8 sequence not yet complete.
size_t incomplete_utf8_tail(const std::string& s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(3, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const size_t need = c > 0xF4 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

// Invalid UTF-8 sequences become U+FFFD, one per maximal invalid subpart (Rust's from_utf8_lossy, as the
// tokenizer's decode does), so streamed text is always valid UTF-8.
std::string repair(const std::string& s) {
  std::string out;
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
      len = 1;
    else if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
      len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
      len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    size_t k = 1;
    if (len > 1) {
      for (; k < len && i + k < n; ++k) {
        const auto d = static_cast<unsigned char>(s[i + k]);
        if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) break;
      }
    }
    if (len > 0 && k == len) {
      out.append(s, i, len);
    } else {
      out += "\xEF\xBF\xBD";
      if (len == 0) k = 1;
    }
    i += k;
  }
  return out;
}

}  // namespace

std::string StopStream::push(std::string_view bytes) {
  if (stopped_) return {};
  pending_.append(bytes);
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return repair(out);
  }
  // Hold back the longest tail that is a proper prefix of a stop string, and an incomplete character.
  size_t hold = incomplete_utf8_tail(pending_);
  for (const std::string& s : stops_)
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return repair(out);
}

std::string StopStream::finish() {
  if (stopped_) return {};
  std::string out = std::move(pending_);
  pending_.clear();
  return repair(out);
}

GenerateResult generate(Engine& engine, const std::vector<int32_t>& prompt, const SamplingParams& p,
                        const std::function<std::string(int32_t)>& token_bytes,
                        const std::function<void(std::string_view)>& on_text) {
  const ModelConfig& c = engine.config();
  GenerateResult res;
  res.prompt_tokens = static_cast<int64_t>(prompt.size());
  Sampler sampler(p, prompt);
  StopStream stream(p.stop);
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    res.text += s;
    if (on_text) on_text(s);
  };
  std::vector<int32_t> stop_ids = p.stop_ids;
  if (!p.ignore_eos) {
    for (int64_t e : c.eos_token_ids) stop_ids.push_back(static_cast<int32_t>(e));
    stop_ids.insert(stop_ids.end(), p.eos_ids.begin(), p.eos_ids.end());
  }
  res.finish_reason = "length";
  if (p.max_tokens == 0) return res;
  const SeqId seq = engine.add_sequence();
  try {
    Tensor logits = engine.prefill(seq, prompt);
    for (int64_t i = 0; i < p.max_tokens; ++i) {
      const int32_t tok = sampler.sample(logits.data<float>(), c.vocab_size);
      if (std::find(stop_ids.begin(), stop_ids.end(), tok) != stop_ids.end()) {
        res.finish_reason = "stop";
        break;
      }
      sampler.accept(tok);
      res.tokens.push_back(tok);
      emit(stream.push(token_bytes(tok)));
      if (stream.stopped()) {
        res.finish_reason = "stop";
        break;
      }
      if (i + 1 == p.max_tokens || engine.length(seq) >= c.max_position_embeddings) break;
      logits = engine.decode({seq}, {tok});
    }
  } catch (...) {
    engine.free_sequence(seq);
    throw;
  }
  engine.free_sequence(seq);
  emit(stream.finish());
  return res;
}

}  // namespace lmforge::model
