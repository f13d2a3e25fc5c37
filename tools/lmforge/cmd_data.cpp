// lmforge data clean (and the options every data stage shares); dedup, filter, balance, stats: the corpus stages
// (docs/DATA.md). Each reads JSONL or plain text, writes JSONL atomically, prints a human summary on stderr and, with
// --report, the stage report as JSON.
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "data_cli.h"
#include "lmforge/core/error.h"
#include "lmforge/data/clean.h"
#include "lmforge/data/corpus.h"

namespace lmforge::cli {

void add_common_data_options(CLI::App* sub, CommonArgs& a, Context& ctx, bool output) {
  a.stage = sub->get_name();
  sub->add_option("--config", a.config, "TOML file with [input] and per-stage sections (docs/DATA.md); flags win")
      ->check(CLI::ExistingFile);
  sub->add_option("--input", a.inputs, "input files: *.jsonl (one JSON object a line) or plain text (required)")
      ->check(CLI::ExistingFile);
  if (output) sub->add_option("--output", a.output, "output JSONL, written atomically (required)");
  sub->add_option("--report", a.report, "write the stage report (JSON) here");
  sub->add_option("--field", a.field, "JSONL text field")->capture_default_str();
  sub->add_option("--invalid-utf8", a.invalid_utf8, "invalid UTF-8: repair (U+FFFD), drop, or error")
      ->check(CLI::IsMember({"repair", "drop", "error"}))
      ->capture_default_str();
  sub->add_option("--text-unit", a.unit, "plain-text inputs: one document per file, line or paragraph")
      ->check(CLI::IsMember({"file", "line", "paragraph"}))
      ->capture_default_str();
  sub->add_flag("--skip-bad", a.skip_bad, "count and skip malformed JSON lines and missing fields");
  sub->add_flag("--quiet", a.quiet, "no progress and no summary on stderr");
  sub->add_flag("--json", ctx.json, "print the report as JSON on stdout");
}

data::ReadOptions read_options(const CommonArgs& a, bool progress) {
  data::ReadOptions o;
  if (progress && !a.quiet) {
    a.progress = std::make_shared<ByteProgress>("data " + a.stage, 0);
    o.progress = [p = a.progress](int64_t done, int64_t total, int64_t docs) {
      p->set_total(total);
      p->update(done, docs);
    };
  }
  o.field = a.field;
  o.skip_bad = a.skip_bad;
  o.utf8 = a.invalid_utf8 == "drop"    ? data::Utf8Policy::kDrop
           : a.invalid_utf8 == "error" ? data::Utf8Policy::kError
                                       : data::Utf8Policy::kRepair;
  o.unit = a.unit == "line"        ? data::TextUnit::kLine
           : a.unit == "paragraph" ? data::TextUnit::kParagraph
                                   : data::TextUnit::kFile;
  return o;
}

void end_progress(const CommonArgs& a) {
  if (a.progress) a.progress->finish();
}

int finish_stage(const data::StageReport& r, const CommonArgs& a, const Context& ctx) {
  end_progress(a);
  data::write_report(a.report, r.to_json());
  if (!a.quiet) std::fputs(r.summary().c_str(), stderr);
  if (ctx.json) std::printf("%s\n", r.to_json().dump().c_str());
  return kOk;
}

int run_plan(const StagePlan& p) {
  data::StageReport r =
      data::run_stage(p.name, p.common->inputs, p.writes_jsonl ? p.common->output : "", read_options(*p.common), p.fns);
  return p.finish(r);
}

void dispatch(StagePlan p, Context& ctx, const PlanSink* sink) {
  if (sink)
    (*sink)(std::move(p));
  else
    ctx.exit_code = run_plan(p);
}

namespace {

struct CleanArgs {
  CommonArgs common;
  std::string form = "nfc";
  data::CleanOptions opt;
  bool keep_control = false, keep_whitespace = false;
};

struct CleanCounters {
  std::atomic<int64_t> tags{0}, controls{0}, emails{0}, phones{0}, ips{0}, normalized{0};
};

StagePlan plan_clean(const std::shared_ptr<CleanArgs>& a, Context& ctx) {
  a->opt.normal_form = a->form == "nfkc"   ? data::NormalForm::kNfkc
                       : a->form == "none" ? data::NormalForm::kNone
                                           : data::NormalForm::kNfc;
  a->opt.strip_control = !a->keep_control;
  a->opt.normalize_whitespace = !a->keep_whitespace;
  auto cleaner = std::make_shared<data::TextCleaner>(a->opt);
  auto n = std::make_shared<CleanCounters>();
  StagePlan p;
  p.name = "clean";
  p.common = &a->common;
  p.fns.map = [cleaner, n](data::Document& d) {
    data::CleanCounts c;
    d.text = cleaner->clean(d.text, &c);
    n->tags += c.html_tags;
    n->controls += c.control_chars;
    n->emails += c.emails;
    n->phones += c.phones;
    n->ips += c.ips;
    n->normalized += c.normalized ? 1 : 0;
    if (d.text.empty()) d.drop = "empty_after_clean";
  };
  p.finish = [a, n, &ctx](data::StageReport& r) {
    r.counters["html_tags_removed"] = n->tags;
    r.counters["control_chars_removed"] = n->controls;
    r.counters["documents_renormalized"] = n->normalized;
    if (a->opt.mask_pii) {
      r.counters["pii_email"] = n->emails;
      r.counters["pii_phone"] = n->phones;
      r.counters["pii_ip"] = n->ips;
    }
    return finish_stage(r, a->common, ctx);
  };
  p.keep = a;
  return p;
}

}  // namespace

void add_data_clean_command(CLI::App* data, Context& ctx, const PlanSink* sink) {
  auto ca = std::make_shared<CleanArgs>();
  CLI::App* clean = data->add_subcommand("clean",
                                         "normalise Unicode, strip control characters and HTML, "
                                         "normalise whitespace, mask PII");
  add_common_data_options(clean, ca->common, ctx, true);
  clean->add_option("--normalize", ca->form, "Unicode normal form")
      ->check(CLI::IsMember({"nfc", "nfkc", "none"}))
      ->capture_default_str();
  clean->add_flag("--strip-html", ca->opt.strip_html,
                  "remove HTML tags, scripts, styles and comments; decode entities");
  clean->add_flag("--mask-pii", ca->opt.mask_pii, "replace e-mails, phone numbers and IPv4 addresses with masks");
  clean->add_flag("--keep-control", ca->keep_control, "keep control characters");
  clean->add_flag("--keep-whitespace", ca->keep_whitespace, "leave whitespace as it is");
  clean->callback([&ctx, ca, clean, sink] {
    apply_data_config(clean, ca->common, true);
    dispatch(plan_clean(ca, ctx), ctx, sink);
  });
}

void add_data_stage_commands(CLI::App* data, Context& ctx, const PlanSink* sink) {
  add_data_shard_command(data, ctx, sink);
  add_data_clean_command(data, ctx, sink);
  add_data_dedup_command(data, ctx, sink);
  add_data_filter_command(data, ctx, sink);
  add_data_balance_command(data, ctx, sink);
  add_data_stats_command(data, ctx, sink);
}

void add_data_command(CLI::App& app, Context& ctx) {
  CLI::App* data = app.add_subcommand("data", "clean, deduplicate, filter and shard corpora");
  data->require_subcommand(1);
  add_data_stage_commands(data, ctx, nullptr);
  add_data_run_command(data, ctx);
}

}  // namespace lmforge::cli
