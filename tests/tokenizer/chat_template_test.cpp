// Chat templates: the Jinja interpreter against @huggingface/jinja's renders of real models' templates (Llama-3,
// Qwen2.5, Qwen3, DeepSeek-V3; fixtures/chat_templates.json, tests/reference/chat/gen_chat_templates.js), the
// language features one by one against the renders of Python's jinja2 3.1 with transformers' settings
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its tojson; run once, not in CI, which
// also rendered the fixtures' templates identically), and render_chat's fallback to the built-in formats.
#include "lmforge/tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "lmforge/core/error.h"
#include "lmforge/tokenizer/jinja.h"

namespace lmforge::tokenizer {
namespace {

using Json = nlohmann::ordered_json;

std::string render(const std::string& src, const Json& ctx = Json::object()) {
  return jinja::render(src, ctx);
}

TEST(ChatTemplate, RealTemplatesRenderAsTransformersJs) {
  std::ifstream in(LMFORGE_SOURCE_DIR "/tests/tokenizer/fixtures/chat_templates.json");
  ASSERT_TRUE(in.good());
  const Json all = Json::parse(in);
  ASSERT_EQ(all.size(), 4u);
  for (const Json& t : all) {
    for (const Json& c : t["cases"]) {
      SCOPED_TRACE(t["name"].get<std::string>() + " " + c["messages"].dump());
      const Json ctx = {{"messages", c["messages"]},
                        {"tools", nullptr},
                        {"add_generation_prompt", c["add_generation_prompt"]},
                        {"bos_token", t["bos_token"]},
                        {"eos_token", t["eos_token"]}};
      EXPECT_EQ(render(t["template"].get<std::string>(), ctx), c["expected"].get<std::string>());
    }
    // Through render_chat (generation prompt on): the template's own text, family "jinja".
    const Json& c = t["cases"][2];
    ASSERT_TRUE(c["add_generation_prompt"].get<bool>());
    std::vector<ChatMessage> msgs;
    for (const Json& m : c["messages"]) msgs.push_back({m["role"], m["content"]});
    const ChatPrompt p = render_chat(msgs, t["template"], t["bos_token"], t["eos_token"]);
    EXPECT_EQ(p.family, "jinja");
    EXPECT_EQ(p.text, c["expected"].get<std::string>());
    EXPECT_EQ(p.note, "");
  }
}

TEST(ChatTemplate, WhitespaceControl) {
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before one goes; {{ }} keep both.
  EXPECT_EQ(render("{% if true %}\n  a\n{% endif %}\nb"), "  a\nb");
  EXPECT_EQ(render("  {% if true %}x{% endif %}  {{ 'y' }}\n"), "x  y");  // one trailing newline dropped
  EXPECT_EQ(render("{{ 'y' }}\n\n"), "y\n");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif %}"), "ab");
  EXPECT_EQ(render("a {{- 'b' -}} c"), "abc");
  EXPECT_EQ(render("x{# note #}\ny"), "xy");
  EXPECT_EQ(render("x {#- note -#} y"), "xy");
  EXPECT_EQ(render("{% for i in [1, 2] %}\n{{ i }}\n{% endfor %}"), "1\n2\n");
}

TEST(ChatTemplate, ExpressionsAndFilters) {
  const Json ctx = {{"m", {{"role", "user"}, {"content", "  Hi there \n"}}}, {"xs", {3, 1, 2}}, {"n", nullptr}};
  EXPECT_EQ(render("{{ m.role }}|{{ m['content'] | trim }}|{{ m.missing }}|{{ n }}", ctx), "user|Hi there||None");
  EXPECT_EQ(render("{{ xs | length }} {{ xs[0] }} {{ xs[-1] }} {{ xs[1:] }} {{ xs[::-1] }} {{ 'abc'[1:] }}", ctx),
            "3 3 2 [1, 2] [2, 1, 3] bc");
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ 4 / 2 }}"),
            "3 -4 1 3.5 1024 7 2.0");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }} {{ 'ab' + 'c' }} {{ 'x' * 3 }} {{ [1] + [2] }}"), "a1None abc xxx [1, 2]");
  EXPECT_EQ(render("{{ 1 if false else 2 }}{{ 3 if true }}{{ 4 if false }}"), "23");
  EXPECT_EQ(render("{{ true and 'y' }} {{ false or 'z' }} {{ not 0 }} {{ 'b' in 'abc' }} {{ 2 not in xs }}", ctx),
            "y z True True False");
  EXPECT_EQ(render("{{ m | tojson }}", ctx), R"({"role": "user", "content": "  Hi there \n"})");
  EXPECT_EQ(render("{{ {'b': [1, 2.5, true, none], 'a': '\u00e9'} | tojson(indent=2) }}"),
            "{\n  \"b\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n  \"a\": \"\u00e9\"\n}");
  EXPECT_EQ(
      render("{{ '  a b  '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}"),
      "a b|axx|['a', 'b', '', 'c']|['a', 'b']");
  EXPECT_EQ(render("{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'ab'.upper() }}"),
            "True True AB");
  EXPECT_EQ(render("{{ m.get('role') }} {{ m.get('nope', 'd') }} {{ m.get('nope') }}", ctx), "user d None");
  EXPECT_EQ(render("{% for k, v in m.items() %}{{ k }}={{ v | trim }};{% endfor %}", ctx),
            "role=user;content=Hi there;");
  EXPECT_EQ(
      render("{{ xs | join(', ') }} {{ xs | first }} {{ xs | last }} {{ undefined_thing | default('dflt') }}", ctx),
      "3, 1, 2 3 2 dflt");
  EXPECT_EQ(render("{{ [{'a': 1}, {'b': 2}, {'a': 3}] | selectattr('a', 'defined') | map(attribute='a') | list }}"),
            "[1, 3]");
  EXPECT_EQ(
      render("{{ m.role is string }} {{ n is none }} {{ n is not none }} {{ q is defined }} {{ 4 is even }}", ctx),
      "True True False False True");
}

