// Chat templates: the Jinja interpreter against @huggingface/jinja's renders of real models' templates (Llama-3,
// Qwen2.5, Qwen3, DeepSeek-V3; fixtures/chat_templates.json, tests/reference/chat/gen_chat_templates.js) and
// jinja2's of seven more (fixtures/chat_templates_jinja2.json), the
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
    for (const Json& m : c["messages"]) msgs.push_back({m["role"], m["content"], nullptr});
    const ChatPrompt p = render_chat(msgs, t["template"], t["bos_token"], t["eos_token"]);
    EXPECT_EQ(p.family, "jinja");
    EXPECT_EQ(p.text, c["expected"].get<std::string>());
    EXPECT_EQ(p.note, "");
  }
}

TEST(ChatTemplate, MoreRealTemplatesRenderAsJinja2) {
  // fixtures/chat_templates_jinja2.json (tests/reference/chat/gen_chat_templates_jinja2.py): ChatGLM3, Gemma-3,
  // InternLM2, Llama-3.1, Llama-3.2 (tools, dates), Mistral-Nemo (tools) and Qwen1.5 templates rendered by Python's
  // jinja2 3.1.6 with transformers' settings: five conversations (text parts, a tool call and result with one tool),
  // with and without the generation prompt. Where jinja2 raised (a template refusing the roles, or Python refusing
  // str + list), rendering must fail too.
  std::ifstream in(LMFORGE_SOURCE_DIR "/tests/tokenizer/fixtures/chat_templates_jinja2.json");
  ASSERT_TRUE(in.good());
  const Json all = Json::parse(in);
  ASSERT_EQ(all.size(), 7u);
  int rendered = 0, refused = 0;
  for (const Json& t : all) {
    for (const Json& c : t["cases"]) {
      SCOPED_TRACE(t["name"].get<std::string>() + " " + c["context"]["messages"].dump());
      if (c["error"].is_null()) {
        EXPECT_EQ(render(t["template"].get<std::string>(), c["context"]), c["expected"].get<std::string>());
        ++rendered;
      } else {
        EXPECT_THROW(render(t["template"].get<std::string>(), c["context"]), Error);
        ++refused;
      }
    }
  }
  EXPECT_EQ(rendered, 62);
  EXPECT_EQ(refused, 8);
  // Functions are defined (Llama-3.2 asks `strftime_now is defined` before dating its system prompt).
  EXPECT_EQ(render("{{ strftime_now is defined }} {{ raise_exception is defined }} {{ nope is defined }}"),
            "True True False");
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

TEST(ChatTemplate, ToolCallsToolsAndKwargsReachTheTemplate) {
  // fixtures/chat_tools.json: Python's jinja2 3.1.6 (transformers' settings) rendering the Qwen2.5 and Qwen3
  // templates with a tool call, a tool result, one tool, and (Qwen3) enable_thinking = false.
  std::ifstream in(LMFORGE_SOURCE_DIR "/tests/tokenizer/fixtures/chat_tools.json"),
      tin(LMFORGE_SOURCE_DIR "/tests/tokenizer/fixtures/chat_templates.json");
  ASSERT_TRUE(in.good() && tin.good());
  const Json fx = Json::parse(in), templates = Json::parse(tin);
  std::vector<ChatMessage> msgs;
  for (const Json& m : fx["messages"]) msgs.push_back(chat_message_from_json(m, "test"));
  EXPECT_EQ(msgs[2].role, "assistant");
  EXPECT_TRUE(msgs[2].fields.contains("tool_calls"));
  int checked = 0;
  for (const Json& t : templates) {
    const std::string name = t["name"];
    if (!fx["expected"].contains(name)) continue;
    ChatOptions opt;
    opt.tools = fx["tools"];
    if (name == "qwen3") opt.kwargs = {{"enable_thinking", false}};
    const ChatPrompt p = render_chat(msgs, t["template"], t["bos_token"], t["eos_token"], opt);
    EXPECT_EQ(p.family, "jinja") << name;
    EXPECT_EQ(p.text, fx["expected"][name].get<std::string>()) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 2);
  // Without a template (the built-in formats) tools, tool turns and tool calls are errors that say why.
  ChatOptions with_tools;
  with_tools.tools = fx["tools"];
  EXPECT_THROW(render_chat({{"user", "hi", nullptr}}, "", "", "", with_tools), Error);
  EXPECT_NE(render_chat({{"user", "hi", nullptr}}, "{{ messages[0].content }}", "", "", with_tools)
                .note.find("does not read `tools`"),
            std::string::npos);
  EXPECT_THROW(render_chat(msgs, "", "", ""), Error);
  ChatOptions bad;
  bad.kwargs = {{"add_generation_prompt", false}};
  EXPECT_THROW(render_chat({{"user", "hi", nullptr}}, "{{ 1 }}", "", "", bad), Error);
  // Content parts: the text parts joined; other parts kept for the template only.
  const ChatMessage parts = chat_message_from_json(
      Json::parse(R"({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"},
                                                  {"type": "text", "text": "b"}]})"),
      "m");
  EXPECT_EQ(parts.content, "ab");
  EXPECT_THROW(chat_message_from_json(Json::parse(R"({"role": "user", "content": 3})"), "m"), Error);
  EXPECT_THROW(chat_message_from_json(Json::parse(R"({"role": "user", "content": [{"text": "a"}]})"), "m"), Error);
  EXPECT_THROW(chat_message_from_json(Json::parse(R"({"content": "a"})"), "m"), Error);
}

