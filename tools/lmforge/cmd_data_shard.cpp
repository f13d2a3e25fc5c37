// lmforge data shard: token shards and a manifest, byte-level (--bytes) or with a tokenizer.json (--tokenizer).
#include <cstdio>
#include <memory>
#include <string>

#include "data_cli.h"
#include "lmforge/core/error.h"
#include "lmforge/data/shard.h"
#include "lmforge/data/token_shards.h"
#include "lmforge/tokenizer/tokenizer.h"

namespace lmforge::cli {

namespace {

struct ShardArgs {
  CommonArgs common;
  bool bytes = false;
  std::string tokenizer;
  data::TokenShardOptions opt;
};

struct ShardState {
  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::unique_ptr<data::ShardWriter> writer;
};

StagePlan plan_shard(const std::shared_ptr<ShardArgs>& ap, Context& ctx) {
  ShardArgs& a = *ap;
  if (a.bytes == !a.tokenizer.empty()) throw Error("lmforge data shard: give exactly one of --bytes and --tokenizer");
  if (a.bytes && a.opt.eos_id >= 0)
    throw Error("lmforge data shard: --eos-id applies to --tokenizer; with --bytes EOS is 256");
  auto st = std::make_shared<ShardState>();
  data::ShardEncoding enc;
  if (a.bytes) {
    enc = data::byte_encoding();
  } else {
    st->tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(a.tokenizer));
    enc = data::tokenizer_encoding(*st->tok, a.tokenizer, a.opt.eos_id);
  }
  st->writer = std::make_unique<data::ShardWriter>(a.common.output, std::move(enc), a.opt);
  StagePlan p;
  p.name = "shard";
  p.common = &a.common;
  p.writes_jsonl = false;
  p.fns = st->writer->fns();
  p.finish = [ap, st, &ctx](data::StageReport& read) {
    const data::TokenShardReport r = st->writer->finish(read);
    end_progress(ap->common);
    const nlohmann::json j = r.to_json();
    data::write_report(ap->common.report, j);
    if (!ap->common.quiet) {
      std::fputs(r.read.summary().c_str(), stderr);
      std::fprintf(stderr,
                   "data shard: %lld train documents (%lld tokens) + %lld val documents (%lld tokens) in %lld "
                   "shards of uint%d ids, EOS %lld, under %s\n",
                   static_cast<long long>(r.train_documents), static_cast<long long>(r.train_tokens),
                   static_cast<long long>(r.val_documents), static_cast<long long>(r.val_tokens),
                   static_cast<long long>(r.shards), r.width * 8, static_cast<long long>(r.eos_id),
                   ap->common.output.c_str());
    }
    if (ctx.json) std::printf("%s\n", j.dump().c_str());
    return kOk;
  };
  p.keep = ap;
  return p;
}

}  // namespace

void add_data_shard_command(CLI::App* data, Context& ctx) {
  add_data_shard_command(data, ctx, nullptr);
}

void add_data_shard_command(CLI::App* data, Context& ctx, const PlanSink* sink) {
  auto a = std::make_shared<ShardArgs>();
  CLI::App* shard = data->add_subcommand("shard", "write token shards and a manifest (train and val splits)");
  add_common_data_options(shard, a->common, ctx, true);
  shard->get_option("--output")->description("output folder (shards + manifest.json)");
  shard->add_flag("--bytes", a->bytes, "byte-level ids 0-255, EOS 256 (no tokenizer)");
  shard->add_option("--tokenizer", a->tokenizer, "tokenizer.json to encode with")->check(CLI::ExistingFile);
  shard->add_option("--eos-id", a->opt.eos_id, "id appended after each document (default: the tokenizer's EOS)");
  shard
      ->add_option("--val-fraction", a->opt.val_fraction,
                   "share held out: documents chosen by a hash of the text (below 20 documents: the tail of each)")
      ->capture_default_str();
  shard->add_option("--shard-tokens", a->opt.shard_tokens, "tokens per shard file")->capture_default_str();
  shard->callback([&ctx, a, shard, sink] {
    apply_data_config(shard, a->common, true);
    dispatch(plan_shard(a, ctx), ctx, sink);
  });
}

}  // namespace lmforge::cli
