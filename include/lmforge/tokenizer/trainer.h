// Byte-level BPE training (HF tokenizers' BpeTrainer algorithm): count pre-tokenized words over many files with
// several threads, then merge the most frequent adjacent pair until the vocabulary is full, updating pair counts
// incrementally through a pair -> words index. Writes a tokenizer.json that HF tokenizers and lmforge load alike.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lmforge::tokenizer {

struct TrainerOptions {
  size_t vocab_size = 32000;                // special tokens + 256 byte tokens + merges
  uint64_t min_frequency = 2;               // a pair seen fewer times is never merged
  std::vector<std::string> special_tokens;  // ids 0.., never split, never merged into
  // Pre-tokenizer: "deepseek-v3" (digits in runs of 1-3, CJK runs, punctuation and words apart), "llama3", "qwen2",
  // "gpt2", or a regex of your own (Split, Isolated).
  std::string pattern = "deepseek-v3";
  std::string jsonl_field = "text";  // for .jsonl/.json inputs; other files are plain text
  int threads = 0;                   // 0: the process thread pool's size
  // Bounded memory: when more distinct words than this are held, those seen least are dropped (0: no bound).
  size_t max_words = 8'000'000;                 // about 0.6-1 GB of counts
  bool skip_bad = false;                        // malformed JSONL lines are counted and skipped instead of failing
  std::function<void(const std::string&)> log;  // progress lines; may be empty
};

struct TrainStats {
  uint64_t documents = 0, bytes = 0, bad_lines = 0, distinct_words = 0, merges = 0, pruned_words = 0;
  double count_seconds = 0, merge_seconds = 0;
};

class BpeTrainer {
 public:
  explicit BpeTrainer(TrainerOptions opt);
  ~BpeTrainer();
  BpeTrainer(const BpeTrainer&) = delete;
  BpeTrainer& operator=(const BpeTrainer&) = delete;

  // Counts the words of `path`, streamed: JSONL when it ends in .jsonl or .json, else plain text. Errors name the
  // file, line and field.
  void add_file(const std::string& path);
  // Counts the words of in-memory documents.
  void add_documents(const std::vector<std::string>& docs);
  // Learns the merges and returns the tokenizer.json text.
  std::string train();
  const TrainStats& stats() const { return stats_; }

  // The pre-tokenizer JSON for a pattern choice (exposed for tests); throws for an invalid regex.
  static std::string pre_tokenizer_json(const std::string& pattern);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  TrainStats stats_;
};

}  // namespace lmforge::tokenizer
