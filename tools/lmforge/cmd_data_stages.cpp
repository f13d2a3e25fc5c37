// lmforge data dedup | filter | balance | stats (docs/DATA.md).
#include <bit>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "data_cli.h"
#include "lmforge/core/error.h"
#include "lmforge/data/balance.h"
#include "lmforge/data/dedup.h"
#include "lmforge/data/domain.h"
#include "lmforge/data/filter.h"
#include "lmforge/data/stats.h"
#include "lmforge/tokenizer/tokenizer.h"

namespace lmforge::cli {

namespace {

struct DedupArgs {
  CommonArgs common;
  std::string method = "both";
  bool bloom = false;
  int64_t bloom_capacity = 100000000;
  double bloom_fp = 1e-6;
  data::MinHashOptions mh;
  int simhash_distance = 3;
};

struct DedupState {
  std::unique_ptr<data::ExactDeduper> ex;
  std::unique_ptr<data::MinHashDeduper> mh;
  std::unique_ptr<data::SimHashDeduper> sh;
};

StagePlan plan_dedup(const std::shared_ptr<DedupArgs>& a, Context& ctx) {
  const bool simhash = a->method == "simhash";
  const bool exact = a->method == "exact" || a->method == "both", near = a->method == "minhash" || a->method == "both";
  auto st = std::make_shared<DedupState>();
  st->ex = std::make_unique<data::ExactDeduper>(a->bloom ? data::ExactDeduper(a->bloom_capacity, a->bloom_fp)
                                                         : data::ExactDeduper());
  if (near) st->mh = std::make_unique<data::MinHashDeduper>(a->mh);
  if (simhash) st->sh = std::make_unique<data::SimHashDeduper>(a->simhash_distance, a->mh.shingle);
  StagePlan p;
  p.name = "dedup";
  p.common = &a->common;
  p.fns.map = [st, exact, near, simhash](data::Document& d) {
    if (exact) {
      const data::Hash128 h = data::dedup_hash(d.text);
      d.scratch = {h.lo, h.hi};
    }
    if (simhash) d.scratch = {st->sh->fingerprint(d.text)};
    if (near) {
      const std::vector<uint32_t> sig = st->mh->signature(d.text);
      for (uint32_t v : sig) d.scratch.push_back(v);
    }
  };
  p.fns.ordered = [st, exact, near, simhash](data::Document& d) {
    if (simhash) {
      if (st->sh->is_duplicate(d.scratch[0])) d.drop = "near_duplicate";
      return;
    }
    size_t off = 0;
    if (exact) {
      off = 2;
      if (!st->ex->insert({d.scratch[0], d.scratch[1]})) {
        d.drop = "exact_duplicate";
        return;
      }
    }
    if (near) {
      std::vector<uint32_t> sig(d.scratch.begin() + static_cast<std::ptrdiff_t>(off), d.scratch.end());
      if (st->mh->is_duplicate(sig)) d.drop = "near_duplicate";
    }
    d.scratch.clear();
  };
  p.finish = [a, st, &ctx](data::StageReport& r) {
    if (st->mh) {
      r.counters["lsh_bands"] = st->mh->bands();
      r.counters["lsh_rows"] = st->mh->rows();
      r.counters["lsh_candidates_checked"] = st->mh->candidates_checked();
    }
    if (st->sh) r.counters["simhash_candidates_checked"] = st->sh->candidates_checked();
    if (st->ex->bloom()) {
      r.counters["bloom_bytes"] = static_cast<int64_t>(st->ex->bloom_bytes());
      r.counters["bloom_hashes"] = st->ex->bloom_hashes();
    }
    return finish_stage(r, a->common, ctx);
  };
  p.keep = a;
  return p;
}

struct FilterArgs {
  CommonArgs common;
  std::string tokenizer, block_list;
  std::vector<std::string> domain_ref;
  bool quality = false;
  data::FilterOptions opt;
};

StagePlan plan_filter(const std::shared_ptr<FilterArgs>& ap, Context& ctx) {
  FilterArgs& a = *ap;
  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (!a.tokenizer.empty()) {
    tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(a.tokenizer));
    if (a.opt.min_tokens == 0 && a.opt.max_tokens == 0) {  // the seeds' default window
      a.opt.min_tokens = 32;
      a.opt.max_tokens = 2048;
    }
  }
  if (!a.block_list.empty())
    for (auto& p : data::read_block_list(a.block_list)) a.opt.block_patterns.push_back(p);
  if (a.quality) {  // --quality fills what was not set explicitly
    data::FilterOptions g;
    g.set_gopher_quality();
    if (a.opt.max_symbol_word_ratio < 0) a.opt.max_symbol_word_ratio = g.max_symbol_word_ratio;
    if (a.opt.max_duplicate_line_fraction < 0) a.opt.max_duplicate_line_fraction = g.max_duplicate_line_fraction;
    if (a.opt.max_duplicate_ngram_fraction < 0) a.opt.max_duplicate_ngram_fraction = g.max_duplicate_ngram_fraction;
    if (a.opt.min_mean_word_length < 0) a.opt.min_mean_word_length = g.min_mean_word_length;
    if (a.opt.max_mean_word_length < 0) a.opt.max_mean_word_length = g.max_mean_word_length;
    if (a.opt.min_stop_words == 0) a.opt.min_stop_words = g.min_stop_words;
  }
  if (!a.domain_ref.empty()) {
    // The reference corpus is read whole (it is meant to be small: a few MB of the wanted domain).
    data::StageReport ref_report;
    data::CorpusReader reader(a.domain_ref, read_options(a.common, false), ref_report);
    std::vector<data::Document> docs;
    while (reader.next_batch(docs)) {
    }
    std::vector<std::string> texts;
    for (auto& d : docs) texts.push_back(std::move(d.text));
    a.opt.domain = std::make_shared<data::DomainScorer>(texts);
  }
  std::shared_ptr<tokenizer::Tokenizer> shared_tok(std::move(tok));
  auto filter = std::make_shared<data::DocumentFilter>(a.opt, shared_tok.get());
  StagePlan p;
  p.name = "filter";
  p.common = &a.common;
  // The filter holds a plain pointer to the tokenizer: the map function keeps both alive.
  p.fns.map = [filter, shared_tok](data::Document& d) { d.drop = filter->check(d.text); };
  p.finish = [ap, &ctx](data::StageReport& r) { return finish_stage(r, ap->common, ctx); };
  p.keep = ap;
  return p;
}

struct BalanceArgs {
  CommonArgs common;
  std::string ratio, mode = "under";
  data::BalanceOptions opt;
};

int run_balance(BalanceArgs& a, const Context& ctx) {
  if (a.ratio.empty()) throw Error("lmforge data balance: --ratio is required (e.g. spam:1,ham:3)");
  a.opt.ratio = data::parse_class_ratio(a.ratio);
  a.opt.oversample = a.mode == "over";
  return finish_stage(data::balance_classes(a.common.inputs, a.common.output, read_options(a.common), a.opt), a.common,
                      ctx);
}

struct StatsArgs {
  CommonArgs common;
  std::string tokenizer;
};

StagePlan plan_stats(const std::shared_ptr<StatsArgs>& a, Context& ctx) {
  std::shared_ptr<tokenizer::Tokenizer> tok;
  if (!a->tokenizer.empty())
    tok = std::make_shared<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(a->tokenizer));
  auto measure = std::make_shared<data::DocumentFilter>(data::FilterOptions{}, nullptr);
  auto stats = std::make_shared<data::CorpusStats>();
  StagePlan p;
  p.name = "stats";
  p.common = &a->common;
  p.writes_jsonl = false;
  p.fns.map = [tok, measure](data::Document& d) {
    const data::TextMetrics m = measure->measure(d.text);
    const data::Hash128 h = data::dedup_hash(d.text);
    int64_t tokens = -1;
    if (tok) {
      tokenizer::EncodeOptions eo;
      eo.add_special_tokens = false;
      tokens = static_cast<int64_t>(tok->encode(d.text, eo).size());
    }
    d.scratch = {h.lo,
                 h.hi,
                 static_cast<uint64_t>(tokens),
                 static_cast<uint64_t>(m.cjk_letters),
                 static_cast<uint64_t>(m.latin_letters),
                 static_cast<uint64_t>(m.letters),
                 std::bit_cast<uint64_t>(m.duplicate_line_fraction),
                 std::bit_cast<uint64_t>(m.mean_word_length)};
  };
  p.fns.ordered = [stats](data::Document& d) {
    const auto& s = d.scratch;
    stats->add(d.text, static_cast<int64_t>(s[2]), {s[0], s[1]}, static_cast<int64_t>(s[3]), static_cast<int64_t>(s[4]),
               static_cast<int64_t>(s[5]), std::bit_cast<double>(s[6]), std::bit_cast<double>(s[7]));
  };
  p.finish = [a, stats, &ctx](data::StageReport& r) {
    nlohmann::json j = stats->to_json();
    j["read"] = r.to_json();
    end_progress(a->common);
    data::write_report(a->common.report, j);
    data::write_report(a->common.output, j);  // atomically, like every stage's output
    if (!a->common.quiet) std::fputs(r.summary().c_str(), stderr);
    if (a->common.output.empty() || ctx.json) std::printf("%s\n", j.dump(ctx.json ? -1 : 2).c_str());
    return kOk;
  };
  p.keep = a;
  return p;
}

}  // namespace

