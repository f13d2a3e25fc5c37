// lmforge data dedup | filter | stats.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "data_cli.h"
#include "lmforge/data/dedup.h"

namespace lmforge::cli {

namespace {

struct DedupArgs {
  CommonArgs common;
  std::string method = "both";
  bool bloom = false;
  int64_t bloom_capacity = 100000000;
  double bloom_fp = 1e-6;
  data::MinHashOptions mh;
};

int run_dedup(const DedupArgs& a, const Context& ctx) {
  const bool exact = a.method != "minhash", near = a.method != "exact";
  data::ExactDeduper ex = a.bloom ? data::ExactDeduper(a.bloom_capacity, a.bloom_fp) : data::ExactDeduper();
  std::unique_ptr<data::MinHashDeduper> mh;
  if (near) mh = std::make_unique<data::MinHashDeduper>(a.mh);
  data::StageFns fns;
  fns.map = [&](data::Document& d) {
    if (exact) {
      const data::Hash128 h = data::dedup_hash(d.text);
      d.scratch = {h.lo, h.hi};
    }
    if (near) {
      const std::vector<uint32_t> sig = mh->signature(d.text);
      for (uint32_t v : sig) d.scratch.push_back(v);
    }
  };
  fns.ordered = [&](data::Document& d) {
    size_t off = 0;
    if (exact) {
      off = 2;
      if (!ex.insert({d.scratch[0], d.scratch[1]})) {
        d.drop = "exact_duplicate";
        return;
      }
    }
    if (near) {
      std::vector<uint32_t> sig(d.scratch.begin() + static_cast<std::ptrdiff_t>(off), d.scratch.end());
      if (mh->is_duplicate(sig)) d.drop = "near_duplicate";
    }
    d.scratch.clear();
  };
  data::StageReport r = data::run_stage("dedup", a.common.inputs, a.common.output, read_options(a.common), fns);
  if (near) {
    r.counters["lsh_bands"] = mh->bands();
    r.counters["lsh_rows"] = mh->rows();
    r.counters["lsh_candidates_checked"] = mh->candidates_checked();
  }
  if (ex.bloom()) {
    r.counters["bloom_bytes"] = static_cast<int64_t>(ex.bloom_bytes());
    r.counters["bloom_hashes"] = ex.bloom_hashes();
  }
  return finish_stage(r, a.common, ctx);
}

void planned(CLI::App* data, Context& ctx, const char* name, const char* what) {
  CLI::App* sub = data->add_subcommand(name, std::string(what) + " [not built yet]");
  sub->allow_extras();
  sub->callback([&ctx, name] {
    std::fprintf(stderr, "lmforge data %s: not built yet (issue #4)\n", name);
    ctx.exit_code = kRuntimeError;
  });
}
}  // namespace

void add_data_dedup_command(CLI::App* data, Context& ctx) {
  auto a = std::make_shared<DedupArgs>();
  CLI::App* sub = data->add_subcommand("dedup",
                                       "remove exact and near duplicates (MinHash + LSH); the first "
                                       "occurrence survives");
  add_common_data_options(sub, a->common, ctx, true);
  sub->add_option("--method", a->method, "exact, minhash, or both (exact first)")
      ->check(CLI::IsMember({"exact", "minhash", "both"}))
      ->capture_default_str();
  sub->add_flag("--bloom", a->bloom, "exact dedup in a Bloom filter instead of a hash set");
  sub->add_option("--bloom-capacity", a->bloom_capacity, "documents the Bloom filter is sized for")
      ->capture_default_str();
  sub->add_option("--bloom-fp", a->bloom_fp, "Bloom filter false-positive rate")->capture_default_str();
  sub->add_option("--threshold", a->mh.threshold, "near-duplicate Jaccard threshold")->capture_default_str();
  sub->add_option("--num-perm", a->mh.num_perm, "MinHash permutations")->capture_default_str();
  sub->add_option("--shingle", a->mh.shingle, "words per shingle")->capture_default_str();
  sub->add_option("--bands", a->mh.bands, "LSH bands (default: from the threshold)");
  sub->add_option("--rows", a->mh.rows, "LSH rows per band (default: from the threshold)");
  sub->add_option("--seed", a->mh.seed, "MinHash seed")->capture_default_str();
  sub->callback([&ctx, a] { ctx.exit_code = run_dedup(*a, ctx); });
}
void add_data_filter_command(CLI::App* data, Context& ctx) {
  planned(data, ctx, "filter", "length, language, quality and domain filters");
}
void add_data_stats_command(CLI::App* data, Context& ctx) {
  planned(data, ctx, "stats", "corpus statistics");
}

}  // namespace lmforge::cli
