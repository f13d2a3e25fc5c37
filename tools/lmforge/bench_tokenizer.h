// lmforge bench tokenizer: encode MB/s of lmforge and of HF tokenizers side by side.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace lmforge::bench {

struct TokenizerBenchOptions {
  std::string tokenizer;
  std::string input;
  size_t doc_bytes = 65536;    // "large documents", as in BENCHMARKS.md
  size_t max_bytes = 4000000;  // of the input file
  int threads = 2;
  int repeats = 3;
  std::string hf_script = "tests/reference/tokenizer/bench_hf.js";  // empty: no reference
};

struct TokenizerBenchRow {
  std::string side;  // "lmforge" or "hf"
  std::string what;
  int threads;
  double mb_s;
  size_t tokens;  // same on both sides when the ids agree
};

std::vector<TokenizerBenchRow> run_tokenizer_bench(const TokenizerBenchOptions& opt);

}  // namespace lmforge::bench
