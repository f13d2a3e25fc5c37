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

std::vector<ChatMessage> user_turn(const std::string& user, const std::string& system) {
  std::vector<ChatMessage> msgs;
  if (!system.empty()) msgs.push_back({"system", system, nullptr});
  msgs.push_back({"user", user, nullptr});
  return msgs;
}

ChatMessage chat_message_from_json(const nlohmann::ordered_json& m, const std::string& where) {
  LMF_CHECK(m.is_object(), where, ": a message must be a JSON object");
  LMF_CHECK(m.contains("role") && m["role"].is_string() && !m["role"].get_ref<const std::string&>().empty(), where,
            ": needs a string field 'role'");
  ChatMessage msg;
  msg.role = m["role"].get<std::string>();
  msg.fields = m;
  const auto it = m.find("content");
  LMF_CHECK(it != m.end() || m.contains("tool_calls"), where, ": needs a field 'content' (or 'tool_calls')");
  if (it == m.end() || it->is_null()) return msg;
  if (it->is_string()) {
    msg.content = it->get<std::string>();
    return msg;
  }
  LMF_CHECK(it->is_array(), where, ": 'content' must be a string, null or an array of parts");
  for (const auto& part : *it) {
    LMF_CHECK(part.is_object() && part.contains("type") && part["type"].is_string(), where,
              ": each part of 'content' must be an object with a string 'type'");
    if (part["type"] != "text") continue;
    LMF_CHECK(part.contains("text") && part["text"].is_string(), where, ": a text part needs a string 'text'");
    msg.content += part["text"].get<std::string>();
  }
  return msg;
}

ChatPrompt render_chat(const std::vector<ChatMessage>& messages, const std::string& chat_template,
                       const std::string& bos, const std::string& eos, const ChatOptions& opt) {
  LMF_CHECK(opt.kwargs.is_object(), "chat_template_kwargs must be a JSON object");
  for (const char* fixed : {"messages", "tools", "documents", "add_generation_prompt", "bos_token", "eos_token"})
    LMF_CHECK(!opt.kwargs.contains(fixed), "chat_template_kwargs: '", fixed, "' is set by lmforge itself");
  LMF_CHECK(opt.tools.is_null() || opt.tools.is_array(), "chat tools must be a JSON array");
  ChatPrompt p;
  std::string why;
  if (!chat_template.empty()) {
    nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
    for (const ChatMessage& m : messages)
      msgs.push_back(m.fields.is_object() ? m.fields
                                          : nlohmann::ordered_json{{"role", m.role}, {"content", m.content}});
    // As transformers' apply_chat_template: documents None (defined), tools None unless given.
    nlohmann::ordered_json ctx = {{"messages", msgs},     {"tools", opt.tools},
                                  {"documents", nullptr}, {"add_generation_prompt", true},
                                  {"bos_token", bos},     {"eos_token", eos}};
    for (const auto& [k, v] : opt.kwargs.items()) ctx[k] = v;
    try {
      p.text = jinja::render(chat_template, ctx);
      p.family = "jinja";
      if (!opt.tools.is_null() && !opt.tools.empty() && !has(chat_template, "tools"))
        p.note = "the chat_template does not read `tools`: the tools are not in the prompt";
      return p;
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.find("chat_template: raise_exception: ") != std::string::npos) throw;  // the template refuses them
      why = what;
    }
  }
  // The built-in formats: system / user / assistant turns of text.
  LMF_CHECK(opt.tools.is_null() || opt.tools.empty(), "chat: tools need the model's chat_template (",
            chat_template.empty() ? std::string("the model has none") : why, ")");
  for (const ChatMessage& m : messages) {
    LMF_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant", "chat: role '", m.role,
              "' needs the model's chat_template (the built-in formats take system, user and assistant)",
              why.empty() ? std::string() : "; the template could not be evaluated: " + why);
    LMF_CHECK(!m.fields.is_object() || !m.fields.contains("tool_calls"),
              "chat: tool_calls need the model's chat_template",
              why.empty() ? std::string() : "; the template could not be evaluated: " + why);
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
