#include "lmforge/data/corpus.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "lmforge/core/error.h"
#include "lmforge/kernels/thread_pool.h"
#include "tokenizer/unicode.h"

namespace lmforge::data {

namespace fs = std::filesystem;
namespace uni = tokenizer::unicode;

uint64_t hash64(std::string_view s, uint64_t seed) {
  // 8 bytes at a time through a multiply-xorshift mix, then a final avalanche (splitmix64's finaliser).
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  uint64_t h = seed ^ (0x9E3779B97F4A7C15ull * (s.size() + 1));
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = mix(h ^ w) + 0x9E3779B97F4A7C15ull;
  }
  uint64_t tail = 0;
  for (size_t k = 0; i < s.size(); ++i, ++k) tail |= static_cast<uint64_t>(static_cast<unsigned char>(s[i])) << (8 * k);
  return mix(h ^ tail ^ 0xA5A5A5A5A5A5A5A5ull);
}

void StageReport::drop(const std::string& reason, int64_t bytes) {
  DropCount& c = dropped[reason];
  ++c.documents;
  c.bytes += bytes;
}

nlohmann::json StageReport::to_json() const {
  nlohmann::json d = nlohmann::json::object();
  for (const auto& [reason, c] : dropped) d[reason] = {{"documents", c.documents}, {"bytes", c.bytes}};
  nlohmann::json c = nlohmann::json::object();
  for (const auto& [name, v] : counters) c[name] = v;
  const double mbps = seconds > 0 ? static_cast<double>(bytes_in) / 1e6 / seconds : 0.0;
  return {{"stage", stage},         {"documents_in", docs_in},
          {"bytes_in", bytes_in},   {"documents_out", docs_out},
          {"bytes_out", bytes_out}, {"dropped", d},
          {"counters", c},          {"seconds", seconds},
          {"mb_per_s", mbps}};
}

namespace {
std::string human_bytes(int64_t b) {
  char buf[32];
  if (b < 10000)
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(b));
  else if (b < 10000000)
    std::snprintf(buf, sizeof buf, "%.1f KB", static_cast<double>(b) / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(b) / 1e6);
  return buf;
}
}  // namespace

std::string StageReport::summary() const {
  char buf[512];
  std::snprintf(buf, sizeof buf, "%s: %lld documents (%s) in -> %lld documents (%s) out in %.2f s (%.1f MB/s)\n",
                stage.c_str(), static_cast<long long>(docs_in), human_bytes(bytes_in).c_str(),
                static_cast<long long>(docs_out), human_bytes(bytes_out).c_str(), seconds,
                seconds > 0 ? static_cast<double>(bytes_in) / 1e6 / seconds : 0.0);
  std::string s = buf;
  for (const auto& [reason, c] : dropped) {
    std::snprintf(buf, sizeof buf, "  dropped %-18s %lld documents (%.1f%%), %s\n", reason.c_str(),
                  static_cast<long long>(c.documents),
                  docs_in ? 100.0 * static_cast<double>(c.documents) / static_cast<double>(docs_in) : 0.0,
                  human_bytes(c.bytes).c_str());
    s += buf;
  }
  for (const auto& [name, v] : counters) {
    std::snprintf(buf, sizeof buf, "  %-26s %lld\n", name.c_str(), static_cast<long long>(v));
    s += buf;
  }
  return s;
}

struct CorpusReader::Impl {
  std::vector<std::string> inputs;
  ReadOptions opt;
  StageReport* report;
  size_t next_input = 0;
  std::ifstream file;
  std::string name;
  bool jsonl = false;
  bool open = false;
  int64_t lineno = 0;
  int64_t total_bytes = 0;  // sizes of all inputs
  int64_t done_bytes = 0;   // sizes of the inputs already read to the end
  int64_t current_size = 0;

  // Bytes of input consumed so far, for progress.
  int64_t position() {
    if (!open) return done_bytes;
    const std::streamoff p = file.tellg();
    return done_bytes + (p < 0 ? current_size : static_cast<int64_t>(p));
  }

