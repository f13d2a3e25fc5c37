// lmforge bench tokenizer: encode throughput (one thread, then a batch over N threads) against HF tokenizers run
// through its Node binding (tests/reference/tokenizer/bench_hf.js) on the same documents and tokenizer.json.
#include "bench_tokenizer.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lmforge/core/error.h"
#include "lmforge/kernels/thread_pool.h"
#include "lmforge/tokenizer/tokenizer.h"

namespace lmforge::bench {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The first `max_bytes` of the file in documents of about `doc_bytes`, each cut after a newline (as bench_hf.js).
std::vector<std::string> documents(const std::string& path, size_t doc_bytes, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  LMF_CHECK(in, path, ": cannot open --input");
  std::string all(max_bytes, '\0');
  in.read(all.data(), static_cast<std::streamsize>(max_bytes));
  all.resize(static_cast<size_t>(in.gcount()));
  // A longer file is cut after its last whole line, never inside a UTF-8 sequence (bench_hf.js does the same).
  if (all.size() == max_bytes && in.peek() != std::char_traits<char>::eof()) {
    const size_t nl = all.rfind('\n');
    if (nl != std::string::npos) all.resize(nl + 1);
  }
  LMF_CHECK(!all.empty(), path, ": --input is empty");
  std::vector<std::string> docs;
  for (size_t start = 0; start < all.size();) {
    size_t end = std::min(start + doc_bytes, all.size());
    if (end < all.size()) {
      size_t nl = all.find('\n', end);
      end = nl == std::string::npos ? all.size() : nl + 1;
    }
    docs.push_back(all.substr(start, end - start));
    start = end;
  }
  return docs;
}

std::string run_capture(const std::string& cmd, int& status) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    status = -1;
    return "";
  }
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  status = pclose(p);
  return out;
}

}  // namespace

std::vector<TokenizerBenchRow> run_tokenizer_bench(const TokenizerBenchOptions& opt) {
  using tokenizer::EncodeOptions;
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(opt.tokenizer);
  std::vector<std::string> docs = documents(opt.input, opt.doc_bytes, opt.max_bytes);
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  EncodeOptions eo;
  eo.add_special_tokens = false;
  std::vector<TokenizerBenchRow> rows;

  // One thread, documents one after another; best of `repeats` (the first run also warms the cache, as HF's).
  double best = 1e30;
  size_t tokens = 0;
  {
    ThreadCountScope one(1);
    std::vector<uint32_t> ids;
    for (int r = 0; r < opt.repeats; ++r) {
      double t0 = now_s();
      tokens = 0;
      for (const auto& d : docs) {
        ids.clear();
        tok.encode_into(d, ids, eo);
        tokens += ids.size();
      }
      best = std::min(best, now_s() - t0);
    }
  }
  rows.push_back({"lmforge", "encode, 1 thread", 1, bytes / 1e6 / best, tokens});
  {
    ThreadCountScope n(opt.threads);
    std::vector<std::string_view> views(docs.begin(), docs.end());
    double b = 1e30;
    for (int r = 0; r < opt.repeats; ++r) {
      double t0 = now_s();
      auto out = tok.encode_batch(views, eo);
      b = std::min(b, now_s() - t0);
    }
    rows.push_back({"lmforge", "encode_batch", opt.threads, bytes / 1e6 / b, tokens});
  }

  if (!opt.hf_script.empty()) {
    if (!std::filesystem::exists(opt.hf_script)) {
      rows.push_back({"hf", "not run: " + opt.hf_script + " absent", 0, 0, 0});
      return rows;
    }
    std::ostringstream cmd;
    cmd << "RAYON_NUM_THREADS=" << opt.threads << " node '" << opt.hf_script << "' encode '" << opt.tokenizer << "' '"
        << opt.input << "' " << opt.doc_bytes << " " << opt.max_bytes << " 2>&1";
    int status = 0;
    std::string out = run_capture(cmd.str(), status);
    auto j = nlohmann::json::parse(out.substr(0, out.find('\n')), nullptr, false);
    if (status != 0 || j.is_discarded() || !j.contains("single_mb_s")) {
      rows.push_back({"hf", "not run: " + out.substr(0, 200), 0, 0, 0});
      return rows;
    }
    auto hf_tokens = j["tokens"].get<size_t>();
    rows.push_back({"hf", "encode, 1 thread", 1, j["single_mb_s"].get<double>(), hf_tokens});
    rows.push_back({"hf", "encodeBatch", j["threads"].get<int>(), j["batch_mb_s"].get<double>(), hf_tokens});
  }
  return rows;
}

}  // namespace lmforge::bench
