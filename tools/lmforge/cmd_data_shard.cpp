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

int run_shard(ShardArgs& a, const Context& ctx) {
  if (a.bytes == !a.tokenizer.empty()) {
    std::fprintf(stderr, "lmforge data shard: give exactly one of --bytes and --tokenizer\n");
    return kUsageError;
  }
  a.opt.read = read_options(a.common);
  data::TokenShardReport r;
  if (a.bytes) {
    if (a.opt.eos_id >= 0) {
      std::fprintf(stderr, "lmforge data shard: --eos-id applies to --tokenizer; with --bytes EOS is 256\n");
      return kUsageError;
    }
    data::ByteShardOptions bo;
    bo.val_fraction = a.opt.val_fraction;
    bo.shard_tokens = a.opt.shard_tokens;
    bo.read = a.opt.read;
    r = data::write_byte_shards(a.common.inputs, a.common.output, bo);
  } else {
    const auto tok = tokenizer::Tokenizer::from_file(a.tokenizer);
    r = data::write_token_shards(a.common.inputs, a.common.output, tok, a.tokenizer, a.opt);
  }
  const nlohmann::json j = r.to_json();
  data::write_report(a.common.report, j);
  if (!a.common.quiet) {
    std::fputs(r.read.summary().c_str(), stderr);
    std::fprintf(stderr,
                 "data shard: %lld train documents (%lld tokens) + %lld val documents (%lld tokens) in %lld shards "
                 "of uint%d ids, EOS %lld, under %s\n",
                 static_cast<long long>(r.train_documents), static_cast<long long>(r.train_tokens),
                 static_cast<long long>(r.val_documents), static_cast<long long>(r.val_tokens),
                 static_cast<long long>(r.shards), r.width * 8, static_cast<long long>(r.eos_id),
                 a.common.output.c_str());
  }
  if (ctx.json) std::printf("%s\n", j.dump().c_str());
  return kOk;
}

}  // namespace

void add_data_shard_command(CLI::App* data, Context& ctx) {
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
  shard->callback([&ctx, a, shard] {
    apply_data_config(shard, a->common, true);
    ctx.exit_code = run_shard(*a, ctx);
  });
}

}  // namespace lmforge::cli
