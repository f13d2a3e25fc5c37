// Chat prompts from a list of messages.
//
// tokenizer_config.json's `chat_template` is a Jinja program: render_chat evaluates it (jinja.h: the subset real
// templates use, rendered as transformers' apply_chat_template does, with messages, tools = documents = None,
// add_generation_prompt = true, bos_token and eos_token), family "jinja". Where the template uses something the
// interpreter lacks, it falls back to recognising the template's family by the marker tokens it writes and
// rendering that family's format itself:
//   llama3    <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|> ... then the
//             assistant header (Llama-3 / 3.1 templates, without their tool-calling branches)
//   deepseek  {bos}{system}<｜User｜>{user}<｜Assistant｜>{assistant}<｜end▁of▁sentence｜> ... <｜Assistant｜>
//             (DeepSeek-V3's template without tool calls)
//   chatml    <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n (Qwen2, and the fallback)
// A template of none of these families (or no template) is rendered as ChatML and `note` says so, so the caller can
// tell the user the model's own format was not used.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lmforge::tokenizer {

struct ChatMessage {
  std::string role;  // system | user | assistant (the built-in formats); a template may take others (tool, ...)
  std::string content;
  // The message as given (an OpenAI-style object: tool_calls, name, tool_call_id, content parts, ...), passed to
  // the template as it is; null: {role, content}.
  nlohmann::ordered_json fields;
};

// What else apply_chat_template passes the template: `tools` (a JSON array of function schemas, or null) and extra
// variables (chat_template_kwargs, e.g. {"enable_thinking": false}), which may not replace messages, tools,
// add_generation_prompt, bos_token or eos_token.
struct ChatOptions {
  nlohmann::ordered_json tools;
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
};

struct ChatPrompt {
  std::string text;    // encode without adding special tokens: the format carries them
  std::string family;  // jinja (the template itself) | llama3 | deepseek | chatml
  std::string note;    // non-empty when the format is a fallback, or tools were given to a template without them
};

// `chat_template` may be empty (no template); `bos` / `eos` are the BOS and EOS tokens' text (the template's
// bos_token / eos_token; DeepSeek's built-in format starts with bos). A template that calls raise_exception for these
// messages (roles out of order, say) is an error, not a fallback. The built-in formats take system / user / assistant
// messages with text content only and no tools: anything else is an error naming it when they are used.
ChatPrompt render_chat(const std::vector<ChatMessage>& messages, const std::string& chat_template,
                       const std::string& bos, const std::string& eos = "", const ChatOptions& opt = {});

// A one-turn conversation: `user`, after a system message when `system` is not empty (generate
// --apply-chat-template, eval's --apply-chat-template / --system-instruction).
std::vector<ChatMessage> user_turn(const std::string& user, const std::string& system = "");

// A message from an OpenAI-style JSON object: "role" a string, "content" a string, null (an assistant turn with
// tool_calls) or an array of parts ({"type": "text", "text": ...} joined for `content`; other parts stay in
// `fields` for templates that read them). `where` names the message in errors.
ChatMessage chat_message_from_json(const nlohmann::ordered_json& m, const std::string& where);

}  // namespace lmforge::tokenizer
