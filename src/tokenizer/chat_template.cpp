// Chat formats by template family (see chat_template.h for why the Jinja itself is not evaluated).
#include "lmforge/tokenizer/chat_template.h"

#include "lmforge/core/error.h"

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
                       const std::string& bos) {
  for (const ChatMessage& m : messages)
    LMF_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant", "chat: role '", m.role,
              "' is not system, user or assistant");
  ChatPrompt p;
  if (has(chat_template, "<|start_header_id|>")) {
    p.family = "llama3";
    p.text = llama3(messages);
  } else if (has(chat_template,
                 "\xEF\xBD\x9C"
                 "User\xEF\xBD\x9C")) {
    p.family = "deepseek";
    p.text = deepseek(messages, bos);
  } else {
    p.family = "chatml";
    p.text = chatml(messages);
    if (chat_template.empty())
      p.note = "the model has no chat_template; using the built-in ChatML format";
    else if (!has(chat_template, "<|im_start|>"))
      p.note = "chat_template is not a llama3, deepseek or chatml template lmforge recognises; using ChatML";
  }
  return p;
}

}  // namespace lmforge::tokenizer
