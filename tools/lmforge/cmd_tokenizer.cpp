// lmforge tokenizer: encode, decode, inspect and train byte-level BPE tokenizers in HF's tokenizer.json format.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lmforge/commands.h"
#include "lmforge/core/error.h"
#include "lmforge/core/progress.h"
#include "lmforge/kernels/thread_pool.h"
#include "lmforge/tokenizer/tokenizer.h"
#include "lmforge/tokenizer/trainer.h"

namespace lmforge::cli {

namespace {

using tokenizer::EncodeOptions;
using tokenizer::InvalidUtf8;
using tokenizer::Tokenizer;

struct EncodeArgs {
  std::string tokenizer;
  bool jsonl = false;
  std::string field = "text";
  bool no_special = false;
  bool replace_invalid = false;
  bool skip_bad = false;
  int threads = 0;
  bool quiet = false;
};

std::string read_all_stdin() {
  std::string s;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) s.append(buf, n);
  return s;
}

void print_ids(const std::vector<uint32_t>& ids, std::string& out) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
  }
}

int run_encode(const EncodeArgs& a) {
  Tokenizer tok = Tokenizer::from_file(a.tokenizer);
  EncodeOptions opt;
  opt.add_special_tokens = !a.no_special;
  opt.invalid_utf8 = a.replace_invalid ? InvalidUtf8::kReplace : InvalidUtf8::kError;
  if (!a.jsonl) {
    std::string text = read_all_stdin();
    std::vector<uint32_t> ids;
    try {
      ids = tok.encode(text, opt);
    } catch (const Error& e) {
      throw Error(std::string("stdin: ") + e.what() + " (pass --replace-invalid to replace it with U+FFFD)");
    }
    std::string out;
    print_ids(ids, out);
    std::printf("%s\n", out.c_str());
    return kOk;
  }
  if (a.threads > 0) ThreadPool::global().set_num_threads(a.threads);
  // Lines are read in batches and encoded in parallel; output keeps input order.
  constexpr size_t kBatchLines = 4096;
  // stdin has no known size: bytes, MB/s and lines, no ETA.
  ByteProgress progress("tokenizer encode", 0, a.quiet ? ByteProgress::Mode::kOff : ByteProgress::Mode::kAuto, "lines");
  size_t line_no = 0, bytes = 0, skipped = 0;
  std::string line;
  std::vector<std::string> texts;
  std::vector<size_t> numbers;
  bool eof = false;
  while (!eof) {
    texts.clear();
    numbers.clear();
    while (texts.size() < kBatchLines) {
      if (!std::getline(std::cin, line)) {
        eof = true;
        break;
      }
      ++line_no;
      bytes += line.size() + 1;
      if (line.empty()) continue;
      std::string where = "stdin:" + std::to_string(line_no);
      if (a.replace_invalid) line = tokenizer::repair_utf8(line);
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      std::string problem;
      if (j.is_discarded()) {
        problem = "not valid JSON (or not valid UTF-8; see --replace-invalid)";
      } else if (!j.is_object() || !j.contains(a.field)) {
        problem = "field \"" + a.field + "\" missing";
      } else if (!j[a.field].is_string()) {
        problem = "field \"" + a.field + "\" is not a string";
      }
      if (!problem.empty()) {
        if (a.skip_bad) {
          ++skipped;
          continue;
        }
        throw Error(where.append(": ").append(problem).append(" (pass --skip-bad to skip such lines)"));
      }
      texts.push_back(j[a.field].get<std::string>());
      numbers.push_back(line_no);
    }
    std::vector<std::string_view> views(texts.begin(), texts.end());
    auto ids = tok.encode_batch(views, opt);
    std::string out;
    for (const auto& v : ids) {
      out += "{\"ids\":[";
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ',';
        out += std::to_string(v[i]);
      }
      out += "]}\n";
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    progress.update(static_cast<int64_t>(bytes), static_cast<int64_t>(line_no));
  }
  progress.finish();
  if (skipped) std::fprintf(stderr, "lmforge tokenizer encode: skipped %zu bad line(s)\n", skipped);
  return kOk;
}

struct DecodeArgs {
  std::string tokenizer;
  bool jsonl = false;
  bool skip_special = false;
};

