// Chat prompts: the template evaluated (jinja.h), else the built-in format of its family (chat_template.h).
#include "lmforge/tokenizer/chat_template.h"

#include "lmforge/core/error.h"
#include "lmforge/tokenizer/jinja.h"

namespace lmforge::tokenizer {

namespace {

bool has(const std::string& s, const char* needle) {
  return s.find(needle) != std::string::npos;
}

std::string llama3(const std::vector<ChatMessage>& msgs) {
  std::string t = "<|begin_of_text|>";
  for (const ChatMessage& m : msgs)
    t += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
  return t + "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

std::string deepseek(const std::vector<ChatMessage>& msgs, const std::string& bos) {
  // The template puts every system prompt first, then the turns.
  std::string sys, turns;
  for (const ChatMessage& m : msgs) {
    if (m.role == "system") {
      sys += (sys.empty() ? "" : "\n\n") + m.content;
    } else if (m.role == "user") {
      turns +=
          "<\xEF\xBD\x9C"
          "User\xEF\xBD\x9C>" +
          m.content;
    } else {
      turns +=
          "<\xEF\xBD\x9C"
          "Assistant\xEF\xBD\x9C>" +
          m.content +
          "<\xEF\xBD\x9C"
          "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
    }
  }
  return bos + sys + turns +
         "<\xEF\xBD\x9C"
         "Assistant\xEF\xBD\x9C>";
}

std::string chatml(const std::vector<ChatMessage>& msgs) {
  std::string t;
  for (const ChatMessage& m : msgs) t += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  return t + "<|im_start|>assistant\n";
}

}  // namespace

ChatPrompt render_chat(const std::vector<ChatMessage>& messages, const std::string& chat_template,
                       const std::string& bos, const std::string& eos) {
  for (const ChatMessage& m : messages)
    LMF_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant", "chat: role '", m.role,
              "' is not system, user or assistant");
  ChatPrompt p;
  std::string why;
  if (!chat_template.empty()) {
    nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
    for (const ChatMessage& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
    // As transformers' apply_chat_template without tools or documents: both passed as None (defined).
    const nlohmann::ordered_json ctx = {{"messages", msgs},     {"tools", nullptr},
                                        {"documents", nullptr}, {"add_generation_prompt", true},
                                        {"bos_token", bos},     {"eos_token", eos}};
    try {
      p.text = jinja::render(chat_template, ctx);
      p.family = "jinja";
      return p;
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.find("chat_template: raise_exception: ") != std::string::npos) throw;  // the template refuses them
      why = what;
    }
  }
  if (has(chat_template, "<|start_header_id|>")) {
    p.family = "llama3";
    p.text = llama3(messages);
    p.note = "the chat_template could not be evaluated (" + why + "); using the built-in llama3 format";
  } else if (has(chat_template,
                 "\xEF\xBD\x9C"
                 "User\xEF\xBD\x9C")) {
    p.family = "deepseek";
    p.text = deepseek(messages, bos);
    p.note = "the chat_template could not be evaluated (" + why + "); using the built-in deepseek format";
  } else {
    p.family = "chatml";
    p.text = chatml(messages);
    if (chat_template.empty())
      p.note = "the model has no chat_template; using the built-in ChatML format";
    else
      p.note = "the chat_template could not be evaluated (" + why + "); using the built-in ChatML format";
  }
  return p;
}

}  // namespace lmforge::tokenizer