TEST(ChatTemplate, FormattingSortingAndMoreFilters) {
  // Expected: Python's jinja2 3.1.6 with transformers' settings, rendering each template with this context.
  const Json ctx = Json::parse(
      R"({"xs": [3, 1, 2], "ws": ["b", "A", "c"], "d": {"b": 2, "a": 1, "C": 0},
          "people": [{"n": "x", "age": 30, "p": {"k": 2}}, {"n": "y", "age": 20, "p": {"k": 1}}],
          "f": 2.675, "t": "line1\n\nline3\n", "u": "héllo wörld"})");
  EXPECT_EQ(render("{{ '%s and %s' % ('a', 1) }}", ctx), "a and 1");
  EXPECT_EQ(render("{{ '%d|%5d|%-5d|%05d|%+d|% d' % (7, 7, 7, -7, 7, 7) }}", ctx), "7|    7|7    |-0007|+7| 7");
  EXPECT_EQ(render("{{ '%.2f|%8.3f|%e|%g|%G' % (3.14159, 2.5, 12345.678, 0.0001, 1e20) }}", ctx),
            "3.14|   2.500|1.234568e+04|0.0001|1E+20");
  EXPECT_EQ(render("{{ '%x|%X|%#x|%o|%#o|%#08x' % (255, 255, 255, 8, 8, 255) }}", ctx), "ff|FF|0xff|10|0o10|0x0000ff");
  EXPECT_EQ(render("{{ '%s' % xs }}", ctx), "[3, 1, 2]");
  EXPECT_EQ(render("{{ '%r|%s' % ('q', none) }}", ctx), "'q'|None");
  EXPECT_EQ(render("{{ '%(a)s-%(b)03d' % d }}", ctx), "1-002");
  EXPECT_EQ(render("{{ '100%%' % () }}", ctx), "100%");
  EXPECT_EQ(render("{{ '%.3s|%5s|%-5s|' % ('abcdef', 'ab', 'ab') }}", ctx), "abc|   ab|ab   |");
  EXPECT_EQ(render("{{ '%c%c' % (65, 'z') }}", ctx), "Az");
  EXPECT_EQ(render("{{ '%c%c' % (233, 128512) }}"), "\xC3\xA9\xF0\x9F\x98\x80");  // chr(): é, U+1F600
  EXPECT_EQ(render("{{ '%d' % 3.9 }}", ctx), "3");
  EXPECT_EQ(render("{{ '%s' % d }}", ctx), "{'b': 2, 'a': 1, 'C': 0}");
  EXPECT_EQ(render("{{ '%s: %s'|format('k', 2) }}", ctx), "k: 2");
  EXPECT_EQ(render("{{ '%(x)s!'|format(x='y') }}", ctx), "y!");
  EXPECT_EQ(render("{{ '%5.1f%%'|format(99.25) }}", ctx), " 99.2%");
  EXPECT_EQ(render("{{ '%s' % true }}", ctx), "True");
  EXPECT_EQ(render("{{ '%d' % true }}", ctx), "1");
  EXPECT_EQ(render("{{ t|indent }}|", ctx), "line1\n\n    line3\n|");
  EXPECT_EQ(render("{{ t|indent(2, true) }}|", ctx), "  line1\n\n  line3\n|");
  EXPECT_EQ(render("{{ t|indent(2, first=true, blank=true) }}|", ctx), "  line1\n  \n  line3\n  |");
  EXPECT_EQ(render("{{ 'a\nb'|indent('> ') }}", ctx), "a\n> b");
  EXPECT_EQ(render("{{ ''|indent(first=true) }}|", ctx), "    |");
  EXPECT_EQ(render("{{ xs|sort }}", ctx), "[1, 2, 3]");
  EXPECT_EQ(render("{{ xs|sort(reverse=true) }}", ctx), "[3, 2, 1]");
  EXPECT_EQ(render("{{ ws|sort }}", ctx), "['A', 'b', 'c']");
  EXPECT_EQ(render("{{ ws|sort(case_sensitive=true) }}", ctx), "['A', 'b', 'c']");
  EXPECT_EQ(render("{{ people|sort(attribute='age')|map(attribute='n')|join(',') }}", ctx), "y,x");
  EXPECT_EQ(render("{{ people|sort(attribute='p.k')|map(attribute='n')|join(',') }}", ctx), "y,x");
  EXPECT_EQ(render("{% for k, v in d|dictsort %}{{ k }}={{ v }} {% endfor %}", ctx), "a=1 b=2 C=0 ");
  EXPECT_EQ(render("{% for k, v in d|dictsort(true) %}{{ k }} {% endfor %}", ctx), "C a b ");
  EXPECT_EQ(render("{% for k, v in d|dictsort(by='value', reverse=true) %}{{ k }} {% endfor %}", ctx), "b a C ");
  EXPECT_EQ(render("{{ xs|min }} {{ xs|max }} {{ ws|min }} {{ ws|max(case_sensitive=true) }}", ctx), "1 3 A c");
  EXPECT_EQ(render("{{ (people|max(attribute='age')).n }}", ctx), "x");
  EXPECT_EQ(render("{{ xs|sum }} {{ people|sum(attribute='age') }} {{ xs|sum(start=10) }} {{ [1.5, 2]|sum }}", ctx),
            "6 50 16 3.5");
  EXPECT_EQ(render("{{ f|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 0.125|round(2) }} {{ 7|round }} {{ "
                   "2.1|round(method='ceil') }} {{ 2.9|round(0, 'floor') }} {{ 1234.5|round(-2) }}",
                   ctx),
            "2.67 2.0 4.0 0.12 7 3.0 2.0 1200.0");
  EXPECT_EQ(render("{{ 'one two, three_3 !'|wordcount }}", ctx), "3");
  EXPECT_EQ(render("{{ 'café — naïve 中文'|wordcount }}"), "3");  // Python's \w is Unicode-aware
  EXPECT_EQ(render("{% for x in xs %}{{ loop.cycle('odd', 'even') }} {% endfor %}", ctx), "odd even odd ");
  EXPECT_EQ(render("{{ people[0]|attr('n') is undefined }}", ctx), "True");
  EXPECT_EQ(render("{{ d|tojson(sort_keys=true) }}", ctx), "{\"C\": 0, \"a\": 1, \"b\": 2}");
  EXPECT_EQ(render("{{ d|tojson(indent=2) }}", ctx), "{\n  \"b\": 2,\n  \"a\": 1,\n  \"C\": 0\n}");
  EXPECT_EQ(render("{{ people|tojson(separators=(',', ':')) }}", ctx),
            "[{\"n\":\"x\",\"age\":30,\"p\":{\"k\":2}},{\"n\":\"y\",\"age\":20,\"p\":{\"k\":1}}]");
  EXPECT_EQ(render("{{ u|tojson(ensure_ascii=true) }}", ctx), "\"h\\u00e9llo w\\u00f6rld\"");
  EXPECT_EQ(render("{{ {'z': [1, {}], 'a': []}|tojson(indent=2, sort_keys=true) }}", ctx),
            "{\n  \"a\": [],\n  \"z\": [\n    1,\n    {}\n  ]\n}");
  EXPECT_EQ(render("{{ 2 is ne 3 }} {{ 2 is lt 3 }} {{ 3 is ge 3 }} {{ 'a' is in 'cat' }} {{ 2 is in xs }} {{ 'abc' is "
                   "lower }} {{ 'ABC' is upper }} {{ '12' is lower }} {{ 5 is greaterthan 4 }}",
                   ctx),
            "True True True True True True True False True");
  EXPECT_EQ(render("{{ xs|select('gt', 1)|list }} {{ xs|reject('in', [1, 2])|list }}", ctx), "[3, 2] [3]");
  // Floats print as Python's repr (and json.dumps) does.
  EXPECT_EQ(render("{{ [1200.0, 1e16, 1.5e-5, 0.0001, 123456789012345678.0, -0.0, 0.1, 1e-7, 2.5e22, 1e15, 12.5] }} "
                   "{{ 1e100 }} {{ [1200.0, 1e16, 1.5e-05]|tojson }}"),
            "[1200.0, 1e+16, 1.5e-05, 0.0001, 1.2345678901234568e+17, -0.0, 0.1, 1e-07, 2.5e+22, 1000000000000000.0, "
            "12.5] 1e+100 [1200.0, 1e+16, 1.5e-05]");
  // Python's errors for the format's arguments.
  EXPECT_THROW(render("{{ '%s %s' % ('a',) }}"), Error);  // not enough arguments
  EXPECT_THROW(render("{{ 'x' % 1 }}"), Error);           // not all arguments converted
  EXPECT_THROW(render("{{ '%d' % 'a' }}"), Error);
  EXPECT_THROW(render("{{ '%(k)s' % {'j': 1} }}"), Error);
  EXPECT_THROW(render("{{ '%q' % 1 }}"), Error);
  EXPECT_THROW(render("{{ [1, 'a']|sort }}"), Error);  // unorderable, as in Python
  // 64-bit integers: where Python's would grow past them, an error (found by fuzz_chat_template).
  EXPECT_THROW(render("{{ 777 * 777000777 * 777000777 * 777000777 }}"), Error);
  EXPECT_THROW(render("{{ 9223372036854775807 + 1 }}"), Error);
  EXPECT_THROW(render("{{ 10 ** 19 }}"), Error);
  EXPECT_THROW(render("{{ '%d' % 1e300 }}"), Error);
  EXPECT_EQ(render("{{ 3037000499 * 3037000499 }} {{ 2 ** 62 }}"), "9223372030926249001 4611686018427387904");
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
  // Work is bounded as well as steps: copying a large list in each of a few iterations stops (it ran unbounded
  // before), and reading one through a dict does not copy it at all.
  EXPECT_NE(error_of("{% set big = range(500000)|list %}{% for i in range(100) %}{% set x = big|list %}{% endfor %}")
                .find("units of work"),
            std::string::npos);
  EXPECT_EQ(render("{% set d = {'a': range(100000)|list} %}{% for i in range(5000) %}{% if not d.a|length %}x"
                   "{% endif %}{% endfor %}ok"),
            "ok");
}

// render_chat: templates it cannot evaluate fall back to the built-in formats, and say so.
TEST(ChatTemplate, FallsBackToTheBuiltInFormats) {
  const std::vector<ChatMessage> msgs = {{"user", "Hi", nullptr}};
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