std::vector<uint32_t> parse_ids(const std::string& s, const std::string& where) {
  std::vector<uint32_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i == s.size()) break;
    size_t j = i;
    uint64_t v = 0;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9' && v <= 0xFFFFFFFFull) v = v * 10 + (s[j++] - '0');
    if (j == i || v > 0xFFFFFFFFull || (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))))
      throw Error(where + ": expected whitespace-separated token ids, found \"" + s.substr(i, 20) + "\"");
    ids.push_back(static_cast<uint32_t>(v));
    i = j;
  }
  return ids;
}

int run_decode(const DecodeArgs& a) {
  Tokenizer tok = Tokenizer::from_file(a.tokenizer);
  if (!a.jsonl) {
    std::string text = tok.decode(parse_ids(read_all_stdin(), "stdin"), a.skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return kOk;
  }
  std::string line;
  size_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (line.empty()) continue;
    std::string where = "stdin:" + std::to_string(line_no);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("ids") || !j["ids"].is_array())
      throw Error(where + ": expected {\"ids\": [...]}");
    std::vector<uint32_t> ids;
    for (const auto& v : j["ids"]) {
      if (!v.is_number_unsigned() || v.get<uint64_t>() > 0xFFFFFFFFull)
        throw Error(where + ": field \"ids\" must hold non-negative integers");
      ids.push_back(v.get<uint32_t>());
    }
    try {
      std::printf("%s\n", nlohmann::json{{"text", tok.decode(ids, a.skip_special)}}.dump().c_str());
    } catch (const Error& e) {
      throw Error(where + ": " + e.what());
    }
  }
  return kOk;
}

int run_info(const std::string& path, bool json) {
  Tokenizer tok = Tokenizer::from_file(path);
  auto j = nlohmann::json::parse(tok.describe_json());
  if (json) {
    std::printf("%s\n", j.dump().c_str());
    return kOk;
  }
  std::printf("%s\n", j.dump(2).c_str());
  return kOk;
}

}  // namespace

void add_tokenizer_command(CLI::App& app, Context& ctx) {
  CLI::App* t = app.add_subcommand("tokenizer", "train, inspect and run byte-level BPE tokenizers (HF tokenizer.json)");
  t->require_subcommand(1);

  auto enc = std::make_shared<EncodeArgs>();
  CLI::App* e = t->add_subcommand("encode", "text on stdin -> token ids on stdout");
  e->add_option("--tokenizer", enc->tokenizer, "tokenizer.json")->required()->check(CLI::ExistingFile);
  e->add_flag("--jsonl", enc->jsonl, "each input line {\"text\": ...} -> output line {\"ids\": [...]}");
  e->add_option("--field", enc->field, "JSON field holding the text (with --jsonl)")->capture_default_str();
  e->add_flag("--no-special", enc->no_special, "do not add the post-processor's special tokens (BOS/EOS)");
  e->add_flag("--replace-invalid", enc->replace_invalid,
              "replace invalid UTF-8 with U+FFFD instead of failing (exit 2)");
  e->add_flag("--skip-bad", enc->skip_bad, "with --jsonl: count and skip malformed lines instead of failing");
  e->add_option("--threads", enc->threads, "encoding threads (default: all cores)")->check(CLI::Range(1, 1024));
  e->add_flag("--quiet", enc->quiet, "no progress on stderr (with --jsonl)");
  e->callback([&ctx, enc] { ctx.exit_code = run_encode(*enc); });

  auto dec = std::make_shared<DecodeArgs>();
  CLI::App* d = t->add_subcommand("decode", "token ids on stdin (whitespace-separated) -> text on stdout");
  d->add_option("--tokenizer", dec->tokenizer, "tokenizer.json")->required()->check(CLI::ExistingFile);
  d->add_flag("--jsonl", dec->jsonl, "each input line {\"ids\": [...]} -> output line {\"text\": ...}");
  d->add_flag("--skip-special", dec->skip_special, "leave special tokens out of the text");
  d->callback([&ctx, dec] { ctx.exit_code = run_decode(*dec); });

  auto info_path = std::make_shared<std::string>();
  CLI::App* i = t->add_subcommand("info", "components, vocabulary size and special tokens of a tokenizer.json");
  i->add_option("--tokenizer", *info_path, "tokenizer.json")->required()->check(CLI::ExistingFile);
  i->add_flag("--json", ctx.json, "one-line JSON");
  i->callback([&ctx, info_path] { ctx.exit_code = run_info(*info_path, ctx.json); });

  add_tokenizer_train_command(*t, ctx);
}

}  // namespace lmforge::cli
