// Sampling, stop strings and the generation loop (semantics in sampling.h).
#include "lmforge/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "lmforge/core/error.h"
#include "lmforge/kernels/cpu.h"

namespace lmforge::model {

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

std::vector<double> Sampler::probabilities(const float* logits, int64_t vocab) const {
  std::vector<double> x = processed_logits(logits, vocab);
  std::vector<double> prob(static_cast<size_t>(vocab), 0.0);
  if (p_.temperature == 0) {
    prob[std::max_element(x.begin(), x.end()) - x.begin()] = 1.0;
    return prob;
  }
  const double mx = *std::max_element(x.begin(), x.end());
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += prob[i] = std::exp((x[i] - mx) / p_.temperature);
  for (double& v : prob) v /= sum;
  // Order by probability (ties to the lower id) for top-k and top-p.
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return prob[a] > prob[b]; });
  int64_t keep = vocab;
  if (p_.top_k > 0) keep = std::min(keep, p_.top_k);
  if (p_.top_p < 1.0) {
    double cum = 0, kept = 0;
    for (int64_t i = 0; i < keep; ++i) kept += prob[order[i]];
    int64_t n = 0;
    // top-p on the distribution left by top-k, renormalised (vLLM applies top-k, then top-p on its softmax).
    while (n < keep) {
      cum += prob[order[n]] / kept;
      ++n;
      if (cum >= p_.top_p) break;
    }
    keep = n;
  }
  const double thresh = p_.min_p * prob[order[0]];
  for (int64_t i = 0; i < vocab; ++i)
    if (i >= keep || prob[order[i]] < thresh) prob[order[i]] = 0.0;
  double total = 0;
  for (double v : prob) total += v;
  for (double& v : prob) v /= total;
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
  const std::vector<double> prob = probabilities(logits, vocab);
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  double cum = 0;
  int32_t last = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (prob[i] <= 0) continue;
    last = static_cast<int32_t>(i);
    cum += prob[i];
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
  if (!p.ignore_eos)
    for (int64_t e : c.eos_token_ids) stop_ids.push_back(static_cast<int32_t>(e));
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
