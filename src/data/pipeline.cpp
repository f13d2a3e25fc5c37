#include "lmforge/data/pipeline.h"

#include <chrono>
#include <memory>

#include "lmforge/core/error.h"
#include "lmforge/kernels/thread_pool.h"

namespace lmforge::data {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One stage over a batch: map in parallel, then ordered in input order; survivors are moved to `next`.
void run_one(const PipelineStage& st, StageReport& rep, bool count_in, std::vector<Document>& batch,
             std::vector<Document>& next) {
  if (count_in) {
    for (const Document& d : batch) {
      ++rep.docs_in;
      rep.bytes_in += static_cast<int64_t>(d.text.size());
    }
  }
  if (st.fns.map) {
    parallel_for(static_cast<int64_t>(batch.size()), 8, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        Document& d = batch[static_cast<size_t>(i)];
        try {
          st.fns.map(d);
        } catch (const std::exception& ex) {  // exceptions must not leave a pool thread
          d.error = ex.what();
        }
      }
    });
  }
  next.clear();
  for (Document& d : batch) {
    if (!d.error.empty()) throw Error(d.source + ":" + std::to_string(d.line) + ": " + st.name + ": " + d.error);
    if (d.drop.empty() && st.fns.ordered) st.fns.ordered(d);
    if (!d.drop.empty()) {
      rep.drop(d.drop, static_cast<int64_t>(d.text.size()));
      continue;
    }
    rep.docs_out += d.copies;
    rep.bytes_out += d.copies * static_cast<int64_t>(d.text.size());
    // A stage's working data is its own: the next stage starts from the text and metadata only.
    d.scratch.clear();
    d.ids.clear();
    next.push_back(std::move(d));
  }
}

}  // namespace

std::vector<StageReport> run_pipeline(const std::vector<PipelineStage>& stages, const std::vector<std::string>& inputs,
                                      const std::string& output, const ReadOptions& opt) {
  LMF_CHECK(!stages.empty(), "data run: no stages");
  std::vector<StageReport> reps(stages.size());
  for (size_t k = 0; k < stages.size(); ++k) reps[k].stage = stages[k].name;
  std::vector<double> secs(stages.size(), 0.0);
  auto t = Clock::now();
  CorpusReader reader(inputs, opt, reps[0]);
  std::unique_ptr<CorpusWriter> writer;
  if (!output.empty()) writer = std::make_unique<CorpusWriter>(output, opt.field);
  secs[0] += since(t);
  std::vector<Document> batch, next;
  for (;;) {
    t = Clock::now();
    batch.clear();
    const bool more = reader.next_batch(batch);
    secs[0] += since(t);
    if (!more) break;
    for (size_t k = 0; k < stages.size() && !batch.empty(); ++k) {
      t = Clock::now();
      run_one(stages[k], reps[k], k > 0, batch, next);
      batch.swap(next);
      secs[k] += since(t);
    }
    t = Clock::now();
    if (writer)
      for (const Document& d : batch)
        for (int64_t c = 0; c < d.copies; ++c) writer->write(d);
    secs.back() += since(t);
  }
  t = Clock::now();
  if (writer) writer->commit();
  secs.back() += since(t);
  for (size_t k = 0; k < stages.size(); ++k) reps[k].seconds = secs[k];
  return reps;
}

}  // namespace lmforge::data
