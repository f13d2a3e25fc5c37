// Sliding-window perplexity and the evaluation token loaders.
#include "quant/lm_perplexity.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lmforge/core/autograd.h"
#include "lmforge/core/error.h"
#include "lmforge/core/tensor.h"
#include "lmforge/data/shard.h"
#include "lmforge/tokenizer/tokenizer.h"

namespace lmforge::eval::lm {

namespace fs = std::filesystem;

namespace {

void check_context(const model::ModelConfig& c, const PerplexityOptions& opt) {
  LMF_CHECK(opt.ctx <= c.max_position_embeddings, "perplexity: --ctx ", opt.ctx,
            " exceeds the model's context (max_position_embeddings ", c.max_position_embeddings, ")");
}

}  // namespace

PerplexityResult perplexity(const model::CausalLM& m, const std::vector<int32_t>& ids, const PerplexityOptions& opt,
                            const std::function<void(int64_t, int64_t)>& progress) {
  check_context(m.config(), opt);
  return perplexity(
      [&](const std::vector<int32_t>& window) {
        TapeScope none(nullptr);
        const auto T = static_cast<int64_t>(window.size());
        return m.forward(Tensor::from_ints(window, {1, T})).logits.value().reshape({T, m.config().vocab_size});
      },
      m.config().vocab_size, ids, opt, progress);
}

PerplexityResult perplexity(model::Engine& e, const std::vector<int32_t>& ids, const PerplexityOptions& opt,
                            const std::function<void(int64_t, int64_t)>& progress) {
  check_context(e.config(), opt);
  return perplexity(
      [&](const std::vector<int32_t>& window) {
        const model::SeqId seq = e.add_sequence();
        Tensor logits = e.prefill(seq, window, /*all_logits=*/true);
        e.free_sequence(seq);
        return logits;
      },
      e.config().vocab_size, ids, opt, progress);
}

PerplexityResult perplexity(const std::function<Tensor(const std::vector<int32_t>&)>& window_logits, int64_t V,
                            const std::vector<int32_t>& ids, const PerplexityOptions& opt,
                            const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t N = static_cast<int64_t>(ids.size());
  const int64_t ctx = opt.ctx, stride = opt.stride > 0 ? opt.stride : opt.ctx;
  LMF_CHECK(ctx >= 2, "perplexity: --ctx must be at least 2, got ", ctx);
  LMF_CHECK(opt.stride >= 0 && stride <= ctx, "perplexity: --stride (", opt.stride, ") must be in [1, --ctx (", ctx,
            ")], or 0 for --ctx");
  LMF_CHECK(N >= 2, "perplexity: need at least 2 tokens, got ", N);
  for (int64_t i = 0; i < N; ++i)
    LMF_CHECK(ids[i] >= 0 && ids[i] < V, "perplexity: token id ", ids[i], " at position ", i,
              " is outside the model's vocabulary (", V, ")");
  PerplexityResult r;
  double total = 0;
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < N; begin += stride) {
    const int64_t end = std::min(begin + ctx, N);
    // Tokens j in [max(prev_end, begin + 1), end) are scored: each by the logits at j - 1.
    const int64_t first = std::max(prev_end, begin + 1);
    if (first < end) {
      const int64_t T = end - begin;
      std::vector<int32_t> window(ids.begin() + begin, ids.begin() + end);
      const Tensor logits = window_logits(window).to(DType::F32).contiguous();
      LMF_CHECK(logits.numel() == T * V, "perplexity: window logits ", logits.str(), " are not [", T, ", ", V, "]");
      const float* lg = logits.data<float>();
      for (int64_t j = first; j < end; ++j) {
        const float* row = lg + (j - 1 - begin) * V;
        double mx = row[0];
        for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
        double s = 0;
        for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(row[v]) - mx);
        total += mx + std::log(s) - row[ids[j]];
        ++r.tokens;
      }
      ++r.windows;
    }
    prev_end = end;
    if (progress) progress(end, N);
    if (end == N) break;
  }
  r.nll = total / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.nll);
  return r;
}

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LMF_CHECK(in.good(), path, ": cannot read");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<int32_t> shard_tokens(const std::string& dir, const std::string& split, int64_t vocab, int64_t max_tokens,
                                  std::string* how) {
  const data::Manifest man = data::load_manifest(dir);
  LMF_CHECK(split == "val" || split == "train", "--split must be val or train, got '", split, "'");
  const bool use_val = split == "val" && !man.val.empty();
  const std::vector<data::ShardInfo>& shards = use_val ? man.val : man.train;
  LMF_CHECK(!shards.empty(), dir, "/manifest.json: no shards in the ", split, " split");
  LMF_CHECK(man.vocab_size <= vocab, dir, "/manifest.json: vocab_size ", man.vocab_size,
            " is larger than the model's vocabulary (", vocab, ")");
  std::vector<int32_t> out;
  for (const data::ShardInfo& s : shards) {
    data::ShardReader reader((fs::path(dir) / s.file).string());
    int64_t n = reader.size();
    if (max_tokens > 0) n = std::min<int64_t>(n, max_tokens - static_cast<int64_t>(out.size()));
    const size_t at = out.size();
    out.resize(at + static_cast<size_t>(n));
    reader.read(0, n, out.data() + at);
    if (max_tokens > 0 && static_cast<int64_t>(out.size()) >= max_tokens) break;
  }
  if (how) *how = std::string("token shards (") + (use_val ? "val" : "train") + " split of " + dir + ")";
  return out;
}

}  // namespace