void add_data_dedup_command(CLI::App* data, Context& ctx, const PlanSink* sink) {
  auto a = std::make_shared<DedupArgs>();
  CLI::App* sub = data->add_subcommand("dedup",
                                       "remove exact and near duplicates (MinHash + LSH); the first "
                                       "occurrence survives");
  add_common_data_options(sub, a->common, ctx, true);
  sub->add_option("--method", a->method, "exact, minhash, both (exact first), or simhash")
      ->check(CLI::IsMember({"exact", "minhash", "both", "simhash"}))
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
  sub->add_option("--simhash-distance", a->simhash_distance, "simhash: most differing bits of 64 for a duplicate")
      ->capture_default_str();
  sub->add_option("--seed", a->mh.seed, "MinHash seed")->capture_default_str();
  sub->callback([&ctx, a, sub, sink] {
    apply_data_config(sub, a->common, true);
    dispatch(plan_dedup(a, ctx), ctx, sink);
  });
}
void add_data_filter_command(CLI::App* data, Context& ctx, const PlanSink* sink) {
  auto a = std::make_shared<FilterArgs>();
  CLI::App* sub = data->add_subcommand(
      "filter", "drop documents by length, tokens, script share, quality, TF-IDF domain and block list");
  add_common_data_options(sub, a->common, ctx, true);
  data::FilterOptions& o = a->opt;
  sub->add_option("--min-chars", o.min_chars, "fewest characters (code points)");
  sub->add_option("--max-chars", o.max_chars, "most characters (0: no limit)");
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer.json for token limits (default window 32-2048)")
      ->check(CLI::ExistingFile);
  sub->add_option("--min-tokens", o.min_tokens, "fewest tokens");
  sub->add_option("--max-tokens", o.max_tokens, "most tokens (0: no limit)");
  sub->add_option("--script", o.script, "cjk, or a Unicode script name (han, latin, cyrillic, ...)");
  sub->add_option("--min-script-share", o.min_script_share, "least share of letters in --script");
  sub->add_flag("--quality", a->quality, "Gopher quality rules (each can be overridden by its own flag)");
  sub->add_option("--max-symbol-ratio", o.max_symbol_word_ratio, "most '#' and ellipses per word");
  sub->add_option("--max-dup-lines", o.max_duplicate_line_fraction, "largest share of repeated lines");
  sub->add_option("--max-dup-ngrams", o.max_duplicate_ngram_fraction,
                  "largest share of characters in repeated word 5-grams");
  sub->add_option("--min-mean-word-length", o.min_mean_word_length, "shortest mean word length");
  sub->add_option("--max-mean-word-length", o.max_mean_word_length, "longest mean word length");
  sub->add_option("--min-stop-words", o.min_stop_words, "fewest distinct English stop words");
  sub->add_option("--block-regex", o.block_patterns, "drop documents matching this regex (repeatable)");
  sub->add_option("--domain-ref", a->domain_ref, "reference corpus of the wanted domain (TF-IDF cosine filter)")
      ->check(CLI::ExistingFile);
  sub->add_option("--min-domain-score", o.min_domain_score, "least TF-IDF cosine to the reference")
      ->capture_default_str();
  sub->add_option("--block-list", a->block_list, "file of block regexes, one a line")->check(CLI::ExistingFile);
  sub->callback([&ctx, a, sub, sink] {
    apply_data_config(sub, a->common, true);
    dispatch(plan_filter(a, ctx), ctx, sink);
  });
}