  bool open_next() {
    while (next_input < inputs.size()) {
      name = inputs[next_input++];
      file = std::ifstream(name, std::ios::binary);
      if (!file) throw Error(name + ": cannot open input");
      std::error_code ec;
      const auto size = fs::file_size(name, ec);
      current_size = ec ? 0 : static_cast<int64_t>(size);
      const std::string ext = fs::path(name).extension().string();
      jsonl = opt.jsonl_by_extension && (ext == ".jsonl" || ext == ".json");
      lineno = 0;
      open = true;
      return true;
    }
    return false;
  }

  std::string where() const { return name + ":" + std::to_string(lineno); }

  // UTF-8 policy on raw bytes; false when the document is dropped.
  bool check_utf8(std::string& s) {
    const size_t ok = uni::valid_utf8_prefix(s);
    if (ok == s.size()) return true;
    switch (opt.utf8) {
      case Utf8Policy::kError:
        throw Error(where() + ": invalid UTF-8 at byte " + std::to_string(ok) + " (use --invalid-utf8 repair or drop)");
      case Utf8Policy::kDrop:
        report->drop("invalid_utf8", static_cast<int64_t>(s.size()));
        return false;
      case Utf8Policy::kRepair:
        s = uni::repair_utf8(s);
        ++report->counters["utf8_repaired"];
        return true;
    }
    return true;
  }

  void bad(const std::string& reason, const std::string& message, int64_t bytes) {
    if (!opt.skip_bad) throw Error(where() + ": " + message + " (use --skip-bad to count and skip such lines)");
    report->drop(reason, bytes);
  }