TEST(ChatTemplate, LoopsScopesAndNamespaces) {
  const Json ctx = {{"xs", {"a", "b", "c"}}};
  EXPECT_EQ(render("{% for x in xs %}{{ loop.index }}{{ x }}{% if loop.first %}^{% endif %}{% if loop.last %}${% endif "
                   "%}{% endfor %}",
                   ctx),
            "1a^2b3c$");
  EXPECT_EQ(render("{% for x in xs if x != 'b' %}{{ loop.index0 }}{{ x }}{{ loop.length }} {% endfor %}", ctx),
            "0a2 1c2 ");
  EXPECT_EQ(render("{% for x in [] %}no{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(
      render("{% for x in xs %}{{ loop.previtem is defined }}{{ loop.nextitem | default('-') }} {% endfor %}", ctx),
      "Falseb Truec True- ");
  EXPECT_EQ(render("{% for x in xs %}{% if x == 'b' %}{% continue %}{% endif %}{% if x == 'c' %}{% break %}{% endif "
                   "%}{{ x }}{% endfor %}",
                   ctx),
            "a");
  // A plain set inside a loop stays in the loop; a namespace carries the value out.
  EXPECT_EQ(
      render("{% set c = 0 %}{% set ns = namespace(c=0) %}{% for x in xs %}{% set c = c + 1 %}{% set ns.c = ns.c + "
             "1 %}{% endfor %}{{ c }} {{ ns.c }}",
             ctx),
      "0 3");
  EXPECT_EQ(render("{% if false %}a{% elif 1 > 2 %}b{% elif 'x' %}c{% else %}d{% endif %}"), "c");
}

TEST(ChatTemplate, MacrosSetBlocksAndSelect) {
  EXPECT_EQ(render("{% macro tag(name, body='x') %}<{{ name }}>{{ body }}</{{ name }}>{% endmacro %}{{ tag('a') }}"
                   "{{ tag('b', 'y') }}{{ tag('c', body='z') }}"),
            "<a>x</a><b>y</b><c>z</c>");
  EXPECT_EQ(render("{% macro rec(n) %}{% if n > 0 %}{{ n }}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(3) }}"),
            "321");
  EXPECT_EQ(render("{% set block %}\n  hello {{ 1 + 1 }}\n{% endset %}[{{ block }}]"), "[  hello 2\n]");
  EXPECT_EQ(render("{{ ['a', 'b', 'c'] | reject('equalto', 'b') | join(', ') }}|{{ [0, 1, 2, 3] | select('odd') | list "
                   "}}|{{ [0, '', 'x'] | select | list }}"),
            "a, c|[1, 3]|['x']");
}

TEST(ChatTemplate, ErrorsNameTheProblem) {
  const auto error_of = [](const std::string& src) {
    try {
      render(src);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("{{ raise_exception('Only user and assistant roles') }}").find("Only user and assistant roles"),
            std::string::npos);
  EXPECT_NE(error_of("{% call f() %}x{% endcall %}").find("{% call %} is not supported"), std::string::npos);
  EXPECT_NE(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("nested more than 64"), std::string::npos);
  EXPECT_NE(error_of("{% if true %}x").find("missing {% endif %}"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' | frobnicate }}").find("filter frobnicate is not supported"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 + }}").find("expected an expression"), std::string::npos);
  EXPECT_NE(error_of("{{ 'abc }}").find("unterminated"), std::string::npos);
  // Untrusted input: bounded nesting, work and sizes.
  EXPECT_NE(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").find("nested"),
            std::string::npos);
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += "{% if true %}";
  EXPECT_NE(error_of(deep).find("nested"), std::string::npos);
  EXPECT_NE(error_of("{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}").find("steps"),
            std::string::npos);
  EXPECT_NE(error_of("{{ range(10000000000) }}").find("range of more than"), std::string::npos);
  EXPECT_NE(error_of("{{ 'x' * 10000000000 }}").find("too large"), std::string::npos);
}

// render_chat: templates it cannot evaluate fall back to the built-in formats, and say so.
TEST(ChatTemplate, FallsBackToTheBuiltInFormats) {
  const std::vector<ChatMessage> msgs = {{"user", "Hi"}};
  ChatPrompt p = render_chat(msgs, "", "", "");
  EXPECT_EQ(p.family, "chatml");
  EXPECT_EQ(p.text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_NE(p.note.find("no chat_template"), std::string::npos);
  p = render_chat(msgs, "{% call m() %}<|start_header_id|>{% endcall %}", "", "");
  EXPECT_EQ(p.family, "llama3");
  EXPECT_NE(p.note.find("{% call %} is not supported"), std::string::npos) << p.note;
  // A template that raises for these messages is the user's error, not a fallback.
  EXPECT_THROW(render_chat(msgs, "{{ raise_exception('no') }}", "", ""), Error);
}

}  // namespace
}  // namespace lmforge::tokenizer
