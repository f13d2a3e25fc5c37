// Chat prompts from a list of messages.
//
// tokenizer_config.json's `chat_template` is a Jinja program; lmforge does not evaluate Jinja. It recognises the
// template's family by the marker tokens it writes and renders that family's format itself:
//   llama3    <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|> ... then the
//             assistant header (Llama-3 / 3.1 templates, without their tool-calling branches)
//   deepseek  {bos}{system}<｜User｜>{user}<｜Assistant｜>{assistant}<｜end▁of▁sentence｜> ... <｜Assistant｜>
//             (DeepSeek-V3's template without tool calls)
//   chatml    <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n (Qwen2, and the fallback)
// A template of none of these families (or no template) is rendered as ChatML and `note` says so, so the caller can
// tell the user the model's own format was not used.
#pragma once
#include <string>
#include <vector>

namespace lmforge::tokenizer {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

struct ChatPrompt {
  std::string text;    // encode without adding special tokens: the format carries them
  std::string family;  // llama3 | deepseek | chatml
  std::string note;    // non-empty when the format is a fallback
};

// `chat_template` may be empty (no template); `bos` is the BOS token's text (DeepSeek's format starts with it).
ChatPrompt render_chat(const std::vector<ChatMessage>& messages, const std::string& chat_template,
                       const std::string& bos);

}  // namespace lmforge::tokenizer