  // One JSONL line into out; false when it was dropped or blank.
  bool parse_jsonl(std::string& line, Document& out) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) return false;
    ++report->docs_in;
    const auto bytes = static_cast<int64_t>(line.size());  // as read, before any repair
    report->bytes_in += bytes;
    if (!check_utf8(line)) return false;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      bad("bad_json", j.is_discarded() ? "malformed JSON" : "line is not a JSON object", bytes);
      return false;
    }
    auto it = j.find(opt.field);
    if (it == j.end()) {
      bad("missing_field", "field '" + opt.field + "' missing", bytes);
      return false;
    }
    if (!it->is_string()) {
      bad("missing_field", "field '" + opt.field + "' is not a string", bytes);
      return false;
    }
    out.text = it->get<std::string>();
    // bytes_in counts text bytes for a parsed document, not the JSON line.
    report->bytes_in += static_cast<int64_t>(out.text.size()) - bytes;
    out.meta = std::move(j);
    out.source = name;
    out.line = lineno;
    return true;
  }

  bool plain_doc(std::string text, int64_t line, Document& out) {
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) return false;
    ++report->docs_in;
    const auto raw = static_cast<int64_t>(text.size());
    const bool keep = check_utf8(text);
    report->bytes_in += keep ? static_cast<int64_t>(text.size()) : raw;  // the repaired text, as for JSONL
    if (!keep) return false;
    out.text = std::move(text);
    out.meta = nullptr;
    out.source = name;
    out.line = line;
    return true;
  }

  void close_current() {
    open = false;
    done_bytes += current_size;
    current_size = 0;
  }

  // Reads the next document; false at the end of all inputs.
  bool next(Document& out) {
    for (;;) {
      if (!open && !open_next()) return false;
      if (!jsonl && opt.unit == TextUnit::kFile) {
        std::string s((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
        close_current();
        lineno = 1;
        if (plain_doc(std::move(s), 1, out)) return true;
        continue;
      }
      if (!jsonl && opt.unit == TextUnit::kParagraph) {
        std::string para, line;
        int64_t start = 0;
        while (std::getline(file, line)) {
          ++lineno;
          const bool blank = line.find_first_not_of(" \t\r") == std::string::npos;
          if (blank) {
            if (!para.empty()) break;
            continue;
          }
          if (para.empty()) start = lineno;
          if (!para.empty()) para += '\n';
          if (!line.empty() && line.back() == '\r') line.pop_back();
          para += line;
        }
        if (para.empty()) {
          close_current();
          continue;
        }
        if (plain_doc(std::move(para), start, out)) return true;
        continue;
      }
      std::string line;
      if (!std::getline(file, line)) {
        close_current();
        continue;
      }
      ++lineno;
      if (jsonl ? parse_jsonl(line, out) : plain_doc(std::move(line), lineno, out)) return true;
    }
  }
};

CorpusReader::CorpusReader(std::vector<std::string> inputs, ReadOptions opt, StageReport& report)
    : impl_(std::make_unique<Impl>()) {
  if (inputs.empty()) throw Error("no --input files");
  if (opt.field.empty()) throw Error("--field must not be empty");
  impl_->inputs = std::move(inputs);
  impl_->opt = std::move(opt);
  impl_->report = &report;
  if (impl_->opt.progress) {
    for (const std::string& in : impl_->inputs) {
      std::error_code ec;
      const auto size = fs::file_size(in, ec);
      if (!ec) impl_->total_bytes += static_cast<int64_t>(size);
    }
  }
}
CorpusReader::~CorpusReader() = default;

bool CorpusReader::next_batch(std::vector<Document>& out, size_t max_docs, size_t max_bytes) {
  size_t bytes = 0, n = 0;
  while (n < max_docs && bytes < max_bytes) {
    Document d;
    if (!impl_->next(d)) break;
    bytes += d.text.size();
    out.push_back(std::move(d));
    ++n;
  }
  if (impl_->opt.progress) impl_->opt.progress(impl_->position(), impl_->total_bytes, impl_->report->docs_in);
  return n > 0;
}

CorpusWriter::CorpusWriter(const std::string& path, std::string field) : out_(path), field_(std::move(field)) {}

void CorpusWriter::write(const Document& d) {
  std::string line;
  if (d.meta.is_object()) {
    nlohmann::json j = d.meta;
    j[field_] = d.text;
    line = j.dump();
  } else {
    line = nlohmann::json{{field_, d.text}}.dump();
  }
  line += '\n';
  out_.write(line);
  ++docs_;
}

void CorpusWriter::commit() {
  out_.commit();
}

void write_report(const std::string& path, const nlohmann::json& report) {
  if (path.empty()) return;
  io::write_file_atomic(path, report.dump(2) + "\n");
}

StageReport run_stage(const std::string& stage, const std::vector<std::string>& inputs, const std::string& output,
                      const ReadOptions& opt, const StageFns& fns) {
  const auto t0 = std::chrono::steady_clock::now();
  StageReport rep;
  rep.stage = stage;
  CorpusReader reader(inputs, opt, rep);
  std::unique_ptr<CorpusWriter> writer;
  if (!output.empty()) writer = std::make_unique<CorpusWriter>(output, opt.field);
  std::vector<Document> batch;
  while (true) {
    batch.clear();
    if (!reader.next_batch(batch)) break;
    if (fns.map) {
      parallel_for(static_cast<int64_t>(batch.size()), 8, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          Document& d = batch[static_cast<size_t>(i)];
          try {
            fns.map(d);
          } catch (const std::exception& ex) {  // exceptions must not leave a pool thread
            d.error = ex.what();
          }
        }
      });
    }
    for (Document& d : batch) {
      if (!d.error.empty()) throw Error(d.source + ":" + std::to_string(d.line) + ": " + d.error);
      if (d.drop.empty() && fns.ordered) fns.ordered(d);
      if (!d.drop.empty()) {
        rep.drop(d.drop, static_cast<int64_t>(d.text.size()));
        continue;
      }
      rep.docs_out += d.copies;
      rep.bytes_out += d.copies * static_cast<int64_t>(d.text.size());
      for (int64_t c = 0; c < d.copies && writer; ++c) writer->write(d);
    }
  }
  if (writer) writer->commit();
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace lmforge::data
