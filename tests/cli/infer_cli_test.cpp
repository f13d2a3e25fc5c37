// generate, eval and bench generate as a user runs them: a tokenizer trained on Debian's GPL-3 text and a small
// random llama, outputs, reproducibility, and bad input (exit 2 with one line naming the fault).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli_run.h"
#include "lmforge/io/safetensors.h"
#include "temp_dir_test.h"

namespace {

using lmforge::testing::CliRun;
using lmforge::testing::sh;
namespace io = lmforge::io;
using lmforge::Tensor;

nlohmann::json last_json(const std::string& out) {
  const size_t b = out.rfind("\n{", out.size() - 2);
  return nlohmann::json::parse(out.substr(b == std::string::npos ? 0 : b + 1));
}

const std::string kBin = LMFORGE_BINARY;

class InferCli : public lmforge::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    CliRun r = sh(kBin + " tokenizer train --input /usr/share/common-licenses/GPL-3 --out " + path("tok.json") +
                  " --vocab-size 320 --special-tokens '<s>,</s>' --threads 1");
    ASSERT_EQ(r.code, 0) << r.out;
    std::ofstream(path("cfg.json")) << R"({"model_type":"llama","vocab_size":320,"hidden_size":32,
      "intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
      "max_position_embeddings":128,"initializer_range":0.02,"bos_token_id":0,"eos_token_id":1})";
    r = sh(kBin + " init-model --config " + path("cfg.json") + " --seed 3 --out " + path("m") + " && cp " +
           path("tok.json") + " " + path("m/tokenizer.json"));
    ASSERT_EQ(r.code, 0) << r.out;
    model = " --model " + path("m");
  }
  std::string model;
};

TEST_F(InferCli, GenerateIsReproducibleAndStopsAtMaxTokens) {
  const std::string cmd = kBin + " generate" + model +
                          " --prompt 'This License' --max-tokens 7 --temperature 0.9 "
                          "--top-k 40 --ignore-eos --json --seed ";
  CliRun a = sh(cmd + "5"), b = sh(cmd + "5"), c = sh(cmd + "6");
  ASSERT_EQ(a.code, 0) << a.out;
  const auto ja = last_json(a.out), jb = last_json(b.out), jc = last_json(c.out);
  EXPECT_EQ(ja["completion_tokens"], 7);
  EXPECT_EQ(ja["finish_reason"], "length");
  EXPECT_EQ(ja["tokens"], jb["tokens"]);
  EXPECT_NE(ja["tokens"], jc["tokens"]);
  // Either KV cache type (f16 by default, as llama.cpp): the same length, greedy.
  for (const char* kv : {"f16", "f32"}) {
    CliRun g = sh(kBin + " generate" + model + " --prompt 'This License' --max-tokens 7 --temperature 0 --ignore-eos " +
                  "--json --kv-type " + kv);
    ASSERT_EQ(g.code, 0) << g.out;
    EXPECT_EQ(last_json(g.out)["completion_tokens"], 7) << kv;
  }
  // Streaming prints the same text the JSON reports (the stream ends with a newline).
  CliRun s = sh(kBin + " generate" + model + " --prompt 'This License' --max-tokens 7 --temperature 0 --ignore-eos");
  CliRun sj =
      sh(kBin + " generate" + model + " --prompt 'This License' --max-tokens 7 --temperature 0 --ignore-eos --json");
  ASSERT_EQ(s.code, 0) << s.out;
  EXPECT_EQ(s.out, last_json(sj.out)["text"].get<std::string>() + "\n");
  // The context (128) bounds the completion: every position up to it, finish_reason "length", and a note saying so.
  CliRun full = sh(kBin + " generate" + model + " --prompt 'This License' --max-tokens 1000 --ignore-eos --json");
  ASSERT_EQ(full.code, 0) << full.out;
  const auto jf = last_json(full.out);
  EXPECT_EQ(jf["completion_tokens"].get<int64_t>(), 128 - jf["prompt_tokens"].get<int64_t>() + 1);
  EXPECT_EQ(jf["finish_reason"], "length");
  EXPECT_NE(full.out.find("tokens fit after the prompt's"), std::string::npos) << full.out;
}

