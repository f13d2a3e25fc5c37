// Streaming corpus I/O shared by every `lmforge data` stage (DESIGN.md section 4): JSONL with the text in a
// configurable field (other fields are carried through), or plain text split into documents by file, line or
// paragraph. Inputs are read in batches so memory stays bounded; each stage transforms a batch in parallel and
// then decides, in input order, what survives, so results do not depend on the thread count.
//
// Every stage fills a StageReport: documents and bytes in, out and dropped by reason, plus named counters.
// "Bytes" are the UTF-8 bytes of a document's text (for a line that could not be parsed: the line's bytes).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lmforge/io/atomic_file.h"

namespace lmforge::data {

enum class Utf8Policy { kRepair, kDrop, kError };
enum class TextUnit { kFile, kLine, kParagraph };

struct ReadOptions {
  std::string field = "text";  // JSONL text field
  bool skip_bad = false;       // count and skip malformed JSON lines / missing fields instead of failing
  Utf8Policy utf8 = Utf8Policy::kRepair;
  TextUnit unit = TextUnit::kFile;  // plain-text inputs (not *.jsonl)
  bool jsonl_by_extension = true;   // *.jsonl and *.json are JSONL; everything else plain text
  // Called after each batch with the input bytes read so far (file positions), the inputs' total size and the
  // documents read; may be empty. The CLI draws its progress bar from it.
  std::function<void(int64_t bytes_read, int64_t bytes_total, int64_t documents)> progress;
};

struct Document {
  std::string text;
  nlohmann::json meta;            // the JSON object of a JSONL line (text field included), null for plain text
  std::string source;             // file name
  int64_t line = 0;               // 1-based line of JSONL / plain-text line or paragraph start
  std::vector<uint64_t> scratch;  // per-stage working data (hashes, signatures)
  std::vector<uint32_t> ids;      // token ids (shard)
  std::string drop;               // drop reason set by a stage; empty keeps the document
  std::string error;              // set when `map` threw: the stage fails naming source:line
  int64_t copies = 1;             // times the document is written (over-sampling)
};

struct DropCount {
  int64_t documents = 0, bytes = 0;
};

struct StageReport {
  std::string stage;
  int64_t docs_in = 0, bytes_in = 0, docs_out = 0, bytes_out = 0;
  std::map<std::string, DropCount> dropped;  // by reason
  std::map<std::string, int64_t> counters;   // e.g. utf8_repaired, pii_email
  double seconds = 0;

  void drop(const std::string& reason, int64_t bytes);
  nlohmann::json to_json() const;
  // A few lines for a person: in, out, each drop reason with its share, throughput.
  std::string summary() const;
};

// Reads documents from several files in order. Errors (without skip_bad) name file:line and the field.
class CorpusReader {
 public:
  CorpusReader(std::vector<std::string> inputs, ReadOptions opt, StageReport& report);
  ~CorpusReader();
  // Appends up to max_docs documents (or until about max_bytes of text); false when nothing is left.
  bool next_batch(std::vector<Document>& out, size_t max_docs = 4096, size_t max_bytes = 64u << 20);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes JSONL atomically: the document's JSON object with its text field replaced, or {"<field>": text}.
class CorpusWriter {
 public:
  CorpusWriter(const std::string& path, std::string field);
  void write(const Document& d);
  void commit();
  int64_t documents() const { return docs_; }

 private:
  io::AtomicFileWriter out_;
  std::string field_;
  int64_t docs_ = 0;
};

// The common driver: reads inputs in batches, runs `map` on each document in parallel (it may edit the text or
// set d.drop), then `ordered` on the survivors in input order (dedup decisions), and writes the rest to output.
// The report's stage name, in/out counts and timing are filled here.
struct StageFns {
  std::function<void(Document&)> map;      // thread-safe; may be empty
  std::function<void(Document&)> ordered;  // single-threaded; may be empty
};
StageReport run_stage(const std::string& stage, const std::vector<std::string>& inputs, const std::string& output,
                      const ReadOptions& opt, const StageFns& fns);

// Writes report JSON atomically (path "" does nothing).
void write_report(const std::string& path, const nlohmann::json& report);

// 64-bit hash of bytes (deterministic across runs and platforms).
uint64_t hash64(std::string_view s, uint64_t seed = 0);

}  // namespace lmforge::data
