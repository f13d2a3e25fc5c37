// Loads a GGUF that `lmforge export gguf` wrote into real llama.cpp (the prebuilt CPU library inside
// node-llama-cpp), tokenizes a text and evaluates it, and compares with lmforge's own ids and logits.
//
//   node compare.mjs --gguf m.gguf --text sample.txt --ids ids.txt --logits logits.safetensors \
//        --max-rel 1e-3 [--metric all|median] [--kv f32|f16] [--json out.json]
//
// ids.txt: lmforge's ids of the text (`lmforge tokenizer encode`); logits.safetensors: `lmforge forward` on those
// ids (tensor "logits" [T, V]). Exit 0 when the ids are equal, the relative norm of the logits difference
// (||a - b|| / ||b||, all positions) is at most --max-rel and the greedy next tokens agree wherever lmforge's top
// two logits are further apart than the observed error; 1 otherwise; 77 when node-llama-cpp is missing (skip).
import fs from "node:fs";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
for (const k of ["gguf", "text", "ids", "logits", "max-rel"]) {
  if (args[k] === undefined) {
    console.error(`compare.mjs: --${k} is required`);
    process.exit(2);
  }
}

let nlc;
try {
  nlc = await import("node-llama-cpp");
} catch (e) {
  console.error(`compare.mjs: node-llama-cpp is not installed (${e.code ?? e.message}); run npm ci in ${import.meta.dirname}`);
  process.exit(77);
}

function readSafetensorsF32(path, name) {
  const buf = fs.readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const e = header[name];
  if (!e || e.dtype !== "F32") throw new Error(`${path}: no F32 tensor ${name}`);
  const [b, end] = e.data_offsets;
  const bytes = buf.subarray(8 + n + b, 8 + n + end);
  const copy = new Float32Array(bytes.length / 4);
  for (let i = 0; i < copy.length; i++) copy[i] = bytes.readFloatLE(4 * i);
  return { shape: e.shape, data: copy };
}

const text = fs.readFileSync(args.text, "utf8");
const ourIds = fs.readFileSync(args.ids, "utf8").trim().split(/\s+/).map(Number);
const ours = readSafetensorsF32(args.logits, "logits");
const [T, V] = ours.shape;

const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: args.gguf, gpuLayers: 0 });
// HF matches added tokens in any text; llama.cpp does so for control tokens only when parsing specials.
// BOS/EOS as llama.cpp adds them for a prompt (tokenizer.ggml.add_bos_token / add_eos_token).
const theirIds = Array.from(model.tokenize(text, true));
if (model.tokens.shouldPrependBosToken && model.tokens.bos != null) theirIds.unshift(model.tokens.bos);
if (model.tokens.shouldAppendEosToken && model.tokens.eos != null) theirIds.push(model.tokens.eos);
const kv = (args.kv ?? "f32").toUpperCase();
const ctx = await model.createContext({
  contextSize: Math.max(64, T + 8),
  batchSize: Math.max(64, T + 8),
  flashAttention: false,
  experimentalKvCacheKeyType: kv,
  experimentalKvCacheValueType: kv,
  threads: 2,
});
const seq = ctx.getSequence();
const input = ourIds.map((t) => [t, { generateNext: { logits: true } }]);
const res = await seq.controlledEvaluate(input);

let num = 0, den = 0, greedyChecked = 0, greedyAgree = 0, maxAbs = 0;
const theirLogits = [];
const perPos = [];
for (let t = 0; t < T; t++) {
  let pn = 0, pd = 0;
  const m = res[t]?.next?.logits;
  if (!m) throw new Error(`no logits from llama.cpp at position ${t}`);
  const row = new Float32Array(V);
  for (const [tok, v] of m) row[tok] = v;
  theirLogits.push(row);
  for (let v = 0; v < V; v++) {
    const d = row[v] - ours.data[t * V + v];
    num += d * d;
    den += ours.data[t * V + v] ** 2;
    pn += d * d;
    pd += ours.data[t * V + v] ** 2;
    maxAbs = Math.max(maxAbs, Math.abs(d));
  }
  perPos.push(Math.sqrt(pn / pd));
}
const sorted = [...perPos].sort((x, y) => x - y);
const quantile = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
for (let t = 0; t < T; t++) {
  // Greedy tokens must agree where lmforge's margin between its top two exceeds twice the largest difference.
  let a = -Infinity, b = -Infinity, ia = -1, ja = -1, jv = -Infinity;
  for (let v = 0; v < V; v++) {
    const x = ours.data[t * V + v];
    if (x > a) { b = a; a = x; ia = v; } else if (x > b) b = x;
    if (theirLogits[t][v] > jv) { jv = theirLogits[t][v]; ja = v; }
  }
  if (a - b > 2 * maxAbs) {
    greedyChecked++;
    if (ia === ja) greedyAgree++;
  }
}
const rel = Math.sqrt(num / den);
const idsEqual = theirIds.length === ourIds.length && theirIds.every((x, i) => x === ourIds[i]);
let firstDiff = -1;
for (let i = 0; i < Math.max(theirIds.length, ourIds.length); i++) if (theirIds[i] !== ourIds[i]) { firstDiff = i; break; }
const result = {
  gguf: args.gguf, tokens: T, vocab: V, ids_equal: idsEqual, first_id_difference: firstDiff,
  llamacpp_ids_count: theirIds.length, llamacpp_adds_bos: model.tokens.shouldPrependBosToken, logits_rel_diff: rel, logits_max_abs_diff: maxAbs,
  position_rel_diff_median: quantile(0.5), position_rel_diff_p90: quantile(0.9), position_rel_diff_max: sorted[sorted.length - 1],
  metric: args.metric ?? "all", max_rel: Number(args["max-rel"]), greedy_checked: greedyChecked, greedy_agree: greedyAgree, kv_cache: kv,
};
console.log(JSON.stringify(result));
if (args.json) fs.writeFileSync(args.json, JSON.stringify(result) + "\n");
await ctx.dispose();
await model.dispose();
// --metric median: the per-position median is bounded instead of the whole tensor's relative difference. For MoE
// models with quantized weights: llama.cpp rounds activations to q8_0 before quantized products, which flips
// near-tied expert choices at a few positions, and one flipped choice changes that position's logits wholesale.
const metric = args.metric ?? "all";
const measured = metric === "median" ? quantile(0.5) : rel;
const ok = idsEqual && measured <= Number(args["max-rel"]) && (metric === "median" || greedyAgree === greedyChecked);
if (!ok && !idsEqual)
  console.error(`ids differ at ${firstDiff}: llama.cpp ${theirIds.slice(Math.max(0, firstDiff - 3), firstDiff + 5)} vs lmforge ${ourIds.slice(Math.max(0, firstDiff - 3), firstDiff + 5)}`);
process.exit(ok ? 0 : 1);
