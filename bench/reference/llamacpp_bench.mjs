// llama.cpp end to end (the prebuilt CPU library inside node-llama-cpp, tests/reference/llamacpp): prefill of a
// random prompt, then greedy decode, on a GGUF; BENCHMARKS.md's "llama.cpp end to end" method. Prints one JSON line.
//
//   node bench/reference/llamacpp_bench.mjs --gguf m.gguf [--prompt-tokens 512] [--gen-tokens 128] [--threads 2]
//        [--repeats 3] [--seed 0]
//
// prefill_tokens_per_s: the prompt evaluated in one batch without sampling; decode_tokens_per_s: gen-tokens greedy
// steps timed from the first generated token to the last (so the prompt is not in it), including the binding's
// per-token cost (sampling runs in llama.cpp). Medians over the repeats, each on a cleared sequence.
import path from "node:path";
import { createRequire } from "node:module";

const args = { "prompt-tokens": "512", "gen-tokens": "128", threads: "2", repeats: "3", seed: "0" };
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
if (!args.gguf) {
  console.error("llamacpp_bench.mjs: --gguf is required");
  process.exit(2);
}
const P = Number(args["prompt-tokens"]), G = Number(args["gen-tokens"]), R = Number(args.repeats);

let nlc;
try {
  const here = path.dirname(new URL(import.meta.url).pathname);
  const req = createRequire(path.join(here, "../../tests/reference/llamacpp/package.json"));
  nlc = await import(req.resolve("node-llama-cpp"));
} catch (e) {
  console.error(`llamacpp_bench.mjs: node-llama-cpp is not installed (${e.code ?? e.message}); ` +
                "LMFORGE_WITH_NODE=1 scripts/install-deps.sh installs it");
  process.exit(77);
}

const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: args.gguf, gpuLayers: 0 });
const ctx = await model.createContext({
  contextSize: P + G + 16,
  batchSize: P,
  threads: Number(args.threads),
  flashAttention: false,
});
const seq = ctx.getSequence();

// Random ids among ordinary tokens (above the 256 byte tokens, inside bench/llamacpp_e2e.sh's 1,000-token
// tokenizer), seeded; the work does not depend on which ids they are.
let s = BigInt(args.seed) * 6364136223846793005n + 1442695040888963407n;
const rnd = () => {
  s = (s * 6364136223846793005n + 1442695040888963407n) & ((1n << 64n) - 1n);
  return Number(s >> 33n);
};
const prompt = Array.from({ length: P }, () => 256 + (rnd() % 600));

const median = (v) => {
  const a = [...v].sort((x, y) => x - y);
  return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
};
const prefill = [], decode = [];
for (let r = -1; r < R; r++) {  // r = -1: warm-up, not counted
  await seq.clearHistory();
  let t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  const pf = (performance.now() - t0) / 1000;
  await seq.clearHistory();
  let n = 0, first = 0;
  for await (const tok of seq.evaluate(prompt, { temperature: 0 })) {
    void tok;
    if (n === 0) first = performance.now();
    if (++n > G) break;
  }
  const dc = (performance.now() - first) / 1000;
  if (r >= 0) {
    prefill.push(P / pf);
    decode.push(G / dc);
  }
}
console.log(JSON.stringify({
  engine: "llama.cpp (node-llama-cpp's prebuilt CPU library)",
  gguf: args.gguf,
  threads: Number(args.threads),
  prompt_tokens: P,
  gen_tokens: G,
  repeats: R,
  prefill_tokens_per_s: median(prefill),
  decode_tokens_per_s: median(decode),
  prefill_runs: prefill,
  decode_runs: decode,
}));
await ctx.dispose();
await model.dispose();