void add_data_balance_command(CLI::App* data, Context& ctx, const PlanSink* sink) {
  auto a = std::make_shared<BalanceArgs>();
  CLI::App* sub = data->add_subcommand("balance", "bring labelled classes to a ratio by under- or over-sampling");
  add_common_data_options(sub, a->common, ctx, true);
  sub->add_option("--label-field", a->opt.label_field, "JSONL field holding the class")->capture_default_str();
  sub->add_option("--ratio", a->ratio, "target ratio, CLASS:WEIGHT,... (e.g. spam:1,ham:3); required");
  sub->add_option("--mode", a->mode, "under: drop from larger classes; over: repeat smaller ones")
      ->check(CLI::IsMember({"under", "over"}))
      ->capture_default_str();
  sub->add_option("--seed", a->opt.seed, "seed of the hash that picks documents")->capture_default_str();
  sub->callback([&ctx, a, sub, sink] {
    // Balancing counts the classes before it writes: two passes over its input, so it cannot join a single pass.
    if (sink) throw Error("data balance: reads its input twice and cannot run in a single pass");
    apply_data_config(sub, a->common, true);
    ctx.exit_code = run_balance(*a, ctx);
  });
}

void add_data_stats_command(CLI::App* data, Context& ctx, const PlanSink* sink) {
  auto a = std::make_shared<StatsArgs>();
  CLI::App* sub = data->add_subcommand("stats", "corpus statistics as JSON (stdout, or --output)");
  add_common_data_options(sub, a->common, ctx, false);
  sub->add_option("--output", a->common.output,
                  "write the statistics (JSON) here, atomically; stdout then stays empty unless --json");
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer.json: token counts too")->check(CLI::ExistingFile);
  sub->callback([&ctx, a, sub, sink] {
    apply_data_config(sub, a->common, false);
    dispatch(plan_stats(a, ctx), ctx, sink);
  });
}

}  // namespace lmforge::cli