// generation_config.json's eos_token_id and tokenizer_config.json's eos_token stop generation as config.json's EOS
// does (vLLM's stop ids), and --ignore-eos ignores them all.
TEST_F(InferCli, GenerateStopsAtTheModelsEosUnlessIgnored) {
  const std::string cmd = kBin + " generate" + model + " --prompt 'This License' --max-tokens 6 --temperature 0 --json";
  CliRun r = sh(cmd + " --ignore-eos");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<int32_t> toks = last_json(r.out)["tokens"];
  ASSERT_EQ(toks.size(), 6u);
  const int32_t stop = toks[3];
  const auto first = static_cast<int64_t>(std::find(toks.begin(), toks.end(), stop) - toks.begin());
  std::string text;  // the stop token's text in tokenizer.json
  const nlohmann::json tok = nlohmann::json::parse(std::ifstream(path("tok.json")));
  for (const auto& [k, v] : tok["model"]["vocab"].items())
    if (v == stop) text = k;
  ASSERT_FALSE(text.empty());
  for (const bool generation_config : {true, false}) {
    SCOPED_TRACE(generation_config ? "generation_config.json" : "tokenizer_config.json");
    if (generation_config)
      std::ofstream(path("m/generation_config.json")) << nlohmann::json{{"eos_token_id", {stop}}}.dump();
    else
      std::ofstream(path("m/tokenizer_config.json")) << nlohmann::json{{"eos_token", text}}.dump();
    r = sh(cmd);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(last_json(r.out)["completion_tokens"], first);
    EXPECT_EQ(last_json(r.out)["finish_reason"], "stop");
    r = sh(cmd + " --ignore-eos");
    EXPECT_EQ(last_json(r.out)["completion_tokens"], 6);
    sh("rm -f " + path("m/generation_config.json") + " " + path("m/tokenizer_config.json"));
  }
}

