// Perplexity with the sliding-window method, and the token sources it reads.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/eval/eval.h"

namespace lmforge::eval {

namespace fs = std::filesystem;

namespace {

// log p(target) for each row of logits [n, V] (log-softmax in double).
double row_logprob(const float* row, int64_t V, int32_t target) {
  float mx = row[0];
  for (int64_t i = 1; i < V; ++i) mx = std::max(mx, row[i]);
  double s = 0;
  for (int64_t i = 0; i < V; ++i) s += std::exp(static_cast<double>(row[i]) - mx);
  return static_cast<double>(row[target]) - mx - std::log(s);
}

}  // namespace

PerplexityResult perplexity(model::Engine& engine, const std::vector<int32_t>& ids, int64_t ctx, int64_t stride,
                            const std::function<void(int64_t, int64_t)>& progress) {
  const auto N = static_cast<int64_t>(ids.size());
  LMF_CHECK(ctx >= 2, "perplexity: --ctx must be at least 2, got ", ctx);
  LMF_CHECK(stride >= 1 && stride <= ctx, "perplexity: --stride must be in [1, ctx], got ", stride);
  LMF_CHECK(ctx <= engine.config().max_position_embeddings, "perplexity: --ctx ", ctx,
            " exceeds the model's context (max_position_embeddings ", engine.config().max_position_embeddings, ")");
  LMF_CHECK(N >= 2, "perplexity: the data has ", N, " tokens; at least 2 are needed");
  const int64_t V = engine.config().vocab_size;
  PerplexityResult r;
  double nll = 0;
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < N; begin += stride) {
    const int64_t end = std::min(begin + ctx, N), trg = end - prev_end;
    const model::SeqId s = engine.add_sequence();
    const Tensor logits = engine.prefill(s, std::span<const int32_t>(ids.data() + begin, end - begin), true);
    engine.free_sequence(s);
    // Scored: positions j in [end - trg, end) with a predecessor in the window; logits row j - begin - 1 predicts j.
    for (int64_t j = std::max(end - trg, begin + 1); j < end; ++j) {
      nll -= row_logprob(logits.data<float>() + (j - begin - 1) * V, V, ids[j]);
      ++r.tokens;
    }
    ++r.windows;
    prev_end = end;
    if (progress) progress(end, N);
    if (end == N) break;
  }
  r.nll = nll / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.nll);
  return r;
}

std::vector<int32_t> load_eval_tokens(const ModelDir& m, const std::string& path, const std::string& field) {
  const int64_t V = m.engine.config().vocab_size;
  if (fs::is_directory(path)) {
    LMF_CHECK(fs::exists(fs::path(path) / "manifest.json"), path, ": a directory without manifest.json (token shards)");
    const data::Manifest man = data::load_manifest(path);
    LMF_CHECK(man.vocab_size <= V, path, "/manifest.json: vocab_size ", man.vocab_size, " exceeds the model's ", V);
    const std::vector<data::ShardInfo>& split = man.val.empty() ? man.train : man.val;
    std::vector<int32_t> ids;
    for (const data::ShardInfo& si : split) {
      const data::ShardReader rd((fs::path(path) / si.file).string());
      const size_t at = ids.size();
      ids.resize(at + static_cast<size_t>(rd.size()));
      rd.read(0, rd.size(), ids.data() + at);
    }
    return ids;
  }
  std::ifstream in(path, std::ios::binary);
  LMF_CHECK(in.good(), path, ": cannot read");
  std::string text;
  if (path.size() > 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0) {
    std::string line;
    for (int64_t n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      LMF_CHECK(!j.is_discarded() && j.is_object() && j.contains(field) && j[field].is_string(), path, ":", n,
                ": not a JSON object with a string field '", field, "'");
      if (!text.empty()) text += "\n\n";
      text += j[field].get<std::string>();
    }
  } else {
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  LMF_CHECK(!text.empty(), path, ": no text");
  return m.encode(text, true);
}

}  // namespace lmforge::eval