std::vector<int32_t> load_eval_tokens(const std::string& path, const std::string& model_dir, int64_t vocab,
                                      int64_t max_tokens, const std::string& split, const std::string& text_field,
                                      std::string* how) {
  if (fs::is_directory(path)) {
    LMF_CHECK(fs::exists(fs::path(path) / "manifest.json"), path, ": a data directory needs manifest.json");
    return shard_tokens(path, split, vocab, max_tokens, how);
  }
  LMF_CHECK(fs::exists(path), path, ": no such file");
  const std::string raw = read_file(path);
  std::string text;
  const bool jsonl = fs::path(path).extension() == ".jsonl";
  if (jsonl) {
    size_t line_no = 0, pos = 0;
    while (pos < raw.size()) {
      size_t e = raw.find('\n', pos);
      if (e == std::string::npos) e = raw.size();
      const std::string line = raw.substr(pos, e - pos);
      pos = e + 1;
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      LMF_CHECK(!j.is_discarded() && j.is_object(), path, ":", line_no, ": not a JSON object");
      LMF_CHECK(j.contains(text_field) && j[text_field].is_string(), path, ":", line_no, ": field '", text_field,
                "' is missing or not a string");
      if (!text.empty()) text += "\n\n";
      text += j[text_field].get<std::string>();
    }
  } else {
    text = raw;
  }
  std::vector<int32_t> out;
  const fs::path tok_path = fs::path(model_dir) / "tokenizer.json";
  if (fs::exists(tok_path)) {
    const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(tok_path.string());
    tokenizer::EncodeOptions eo;
    eo.add_special_tokens = false;
    for (uint32_t id : tok.encode(text, eo)) out.push_back(static_cast<int32_t>(id));
    if (how) *how = "text tokenized with " + tok_path.string();
  } else {
    LMF_CHECK(vocab >= 257, model_dir, ": no tokenizer.json, and the vocabulary (", vocab,
              ") is too small for byte-level ids; give token shards instead");
    for (unsigned char c : text) out.push_back(static_cast<int32_t>(c));
    if (how) *how = "bytes as ids (no tokenizer.json in the model dir)";
  }
  if (max_tokens > 0 && static_cast<int64_t>(out.size()) > max_tokens) out.resize(static_cast<size_t>(max_tokens));
  return out;
}

}  // namespace lmforge::eval::lm