TEST_F(InferCli, ChatUsesTheBuiltInFormatAndSaysSo) {
  std::ofstream(path("chat.jsonl")) << R"({"role":"system","content":"Be brief."})"
                                    << "\n"
                                    << R"({"role":"user","content":"What is free software?"})"
                                    << "\n";
  CliRun r = sh(kBin + " generate" + model + " --chat " + path("chat.jsonl") + " --max-tokens 3 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("no chat_template; using the built-in ChatML format"), std::string::npos) << r.out;
  std::ofstream(path("bad.jsonl")) << R"({"role":"user"})"
                                   << "\n";
  r = sh(kBin + " generate" + model + " --chat " + path("bad.jsonl"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("bad.jsonl:1: needs a field 'content' (or 'tool_calls')"), std::string::npos) << r.out;
  // A tool message needs a template: the built-in formats have no tool turns.
  std::ofstream(path("tool.jsonl")) << R"({"role":"user","content":"hi"})"
                                    << "\n"
                                    << R"({"role":"tool","content":"42"})"
                                    << "\n";
  r = sh(kBin + " generate" + model + " --chat " + path("tool.jsonl") + " --max-tokens 1");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("role 'tool' needs the model's chat_template"), std::string::npos) << r.out;
}

TEST_F(InferCli, ChatPassesMessagesToolsAndKwargsToTheTemplate) {
  // The template refuses unless it sees the tool message's fields, the tools and the extra variable.
  const nlohmann::json cfg = {
      {"chat_template",
       "{% if tools is none or tools|length != 1 %}{{ raise_exception('no tools') }}{% endif %}"
       "{% if not enable_x %}{{ raise_exception('no enable_x') }}{% endif %}"
       "{% for m in messages %}{% if m.role == 'tool' and m.tool_call_id != 'c1' %}"
       "{{ raise_exception('no tool_call_id') }}{% endif %}"
       "{{ m.role }}: {{ m.content if m.content is string else m.tool_calls|tojson }}\n{% endfor %}"}};
  std::ofstream(path("m/tokenizer_config.json")) << cfg.dump();
  std::ofstream(path("chat.json")) << R"([{"role": "user", "content": [{"type": "text", "text": "sum 2 and 2"}]},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
      "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 2}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "4"}])";
  std::ofstream(path("tools.json"))
      << R"([{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}])";
  const std::string base = kBin + " generate" + model + " --chat " + path("chat.json") + " --max-tokens 2 --json";
  CliRun r = sh(base + " --tools " + path("tools.json") + " --chat-template-kwargs '{\"enable_x\": true}'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find("built-in"), std::string::npos) << r.out;  // the template itself rendered it
  EXPECT_GT(last_json(r.out)["prompt_tokens"].get<int64_t>(), 10);
  r = sh(base + " --chat-template-kwargs '{\"enable_x\": true}'");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("no tools"), std::string::npos) << r.out;
  r = sh(base + " --tools " + path("tools.json"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("no enable_x"), std::string::npos) << r.out;
  r = sh(base + " --tools " + path("tools.json") + " --chat-template-kwargs '[1]'");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--chat-template-kwargs: not a JSON object"), std::string::npos) << r.out;
  r = sh(base + " --tools " + path("tools.json") + " --chat-template-kwargs '{\"messages\": 1}'");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("'messages' is set by lmforge itself"), std::string::npos) << r.out;
  std::ofstream(path("badtools.json")) << R"({"type": "function"})";
  r = sh(base + " --tools " + path("badtools.json"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("badtools.json: tools must be a JSON array"), std::string::npos) << r.out;
  // The same as one OpenAI-style chat request (tools and chat_template_kwargs inside).
  const nlohmann::json request = {{"model", "x"},
                                  {"messages", nlohmann::json::parse(std::ifstream(path("chat.json")))},
                                  {"tools", nlohmann::json::parse(std::ifstream(path("tools.json")))},
                                  {"chat_template_kwargs", {{"enable_x", true}}}};
  std::ofstream(path("request.json")) << request.dump();
  CliRun q = sh(kBin + " generate" + model + " --chat " + path("request.json") + " --max-tokens 2 --json");
  ASSERT_EQ(q.code, 0) << q.out;
  EXPECT_EQ(last_json(q.out)["prompt_tokens"],
            last_json(sh(base + " --tools " + path("tools.json") + " --chat-template-kwargs '{\"enable_x\": true}'")
                          .out)["prompt_tokens"]);
  EXPECT_EQ(sh(kBin + " generate" + model + " --prompt hi --tools " + path("tools.json")).code, 2);  // needs --chat
  // --prompt through the template: the user message (after --system), tools given by no one.
  std::ofstream(path("m/tokenizer_config.json"))
      << nlohmann::json{{"chat_template",
                         "{% if messages[0].role != 'system' or messages[1].content != 'hi' %}"
                         "{{ raise_exception('expected system + user hi') }}{% endif %}"
                         "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"}}
             .dump();
  const std::string one = kBin + " generate" + model + " --prompt hi --max-tokens 1 --apply-chat-template";
  EXPECT_EQ(sh(one + " --system 'Be brief.'").code, 0);
  r = sh(one);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("expected system + user hi"), std::string::npos) << r.out;
  EXPECT_EQ(sh(one + " --raw").code, 2);                                          // the template carries BOS
  EXPECT_EQ(sh(kBin + " generate" + model + " --prompt hi --system x").code, 2);  // --system needs the template
}

TEST_F(InferCli, GenerateBadInputExitsTwo) {
  std::string longp;
  for (int i = 0; i < 300; ++i) longp += "free ";
  CliRun r = sh(kBin + " generate" + model + " --prompt '" + longp + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("the model's context (max_position_embeddings) is 128"), std::string::npos) << r.out;
  r = sh(kBin + " generate --model " + path("nope") + " --prompt hi");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("not a model directory"), std::string::npos) << r.out;
  r = sh(kBin + " generate" + model + " --prompt hi --top-p 0");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("top_p"), std::string::npos) << r.out;
  EXPECT_EQ(sh(kBin + " generate" + model + " --prompt hi --bogus").code, 2);
  r = sh(kBin + " generate" + model + " --prompt hi --kv-type bf16");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--kv-type"), std::string::npos) << r.out;
  EXPECT_EQ(sh(kBin + " generate" + model).code, 2);  // neither --prompt nor --chat
  sh("rm " + path("m/tokenizer.json"));
  r = sh(kBin + " generate" + model + " --prompt hi");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("no tokenizer.json"), std::string::npos) << r.out;
}

