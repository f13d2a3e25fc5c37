// lmforge tokenizer train: byte-level BPE from JSONL/text files into an HF tokenizer.json.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lmforge/commands.h"
#include "lmforge/io/atomic_file.h"
#include "lmforge/tokenizer/tokenizer.h"
#include "lmforge/tokenizer/trainer.h"

namespace lmforge::cli {

namespace {

struct TrainArgs {
  std::vector<std::string> inputs;
  std::string out;
  tokenizer::TrainerOptions opt;
  std::string special_tokens;  // comma-separated
};

double max_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

int run_train(TrainArgs& a, bool json) {
  if (!a.special_tokens.empty()) {
    size_t start = 0;
    while (start <= a.special_tokens.size()) {
      size_t comma = a.special_tokens.find(',', start);
      if (comma == std::string::npos) comma = a.special_tokens.size();
      std::string tok = a.special_tokens.substr(start, comma - start);
      if (!tok.empty()) a.opt.special_tokens.push_back(tok);
      start = comma + 1;
    }
  }
  a.opt.log = [](const std::string& s) { std::fprintf(stderr, "lmforge tokenizer train: %s\n", s.c_str()); };
  auto t0 = std::chrono::steady_clock::now();
  tokenizer::BpeTrainer trainer(a.opt);
  for (const std::string& f : a.inputs) trainer.add_file(f);
  std::string text = trainer.train();
  // Loading the result back checks it before it replaces anything.
  tokenizer::Tokenizer check = tokenizer::Tokenizer::from_json(text, a.out);
  io::write_file_atomic(a.out, text);
  const auto& s = trainer.stats();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json r = {{"out", a.out},
                      {"vocab_size", check.vocab_size()},
                      {"merges", s.merges},
                      {"documents", s.documents},
                      {"bytes", s.bytes},
                      {"bad_lines", s.bad_lines},
                      {"distinct_words", s.distinct_words},
                      {"pruned_words", s.pruned_words},
                      {"count_seconds", s.count_seconds},
                      {"merge_seconds", s.merge_seconds},
                      {"seconds", secs},
                      {"max_rss_mb", max_rss_mb()}};
  if (json) {
    std::printf("%s\n", r.dump().c_str());
  } else {
    std::printf(
        "wrote %s: %zu tokens (%llu merges) from %llu documents, %.1f MB in %.1f s (counting %.1f s, merging %.1f s), "
        "peak RSS %.0f MB\n",
        a.out.c_str(), check.vocab_size(), static_cast<unsigned long long>(s.merges),
        static_cast<unsigned long long>(s.documents), static_cast<double>(s.bytes) / 1e6, secs, s.count_seconds,
        s.merge_seconds, max_rss_mb());
  }
  return kOk;
}

}  // namespace

void add_tokenizer_train_command(CLI::App& tokenizer_cmd, Context& ctx) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* t = tokenizer_cmd.add_subcommand("train", "train a byte-level BPE tokenizer from JSONL or text files");
  t->add_option("--input", a->inputs, "input files (.jsonl/.json: one {\"text\": ...} per line; others: plain text)")
      ->required()
      ->check(CLI::ExistingFile);
  t->add_option("--out", a->out, "tokenizer.json to write (atomically)")->required();
  t->add_option("--vocab-size", a->opt.vocab_size, "tokens in all: special + 256 bytes + merges")
      ->check(CLI::Range(257, 1 << 24))
      ->capture_default_str();
  t->add_option("--min-frequency", a->opt.min_frequency, "pairs seen fewer times are not merged")
      ->capture_default_str();
  t->add_option("--special-tokens", a->special_tokens, "comma-separated special tokens, given ids 0, 1, ...");
  t->add_option("--pattern", a->opt.pattern,
                "pre-tokenizer: deepseek-v3, llama3, qwen2, gpt2, or a regex (PCRE/Oniguruma syntax)")
      ->capture_default_str();
  t->add_option("--field", a->opt.jsonl_field, "JSONL field holding the text")->capture_default_str();
  t->add_option("--threads", a->opt.threads, "counting threads (default: all cores)")->check(CLI::Range(1, 1024));
  t->add_option("--max-words", a->opt.max_words, "bound on distinct words held while counting (0: none)")
      ->capture_default_str();
  t->add_flag("--skip-bad", a->opt.skip_bad, "count and skip malformed JSONL lines instead of failing");
  t->add_flag("--json", ctx.json, "print the result as one JSON object");
  t->callback([&ctx, a] { ctx.exit_code = run_train(*a, ctx.json); });
}

}  // namespace lmforge::cli
