// Multiple-choice accuracy by log-likelihood (lm-evaluation-harness style).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <span>

#include "lmforge/core/error.h"
#include "lmforge/eval/eval.h"
#include "lmforge/tokenizer/chat_template.h"

namespace lmforge::eval {
namespace {

// log softmax(row)[token] over a vocabulary of V, in double.
double log_prob(const float* row, int64_t V, int32_t token) {
  float mx = row[0];
  for (int64_t k = 1; k < V; ++k) mx = std::max(mx, row[k]);
  double z = 0;
  for (int64_t k = 0; k < V; ++k) z += std::exp(static_cast<double>(row[k]) - mx);
  return static_cast<double>(row[token]) - mx - std::log(z);
}

// Frees the engine's sequence when it goes out of scope (also on an exception).
struct SequenceGuard {
  model::Engine& e;
  model::SeqId id;
  ~SequenceGuard() { e.free_sequence(id); }
};

// The id of a special token: its text in tokenizer_config.json looked up in the tokenizer, else config.json's id.
int32_t special_id(const ModelDir& m, const std::string& text, int64_t config_id) {
  if (const int32_t id = m.token_id(text); id >= 0) return id;
  return config_id >= 0 && config_id < m.engine.config().vocab_size ? static_cast<int32_t>(config_id) : -1;
}

}  // namespace

int64_t utf8_length(const std::string& s) {
  int64_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

std::vector<std::vector<int32_t>> choice_continuations(
    const std::function<std::vector<int32_t>(const std::string&)>& encode_plain, const std::string& context,
    const std::vector<std::string>& continuations) {
  const size_t n = encode_plain(context).size();
  std::vector<std::vector<int32_t>> out;
  for (const std::string& c : continuations) {
    std::vector<int32_t> whole = encode_plain(context + c);
    out.push_back(whole.size() > n ? std::vector<int32_t>(whole.begin() + static_cast<int64_t>(n), whole.end())
                                   : encode_plain(c));
  }
  return out;
}

std::pair<int64_t, int64_t> choice_picks(const std::vector<double>& loglik, const std::vector<std::string>& choices) {
  LMF_CHECK(!loglik.empty() && loglik.size() == choices.size(), "choice: ", loglik.size(), " log-likelihoods for ",
            choices.size(), " choices");
  int64_t best = 0, best_norm = 0;
  double bv = -INFINITY, bn = -INFINITY;
  for (size_t k = 0; k < loglik.size(); ++k) {
    // Per character of the choice itself (not the moved whitespace or delimiter): the harness's len(choice).
    const double vn = loglik[k] / static_cast<double>(std::max<int64_t>(1, utf8_length(choices[k])));
    if (loglik[k] > bv) bv = loglik[k], best = static_cast<int64_t>(k);
    if (vn > bn) bn = vn, best_norm = static_cast<int64_t>(k);
  }
  return {best, best_norm};
}

double continuation_loglik(model::Engine& engine, const std::vector<int32_t>& context,
                           const std::vector<int32_t>& continuation) {
  LMF_CHECK(!context.empty() && !continuation.empty(), "choice: empty context or continuation");
  std::vector<int32_t> all = context;
  all.insert(all.end(), continuation.begin(), continuation.end());
  const int64_t ctx = engine.config().max_position_embeddings;
  LMF_CHECK(static_cast<int64_t>(all.size()) <= ctx, "choice: context + continuation are ", all.size(),
            " tokens; the model's context is ", ctx);
  const int64_t V = engine.config().vocab_size, C = static_cast<int64_t>(context.size());
  const SequenceGuard s{engine, engine.add_sequence()};
  const Tensor logits = engine.prefill(s.id, all, true);
  double ll = 0;
  for (size_t i = 0; i < continuation.size(); ++i)
    ll += log_prob(logits.data<float>() + (C - 1 + static_cast<int64_t>(i)) * V, V, continuation[i]);
  return ll;
}

std::vector<double> continuation_logliks(model::Engine& engine, const std::vector<int32_t>& context,
                                         const std::vector<std::vector<int32_t>>& continuations, bool* truncated) {
  LMF_CHECK(!context.empty(), "choice: empty context");
  size_t longest = 0;
  for (const auto& c : continuations) {
    LMF_CHECK(!c.empty(), "choice: empty continuation");
    longest = std::max(longest, c.size());
  }
  const auto max_pos = static_cast<size_t>(engine.config().max_position_embeddings);
  LMF_CHECK(longest < max_pos, "choice: a continuation of ", longest,
            " tokens leaves no room for the context in the model's ", max_pos);
  // The context's last tokens: every continuation fits after them.
  const size_t keep = std::min(context.size(), max_pos - longest);
  if (truncated) *truncated = keep < context.size();
  const std::span<const int32_t> ctx(context.data() + (context.size() - keep), keep);
  const int64_t V = engine.config().vocab_size;
  const SequenceGuard base{engine, engine.add_sequence()};
  // Logits after the context's last token: each continuation's first token.
  const Tensor first = engine.prefill(base.id, ctx);
  std::vector<double> out;
  for (const auto& c : continuations) {
    double ll = log_prob(first.data<float>(), V, c[0]);
    if (c.size() > 1) {
      // The rest from a copy of the context's cache: the continuation's tokens but its last, each one's logits
      // scoring the next.
      const SequenceGuard fork{engine, engine.fork_sequence(base.id)};
      const Tensor logits = engine.prefill(fork.id, std::span<const int32_t>(c.data(), c.size() - 1), true);
      for (size_t i = 1; i < c.size(); ++i)
        ll += log_prob(logits.data<float>() + static_cast<int64_t>(i - 1) * V, V, c[i]);
    }
    out.push_back(ll);
  }
  return out;
}

std::vector<ChoiceItem> load_choice_tasks(const std::string& path) {
  std::ifstream in(path);
  LMF_CHECK(in.good(), path, ": cannot read");
  std::vector<ChoiceItem> items;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    LMF_CHECK(!j.is_discarded() && j.is_object(), path, ":", n, ": not a JSON object");
    ChoiceItem it;
    // Our items, or lm-evaluation-harness documents (query / gold; the harness puts " " before each choice).
    const bool harness = !j.contains("context") && j.contains("query");
    const char* ctx_key = harness ? "query" : "context";
    LMF_CHECK(j.contains(ctx_key) && j[ctx_key].is_string(), path, ":", n, ": field '", ctx_key, "' must be a string");
    it.context = j[ctx_key].get<std::string>();
    if (harness) it.delimiter = " ";
    LMF_CHECK(j.contains("choices") && j["choices"].is_array() && j["choices"].size() >= 2, path, ":", n,
              ": field 'choices' must be an array of at least 2 strings");
    for (const auto& c : j["choices"]) {
      LMF_CHECK(c.is_string() && !c.get<std::string>().empty(), path, ":", n,
                ": field 'choices' must hold non-empty strings");
      it.choices.push_back(c.get<std::string>());
    }
    const char* label_key = j.contains("label") || !j.contains("gold") ? "label" : "gold";
    const nlohmann::json& label = j.contains(label_key) ? j[label_key] : nlohmann::json();
    if (label.is_number_integer()) {
      it.label = label.get<int64_t>();
    } else {
      // "3", as Hugging Face's hellaswag stores its labels.
      const std::string s = label.is_string() ? label.get<std::string>() : "";
      LMF_CHECK(!s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos, path, ":", n,
                ": field '", label_key, "' must be an integer (or a string of digits)");
      it.label = std::stoll(s);
    }
    LMF_CHECK(it.label >= 0 && it.label < static_cast<int64_t>(it.choices.size()), path, ":", n, ": ", label_key, " ",
              it.label, " is not an index into 'choices'");
    items.push_back(std::move(it));
  }
  LMF_CHECK(!items.empty(), path, ": no task items");
  return items;
}

std::string apply_chat_template(const ModelDir& m, std::vector<ChoiceItem>& items, const std::string& system) {
  std::string note;
  for (ChoiceItem& it : items) {
    const tokenizer::ChatPrompt cp =
        tokenizer::render_chat(tokenizer::user_turn(it.context, system), m.chat_template, m.bos_token, m.eos_token);
    note = cp.note;
    it.context = cp.text;
    it.delimiter.clear();  // the harness drops the target delimiter under a chat template
  }
  return note;
}

std::vector<int32_t> choice_context(std::vector<int32_t> encoded, bool empty_context, int32_t bos, int32_t prefix) {
  if (bos >= 0 && encoded.size() >= 2 && encoded[0] == bos && encoded[1] == bos) encoded.erase(encoded.begin());
  if (empty_context && prefix >= 0) encoded = {prefix};
  LMF_CHECK(!encoded.empty(),
            "eval choice: an item's context is empty and the model has no BOS or EOS token to stand for it");
  return encoded;
}

ChoiceResult evaluate_choice(ModelDir& m, const std::vector<ChoiceItem>& items,
                             const std::function<void(int64_t, int64_t)>& progress) {
  ChoiceResult r;
  int64_t right = 0, right_norm = 0;
  const model::ModelConfig& mc = m.engine.config();
  const int32_t bos = special_id(m, m.bos_token, mc.bos_token_id);
  const int32_t prefix =
      bos >= 0 ? bos : special_id(m, m.eos_token, mc.eos_token_ids.empty() ? -1 : mc.eos_token_ids[0]);
  for (const ChoiceItem& it : items) {
    // Trailing whitespace of the context (with the delimiter) belongs to the continuation, as the harness splits
    // them.
    std::string ctx = it.context + it.delimiter, lead;
    while (!ctx.empty() && (ctx.back() == ' ' || ctx.back() == '\n' || ctx.back() == '\t' || ctx.back() == '\r')) {
      lead.insert(lead.begin(), ctx.back());
      ctx.pop_back();
    }
    std::vector<int32_t> cids = choice_context(m.encode(ctx, true), ctx.empty(), bos, prefix);
    std::vector<std::string> texts;
    for (const std::string& choice : it.choices) texts.push_back(lead + choice);
    const std::vector<std::vector<int32_t>> conts =
        choice_continuations([&m](const std::string& s) { return m.encode(s, false); }, ctx, texts);
    bool truncated = false;
    std::vector<double> ll = continuation_logliks(m.engine, cids, conts, &truncated);
    r.truncated += truncated;
    const auto [best, best_norm] = choice_picks(ll, it.choices);
    right += best == it.label;
    right_norm += best_norm == it.label;
    r.loglik.push_back(std::move(ll));
    ++r.items;
    if (progress) progress(r.items, static_cast<int64_t>(items.size()));
  }
  r.acc = static_cast<double>(right) / static_cast<double>(r.items);
  r.acc_norm = static_cast<double>(right_norm) / static_cast<double>(r.items);
  return r;
}

}  // namespace lmforge::eval