TEST_F(InferCli, EvalPerplexityChoiceAndGenerate) {
  sh("head -c 3000 /usr/share/common-licenses/GPL-3 > " + path("t.txt"));
  CliRun r = sh(kBin + " eval perplexity" + model + " --data " + path("t.txt") + " --ctx 32 --stride 16 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j = last_json(r.out);
  EXPECT_GT(j["tokens"].get<int64_t>(), 100);
  EXPECT_NEAR(j["ppl"].get<double>(), std::exp(j["nll"].get<double>()), 1e-6 * j["ppl"].get<double>());
  // A random model is near-uniform over 320 tokens: perplexity within a factor of two of that.
  EXPECT_GT(j["ppl"].get<double>(), 160);
  EXPECT_LT(j["ppl"].get<double>(), 640);

  std::ofstream(path("ch.jsonl")) << R"({"context":"The GNU General Public","choices":[" License"," Banana"],)"
                                  << R"("label":0})"
                                  << "\n"
                                  << R"({"context":"Free","choices":[" software"," xq", " x"],"label":2})"
                                  << "\n"
                                  << R"({"query":"Free","choices":["software","xq"],"gold":"1"})"
                                  << "\n";
  r = sh(kBin + " eval choice" + model + " --tasks " + path("ch.jsonl") + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  j = last_json(r.out);
  EXPECT_EQ(j["items"], 3);
  EXPECT_EQ(j["truncated"], 0);
  for (const char* k : {"acc", "acc_norm"}) {
    const double v = j[k].get<double>() * 3;
    EXPECT_NEAR(v, std::round(v), 1e-9) << k << " " << v;
  }

  std::ofstream(path("g.jsonl")) << R"({"prompt":"The GNU","reference":"General Public License"})"
                                 << "\n"
                                 << R"({"prompt":"The GNU","references":["General Public License","GPL"]})"
                                 << "\n";
  r = sh(kBin + " eval generate" + model + " --data " + path("g.jsonl") + " --max-tokens 8 --kv-type f16 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  j = last_json(r.out);
  EXPECT_EQ(j["items"], 2);
  EXPECT_TRUE(j.contains("bleu") && j.contains("rouge_l") && j["outputs"].size() == 2);
  // Through the chat template (no template here: the built-in ChatML, said on stderr); a system instruction needs it.
  const std::string gen = kBin + " eval generate" + model + " --data " + path("g.jsonl") + " --max-tokens 4 --json";
  r = sh(gen + " --apply-chat-template --system-instruction 'Be brief.'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("no chat_template; using the built-in ChatML format"), std::string::npos) << r.out;
  EXPECT_EQ(last_json(r.out)["chat_template"], true);
  EXPECT_EQ(sh(gen + " --system-instruction 'Be brief.'").code, 2);
  // The model's template, which here refuses a conversation without a system message.
  std::ofstream(path("m/tokenizer_config.json"))
      << R"({"chat_template": "{% if messages[0].role != 'system' %}{{ raise_exception('need a system message') }})"
      << R"({% endif %}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"})";
  r = sh(gen + " --apply-chat-template");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("need a system message"), std::string::npos) << r.out;
  r = sh(gen + " --apply-chat-template --system-instruction 'Be brief.'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find("built-in"), std::string::npos) << r.out;
  EXPECT_EQ(sh(gen).code, 0);  // without the flag the template is not used
  // eval choice through the same template (lm-evaluation-harness's --apply_chat_template / --system_instruction).
  const std::string choice = kBin + " eval choice" + model + " --tasks " + path("ch.jsonl") + " --json";
  r = sh(choice + " --apply-chat-template");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("need a system message"), std::string::npos) << r.out;
  r = sh(choice + " --apply-chat-template --system-instruction 'Pick one.'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(last_json(r.out)["chat_template"], true);
  EXPECT_EQ(last_json(r.out)["items"], 3);
  EXPECT_EQ(sh(choice + " --system-instruction x").code, 2);  // needs --apply-chat-template
  sh("rm " + path("m/tokenizer_config.json"));

  std::ofstream(path("bad.jsonl")) << R"({"context":"a","choices":["b","c"],"label":5})"
                                   << "\n";
  r = sh(kBin + " eval choice" + model + " --tasks " + path("bad.jsonl"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("bad.jsonl:1: label 5 is not an index into 'choices'"), std::string::npos) << r.out;
  r = sh(kBin + " eval perplexity" + model + " --data " + path("t.txt") + " --ctx 200");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("exceeds the model's context"), std::string::npos) << r.out;
  EXPECT_EQ(sh(kBin + " eval perplexity" + model + " --data " + path("missing.txt")).code, 2);
  EXPECT_EQ(sh(kBin + " eval").code, 2);
}

TEST_F(InferCli, BenchGenerateReportsRatesAndCeilings) {
  CliRun r = sh(kBin + " bench generate" + model + " --prompt-tokens 16 --gen-tokens 8 --copy-mib 8 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = last_json(r.out);
  for (const char* k : {"prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_mb", "weight_bytes", "copy_gb_s",
                        "decode_ceiling_tokens_per_s", "read_gb_s", "decode_fraction_of_read_ceiling", "sgemm_gflops",
                        "prefill_fraction_of_sgemm"})
    EXPECT_GT(j[k].get<double>(), 0) << k;
  // Weights read per token: every matrix of the config (f32) plus one embedding row.
  const double per_layer = 4.0 * (32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 64 * 32);
  EXPECT_DOUBLE_EQ(j["weight_bytes"].get<double>(), 2 * per_layer + 4.0 * (320 * 32 + 32));
  EXPECT_EQ(j["kv_type"], "f16");
  // An f32 model is compared with ggml's f32 row: both comparisons are the same one.
  EXPECT_EQ(j["weight_format"], "f32");
  EXPECT_TRUE(j["cpu_kernels"] == "avx512_vnni" || j["cpu_kernels"] == "avx2" || j["cpu_kernels"] == "generic")
      << j["cpu_kernels"];
  EXPECT_DOUBLE_EQ(j["ggml_implied_tokens_per_s"].get<double>(), j["ggml_f32_implied_tokens_per_s"].get<double>());
  EXPECT_DOUBLE_EQ(j["ggml_implied_tokens_per_s"].get<double>(), 26.5e9 / j["weight_bytes"].get<double>());
  r = sh(kBin + " bench generate" + model + " --prompt-tokens 16 --gen-tokens 8 --copy-mib 8 --kv-type f32 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(last_json(r.out)["kv_type"], "f32");
  r = sh(kBin + " bench generate" + model + " --prompt-tokens 120 --gen-tokens 9");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("exceed the model's context"), std::string::npos) << r.out;
  // --batch: sequences decoded together; tokens counted over the batch, ceilings per step (weights read once).
  r = sh(kBin + " bench generate" + model + " --prompt-tokens 16 --gen-tokens 8 --copy-mib 8 --batch 3 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json b = last_json(r.out);
  EXPECT_EQ(b["batch"], 3);
  EXPECT_DOUBLE_EQ(b["decode_tokens_per_s"].get<double>(), 3 * b["decode_steps_per_s"].get<double>());
  EXPECT_DOUBLE_EQ(b["decode_fraction_of_ceiling"].get<double>(),
                   b["decode_steps_per_s"].get<double>() / b["decode_ceiling_tokens_per_s"].get<double>());
  EXPECT_EQ(
      last_json(
          sh(kBin + " bench generate" + model + " --prompt-tokens 16 --gen-tokens 8 --copy-mib 8 --json").out)["batch"],
      1);
  r = sh(kBin + " bench generate" + model + " --batch 0");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--batch"), std::string::npos) << r.out;
}

// --ggml: ggml's own kernels timed here beside ours, from node-llama-cpp's prebuilt library (installed for the
// llama.cpp interop test). Bad directories are usage errors naming the flag; with the library, every row computes the
// same product as ours (ggml_rel_diff) and carries the measured comparison.
TEST_F(InferCli, BenchAgainstGgmlMeasuredHere) {
  for (const std::string& cmd : {std::string(" bench quant --repeats 1"), " bench generate --gen-tokens 1" + model}) {
    CliRun r = sh(kBin + cmd + " --ggml " + path("nowhere"));
    EXPECT_EQ(r.code, 2) << cmd << r.out;
    EXPECT_NE(r.out.find("--ggml: " + path("nowhere") + " is not a directory"), std::string::npos) << r.out;
    r = sh(kBin + cmd + " --ggml " + path("m"));
    EXPECT_EQ(r.code, 2) << cmd << r.out;
    EXPECT_NE(r.out.find("holds no libggml-base.so"), std::string::npos) << r.out;
    // A file of that name that is no shared library: dlopen's refusal, named.
    ASSERT_EQ(sh("mkdir -p " + path("junk") + " && head -c 4096 /dev/urandom > " + path("junk/libggml-base.so")).code,
              0);
    r = sh(kBin + cmd + " --ggml " + path("junk"));
    EXPECT_EQ(r.code, 2) << cmd << r.out;
    EXPECT_NE(r.out.find("--ggml: cannot load " + path("junk/libggml-base.so")), std::string::npos) << r.out;
  }
  const std::string dir = std::string(LMFORGE_SOURCE_DIR) +
                          "/tests/reference/llamacpp/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sanitizer build: the prebuilt ggml is not instrumented, and its timings mean nothing here";
#endif
  if (!std::filesystem::exists(dir + "/libggml-base.so"))
    GTEST_SKIP() << "no prebuilt ggml in " << dir << " (LMFORGE_WITH_NODE=1 scripts/install-deps.sh)";
  CliRun r = sh(kBin + " bench quant --ggml " + dir +
                " --formats f32,f16,q8_0,q4_0,int8 --rows 256 --cols 512 --prefill 16 --repeats 2 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  int rows = 0, measured = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    ++rows;
    if (j["format"] == "int8") {  // ggml has no such format: no measured fields
      EXPECT_FALSE(j.contains("ggml_measured_ms")) << line;
      continue;
    }
    ++measured;
    EXPECT_GT(j["ggml_measured_ms"].get<double>(), 0) << line;
    EXPECT_GT(j["vs_ggml_measured"].get<double>(), 0) << line;
    EXPECT_LT(j["ggml_rel_diff"].get<double>(), 0.05) << line;
    EXPECT_EQ(j["ggml_variant"].get<std::string>().rfind("libggml-cpu", 0), 0u) << line;
  }
  EXPECT_EQ(rows, 10);
  EXPECT_EQ(measured, 8);
  r = sh(kBin + " bench generate" + model + " --prompt-tokens 16 --gen-tokens 8 --copy-mib 8 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const double rss_alone = last_json(r.out)["peak_rss_mb"].get<double>();
  r = sh(kBin + " bench generate" + model + " --prompt-tokens 16 --gen-tokens 8 --copy-mib 8 --json --ggml " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = last_json(r.out);
  // peak_rss_mb is the engine's: taken before ggml's 235 MB of f32 weights exist (ggml's code adds a few MB).
  EXPECT_LT(j["peak_rss_mb"].get<double>(), rss_alone + 64) << rss_alone;
  EXPECT_GT(j["ggml_measured_weight_gb_s"].get<double>(), 0);
  EXPECT_DOUBLE_EQ(j["ggml_measured_implied_tokens_per_s"].get<double>(),
                   j["ggml_measured_weight_gb_s"].get<double>() * 1e9 / j["weight_bytes"].get<double>());
  EXPECT_DOUBLE_EQ(j["decode_vs_ggml_measured"].get<double>(),
                   j["decode_tokens_per_s"].get<double>() / j["ggml_measured_implied_tokens_per_s"].get<double>());
}

// A model dir whose file carries a tensor its config does not use (config and tensors disagree): exit 2 with one
// line naming the file and the tensor, for every command that loads the engine.
TEST_F(InferCli, TensorTheConfigDoesNotUseExitsTwo) {
  const std::string dir = path("extra");
  ASSERT_EQ(sh("mkdir -p " + dir + " && cp " + path("m") + "/config.json " + dir + "/").code, 0);
  auto t = io::load_safetensors(path("m") + "/model.safetensors");
  io::NamedTensors named(t.begin(), t.end());
  named.emplace_back("model.layers.0.self_attn.q_norm.weight", Tensor::zeros({16}));
  io::save_safetensors(dir + "/model.safetensors", named);
  std::ofstream(path("ids.txt")) << "1 2 3\n";
  const std::vector<std::string> cmds = {
      " bench generate --prompt-tokens 4 --gen-tokens 1 --model ",
      " forward --ids-file " + path("ids.txt") + " --out " + path("o.safetensors") + " --model "};
  for (const std::string& cmd : cmds) {
    const CliRun r = sh(kBin + cmd + dir);
    EXPECT_EQ(r.code, 2) << cmd << r.out;
    EXPECT_NE(r.out.find("unexpected tensor 'model.layers.0.self_attn.q_norm.weight'"), std::string::npos)
        << cmd << r.out;
  }
}

}  // namespace
