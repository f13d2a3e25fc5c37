// Multiple-choice accuracy by log-likelihood (lm-evaluation-harness style).
#include <cmath>
#include <fstream>

#include "lmforge/core/error.h"
#include "lmforge/eval/eval.h"

namespace lmforge::eval {

double continuation_loglik(model::Engine& engine, const std::vector<int32_t>& context,
                           const std::vector<int32_t>& continuation) {
  LMF_CHECK(!context.empty() && !continuation.empty(), "choice: empty context or continuation");
  std::vector<int32_t> all = context;
  all.insert(all.end(), continuation.begin(), continuation.end());
  const int64_t ctx = engine.config().max_position_embeddings;
  LMF_CHECK(static_cast<int64_t>(all.size()) <= ctx, "choice: context + continuation are ", all.size(),
            " tokens; the model's context is ", ctx);
  const int64_t V = engine.config().vocab_size, C = static_cast<int64_t>(context.size());
  const model::SeqId s = engine.add_sequence();
  Tensor logits;
  try {
    logits = engine.prefill(s, all, true);
  } catch (...) {
    engine.free_sequence(s);
    throw;
  }
  engine.free_sequence(s);
  double ll = 0;
  for (size_t i = 0; i < continuation.size(); ++i) {
    const float* row = logits.data<float>() + (C - 1 + static_cast<int64_t>(i)) * V;
    float mx = row[0];
    for (int64_t k = 1; k < V; ++k) mx = std::max(mx, row[k]);
    double z = 0;
    for (int64_t k = 0; k < V; ++k) z += std::exp(static_cast<double>(row[k]) - mx);
    ll += static_cast<double>(row[continuation[i]]) - mx - std::log(z);
  }
  return ll;
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
    LMF_CHECK(j.contains("context") && j["context"].is_string(), path, ":", n, ": field 'context' must be a string");
    LMF_CHECK(j.contains("choices") && j["choices"].is_array() && j["choices"].size() >= 2, path, ":", n,
              ": field 'choices' must be an array of at least 2 strings");
    ChoiceItem it;
    it.context = j["context"].get<std::string>();
    for (const auto& c : j["choices"]) {
      LMF_CHECK(c.is_string() && !c.get<std::string>().empty(), path, ":", n,
                ": field 'choices' must hold non-empty strings");
      it.choices.push_back(c.get<std::string>());
    }
    LMF_CHECK(j.contains("label") && j["label"].is_number_integer(), path, ":", n,
              ": field 'label' must be an integer");
    it.label = j["label"].get<int64_t>();
    LMF_CHECK(it.label >= 0 && it.label < static_cast<int64_t>(it.choices.size()), path, ":", n, ": label ", it.label,
              " is not an index into 'choices'");
    items.push_back(std::move(it));
  }
  LMF_CHECK(!items.empty(), path, ": no task items");
  return items;
}

ChoiceResult evaluate_choice(ModelDir& m, const std::vector<ChoiceItem>& items,
                             const std::function<void(int64_t, int64_t)>& progress) {
  ChoiceResult r;
  int64_t right = 0, right_norm = 0;
  for (const ChoiceItem& it : items) {
    // Trailing whitespace of the context belongs to the continuation (as the harness splits them).
    std::string ctx = it.context, lead;
    while (!ctx.empty() && (ctx.back() == ' ' || ctx.back() == '\n' || ctx.back() == '\t')) {
      lead.insert(lead.begin(), ctx.back());
      ctx.pop_back();
    }
    const std::vector<int32_t> cids = m.encode(ctx, true);
    std::vector<double> ll;
    int64_t best = 0, best_norm = 0;
    double bv = -INFINITY, bn = -INFINITY;
    for (size_t k = 0; k < it.choices.size(); ++k) {
      const std::string cont = lead + it.choices[k];
      const double v = continuation_loglik(m.engine, cids.empty() ? m.encode(" ", true) : cids, m.encode(cont, false));
      ll.push_back(v);
      const double vn = v / static_cast<double>(cont.size());
      if (v > bv) bv = v, best = static_cast<int64_t>(k);
      if (vn > bn) bn = vn, best_norm = static_cast<int64_t>(k);
    }
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
