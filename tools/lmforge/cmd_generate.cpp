// lmforge generate: text from a prompt or a chat, streamed to stdout.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lmforge/commands.h"
#include "lmforge/core/error.h"
#include "lmforge/eval/model_dir.h"
#include "lmforge/tokenizer/chat_template.h"

namespace lmforge::cli {

namespace {

struct GenArgs {
  std::string model, prompt, chat, tools, template_kwargs, kv_type = "f16";
  model::SamplingParams p;
  std::vector<std::string> logit_bias;  // ID=BIAS
  bool raw = false;
  bool apply_template = false;  // --prompt through the chat template
  std::string system;           // with it: a system message first
};

using OJson = nlohmann::ordered_json;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LMF_CHECK(in.good(), path, ": cannot read");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

OJson parse_tools(const OJson& tools, const std::string& where) {
  LMF_CHECK(tools.is_array(), where, ": tools must be a JSON array ({\"type\": \"function\", \"function\": {...}})");
  for (const OJson& t : tools) LMF_CHECK(t.is_object(), where, ": each tool must be a JSON object");
  return tools;
}

// The chat file: one message per line (JSONL), one JSON array of messages, or an OpenAI chat request
// {"messages": [...], "tools": [...], "chat_template_kwargs": {...}} (other fields ignored). --tools replaces the
// request's tools; --chat-template-kwargs' variables go over its kwargs.
tokenizer::ChatOptions read_chat(const GenArgs& a, std::vector<tokenizer::ChatMessage>& msgs) {
  const std::string& path = a.chat;
  const std::string text = read_all(path);
  tokenizer::ChatOptions o;
  const OJson whole = OJson::parse(text, nullptr, false);
  const OJson* list = nullptr;
  if (!whole.is_discarded() && whole.is_array()) {
    list = &whole;
  } else if (!whole.is_discarded() && whole.is_object() && whole.contains("messages")) {
    LMF_CHECK(whole["messages"].is_array(), path, ": 'messages' must be an array");
    list = &whole["messages"];
    if (whole.contains("tools") && !whole["tools"].is_null()) o.tools = parse_tools(whole["tools"], path);
    if (whole.contains("chat_template_kwargs")) {
      LMF_CHECK(whole["chat_template_kwargs"].is_object(), path, ": 'chat_template_kwargs' must be an object");
      o.kwargs = whole["chat_template_kwargs"];
    }
  }
  if (list) {
    for (size_t k = 0; k < list->size(); ++k)
      msgs.push_back(tokenizer::chat_message_from_json((*list)[k], path + ": message " + std::to_string(k + 1)));
  } else {
    std::istringstream in(text);
    std::string line;
    for (int64_t n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const OJson j = OJson::parse(line, nullptr, false);
      LMF_CHECK(!j.is_discarded() && j.is_object(), path, ":", n, ": not a JSON object");
      msgs.push_back(tokenizer::chat_message_from_json(j, path + ":" + std::to_string(n)));
    }
  }
  LMF_CHECK(!msgs.empty(), path, ": no messages");
  if (!a.tools.empty()) {
    const OJson tools = OJson::parse(read_all(a.tools), nullptr, false);
    LMF_CHECK(!tools.is_discarded(), a.tools, ": --tools is not JSON");
    o.tools = parse_tools(tools, a.tools);
  }
  if (!a.template_kwargs.empty()) {
    const OJson kw = OJson::parse(a.template_kwargs, nullptr, false);
    LMF_CHECK(!kw.is_discarded() && kw.is_object(), "--chat-template-kwargs: not a JSON object: ", a.template_kwargs);
    for (const auto& [k, v] : kw.items()) o.kwargs[k] = v;
  }
  return o;
}

int run_generate(const GenArgs& a, const CLI::App& cmd, bool json) {
  model::EngineOptions eo;
  eo.kv_dtype = kv_dtype(a.kv_type);
  eval::ModelDir m = eval::open_model_dir(a.model, true, eo);
  // generation_config.json first, then the flags the user gave.
  model::SamplingParams p = eval::generation_defaults(m);
  p.max_tokens = cmd.count("--max-tokens") ? a.p.max_tokens
                                           : (m.generation_config.contains("max_new_tokens") ? p.max_tokens : 256);
  if (cmd.count("--temperature")) p.temperature = a.p.temperature;
  if (cmd.count("--top-p")) p.top_p = a.p.top_p;
  if (cmd.count("--top-k")) p.top_k = a.p.top_k;
  if (cmd.count("--min-p")) p.min_p = a.p.min_p;
  if (cmd.count("--repetition-penalty")) p.repetition_penalty = a.p.repetition_penalty;
  p.presence_penalty = a.p.presence_penalty;
  p.frequency_penalty = a.p.frequency_penalty;
  p.seed = a.p.seed;
  p.stop = a.p.stop;
  p.ignore_eos = a.p.ignore_eos;
  p.stop_ids.insert(p.stop_ids.end(), a.p.stop_ids.begin(), a.p.stop_ids.end());
  for (const std::string& b : a.logit_bias) {
    const size_t eq = b.find('=');
    LMF_CHECK(eq != std::string::npos, "--logit-bias: expected ID=BIAS, got '", b, "'");
    try {
      p.logit_bias[std::stoi(b.substr(0, eq))] = std::stof(b.substr(eq + 1));
    } catch (const std::exception&) {
      LMF_CHECK(false, "--logit-bias: expected ID=BIAS, got '", b, "'");
    }
  }
  model::validate(p);
  std::vector<int32_t> ids;
  if (!a.chat.empty() || a.apply_template) {
    std::vector<tokenizer::ChatMessage> msgs;
    tokenizer::ChatOptions opt;
    if (!a.chat.empty()) {
      opt = read_chat(a, msgs);
    } else {  // --prompt as the user message (after a system message with --system)
      msgs = tokenizer::user_turn(a.prompt, a.system);
    }
    const tokenizer::ChatPrompt cp = tokenizer::render_chat(msgs, m.chat_template, m.bos_token, m.eos_token, opt);
    if (!cp.note.empty()) std::fprintf(stderr, "lmforge generate: %s\n", cp.note.c_str());
    ids = m.encode(cp.text, false);
  } else {
    ids = m.encode(a.prompt, !a.raw);
  }
  const int64_t ctx = m.engine.config().max_position_embeddings;
  if (static_cast<int64_t>(ids.size()) >= ctx) {
    std::fprintf(stderr,
                 "lmforge generate: the prompt has %zu tokens; the model's context (max_position_embeddings) "
                 "is %lld\n",
                 ids.size(), static_cast<long long>(ctx));
    return kUsageError;
  }
  LMF_CHECK(!ids.empty(), "lmforge generate: the prompt encodes to no tokens");
  // The context bounds the completion (finish_reason "length" there); say so when it cuts --max-tokens short.
  const int64_t room = ctx - static_cast<int64_t>(ids.size()) + 1;
  if (p.max_tokens > room)
    std::fprintf(stderr,
                 "lmforge generate: at most %lld tokens fit after the prompt's %zu in the model's context of %lld "
                 "(--max-tokens %lld)\n",
                 static_cast<long long>(room), ids.size(), static_cast<long long>(ctx),
                 static_cast<long long>(p.max_tokens));
  auto on_text = [json](std::string_view s) {
    if (json) return;
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  const model::GenerateResult r = model::generate(
      m.engine, ids, p, [&m](int32_t t) { return m.token_bytes(t); }, on_text);
  if (json) {
    const nlohmann::json j = {{"text", r.text},
                              {"finish_reason", r.finish_reason},
                              {"prompt_tokens", r.prompt_tokens},
                              {"completion_tokens", r.tokens.size()},
                              {"tokens", r.tokens}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
  }
  return kOk;
}

}  // namespace

void add_kv_type_option(CLI::App* cmd, std::string& value) {
  cmd->add_option("--kv-type", value,
                  "KV cache element type: f16 (half the cache memory and attention traffic, llama.cpp's default) or "
                  "f32")
      ->check(CLI::IsMember({"f16", "f32"}))
      ->capture_default_str();
}

DType kv_dtype(const std::string& value) {
  return value == "f16" ? DType::F16 : DType::F32;
}

void add_generate_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<GenArgs>();
  CLI::App* g = app.add_subcommand("generate", "generate text from a prompt or a chat (streamed to stdout)");
  g->add_option("--model", a->model, "model directory (config.json, model.safetensors, tokenizer.json)")->required();
  auto* prompt = g->add_option("--prompt", a->prompt, "prompt text");
  auto* chat = g->add_option("--chat", a->chat,
                             "chat messages ({\"role\", \"content\"} objects, OpenAI style: one per line, one JSON "
                             "array, or a chat request {\"messages\", \"tools\", \"chat_template_kwargs\"}), "
                             "rendered with the model's chat template")
                   ->check(CLI::ExistingFile);
  prompt->excludes(chat);
  g->add_option("--tools", a->tools,
                "with --chat: JSON array of tools (OpenAI function schemas) passed to the chat template as `tools`")
      ->check(CLI::ExistingFile)
      ->needs(chat);
  g->add_option("--chat-template-kwargs", a->template_kwargs,
                "with --chat: JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'")
      ->needs(chat);
  g->add_option("--max-tokens", a->p.max_tokens,
                "tokens to generate at most (default: generation_config's "
                "max_new_tokens, else 256)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  g->add_option("--temperature", a->p.temperature, "0: greedy (default: generation_config, else 1)");
  g->add_option("--top-p", a->p.top_p, "nucleus sampling mass in (0, 1]");
  g->add_option("--top-k", a->p.top_k, "keep the k most likely tokens (0: off)");
  g->add_option("--min-p", a->p.min_p, "drop tokens below min_p x the top probability");
  g->add_option("--repetition-penalty", a->p.repetition_penalty, "HF/vLLM repetition penalty over prompt and output");
  g->add_option("--presence-penalty", a->p.presence_penalty, "OpenAI presence penalty (output tokens)");
  g->add_option("--frequency-penalty", a->p.frequency_penalty, "OpenAI frequency penalty (output tokens)");
  g->add_option("--logit-bias", a->logit_bias, "ID=BIAS added to a token's logit (repeatable)");
  g->add_option("--seed", a->p.seed, "sampling seed (same seed, same output)")->capture_default_str();
  g->add_option("--stop", a->p.stop, "stop string (repeatable); the text ends before it");
  g->add_option("--stop-id", a->p.stop_ids, "stop token id (repeatable)");
  g->add_flag("--ignore-eos", a->p.ignore_eos, "do not stop at the model's EOS ids");
  add_kv_type_option(g, a->kv_type);
  auto* raw = g->add_flag("--raw", a->raw, "encode --prompt without the tokenizer's special tokens (BOS)");
  auto* apply = g->add_flag("--apply-chat-template", a->apply_template,
                            "send --prompt as a user message through the model's chat template (generation prompt "
                            "added), as --chat does")
                    ->needs(prompt)
                    ->excludes(raw);
  g->add_option("--system", a->system, "with --apply-chat-template: a system message before the prompt")->needs(apply);
  g->add_flag("--json", ctx.json,
              "print one JSON object (text, finish_reason, token counts, ids) instead of streaming");
  g->callback([&ctx, a, g, prompt, chat] {
    if (!prompt->count() && !chat->count()) {
      std::fprintf(stderr, "lmforge generate: give --prompt TEXT or --chat FILE.jsonl\n");
      ctx.exit_code = kUsageError;
      return;
    }
    ctx.exit_code = run_generate(*a, *g, ctx.json);
  });
}

}  // namespace lmforge::cli
