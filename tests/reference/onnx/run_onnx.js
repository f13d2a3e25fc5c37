#!/usr/bin/env node
// Runs an ONNX decoder exported by `lmforge export onnx` in ONNX Runtime (onnxruntime-node, CPU) and compares its
// logits with `lmforge forward`'s (f32, relative error = ||ort - ref|| / ||ref||):
//   full         the whole sequence in one call with an empty past
//   incremental  token by token, each call's present.* fed back as the next call's past_key_values.*
//   chunked      the first half in one call, the rest in a second call on top of that past (past > 0, seq > 1)
//   batch        (with --ids2/--ref2) both sequences in one batch, the shorter left-padded (attention_mask 0,
//                position_ids counting real tokens only), each row against its own reference
//
// usage: node run_onnx.js --onnx M.onnx --config config.json --ids IDS --ref REF.safetensors
//                         [--ids2 IDS2 --ref2 REF2.safetensors] [--tol 1e-4]
// Exit 0 when every comparison is within --tol, 1 otherwise, 2 on bad usage. Prints one JSON line.
'use strict';
const fs = require('fs');

function usage(msg) {
  process.stderr.write(`run_onnx.js: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const a = {tol: 1e-4};
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i], v = argv[i + 1];
    if (!k.startsWith('--') || v === undefined) usage(`bad argument '${k}'`);
    a[k.slice(2)] = k === '--tol' ? Number(v) : v;
  }
  for (const need of ['onnx', 'config', 'ids', 'ref']) if (!a[need]) usage(`--${need} is required`);
  return a;
}

function readIds(path) {
  const ids = fs.readFileSync(path, 'utf8').split(/\s+/).filter((s) => s.length).map(Number);
  if (!ids.length || ids.some((x) => !Number.isInteger(x) || x < 0)) usage(`${path}: not a list of token ids`);
  return ids;
}

// The one f32 tensor 'logits' of a safetensors file, as [rows, cols] in a Float32Array.
function readLogits(path) {
  const buf = fs.readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const t = header.logits;
  if (!t || t.dtype !== 'F32' || t.shape.length !== 2) usage(`${path}: no f32 [T, vocab] tensor 'logits'`);
  const [b, e] = t.data_offsets;
  const bytes = buf.subarray(8 + n + b, 8 + n + e);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; ++i) out[i] = bytes.readFloatLE(i * 4);
  return {rows: t.shape[0], cols: t.shape[1], data: out};
}

// Cache geometry from config.json: llama caches num_key_value_heads x head_dim; deepseek_v3 (MLA, decompressed)
// caches num_attention_heads x (qk_nope + qk_rope) keys and num_attention_heads x v_head_dim values.
function cacheDims(cfg) {
  if (cfg.model_type === 'deepseek_v3') {
    return {layers: cfg.num_hidden_layers, heads: cfg.num_attention_heads,
      key: cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, value: cfg.v_head_dim};
  }
  const hd = cfg.head_dim || cfg.hidden_size / cfg.num_attention_heads;
  return {layers: cfg.num_hidden_layers, heads: cfg.num_key_value_heads || cfg.num_attention_heads, key: hd,
    value: hd};
}

function relErr(got, ref) {
  let d = 0, r = 0;
  for (let i = 0; i < ref.length; ++i) {
    const x = got[i] - ref[i];
    d += x * x;
    r += ref[i] * ref[i];
  }
  return Number.isFinite(d) ? Math.sqrt(d) / Math.sqrt(r) : Infinity;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    usage('onnxruntime-node is not installed (npm ci in tests/reference/onnx)');
  }
  const cfg = JSON.parse(fs.readFileSync(a.config, 'utf8'));
  const dims = cacheDims(cfg);
  const session = await ort.InferenceSession.create(a.onnx);
  const i64 = (arr, shape) => new ort.Tensor('int64', BigInt64Array.from(arr.map(BigInt)), shape);

  const emptyPast = (batch) => {
    const past = {};
    for (let l = 0; l < dims.layers; ++l) {
      past[`past_key_values.${l}.key`] = new ort.Tensor('float32', new Float32Array(0), [batch, dims.heads, 0, dims.key]);
      past[`past_key_values.${l}.value`] =
          new ort.Tensor('float32', new Float32Array(0), [batch, dims.heads, 0, dims.value]);
    }
    return past;
  };
  // One call: ids [batch][seq] (equal lengths), mask [batch][past + seq], positions [batch][seq].
  const step = async (ids, mask, pos, past) => {
    const B = ids.length;
    const feeds = {
      input_ids: i64(ids.flat(), [B, ids[0].length]),
      attention_mask: i64(mask.flat(), [B, mask[0].length]),
      position_ids: i64(pos.flat(), [B, pos[0].length]),
      ...past,
    };
    const out = await session.run(feeds);
    const next = {};
    for (let l = 0; l < dims.layers; ++l) {
      next[`past_key_values.${l}.key`] = out[`present.${l}.key`];
      next[`past_key_values.${l}.value`] = out[`present.${l}.value`];
    }
    return {logits: out.logits, past: next};
  };
  const range = (lo, hi) => Array.from({length: hi - lo}, (_, i) => lo + i);

  const results = {};
  let ok = true;
  const record = (name, got, ref) => {
    const e = relErr(got, ref);
    results[name] = e;
    if (!(e <= a.tol)) ok = false;
  };

  const ids = readIds(a.ids), ref = readLogits(a.ref);
  const T = ids.length, V = ref.cols;
  if (ref.rows !== T) usage(`${a.ref}: ${ref.rows} rows of logits for ${T} ids`);

  // full
  let r = await step([ids], [Array(T).fill(1)], [range(0, T)], emptyPast(1));
  if (r.logits.dims.join(',') !== `1,${T},${V}`) usage(`logits have shape [${r.logits.dims}], expected [1,${T},${V}]`);
  record('full', r.logits.data, ref.data);
  const present0 = r.past['past_key_values.0.key'].dims;
  if (present0[2] !== T) usage(`present.0.key has ${present0[2]} positions, expected ${T}`);

  // incremental
  let past = emptyPast(1);
  const inc = new Float32Array(T * V);
  for (let t = 0; t < T; ++t) {
    r = await step([[ids[t]]], [Array(t + 1).fill(1)], [[t]], past);
    inc.set(r.logits.data, t * V);
    past = r.past;
  }
  record('incremental', inc, ref.data);

  // chunked
  if (T >= 2) {
    const h = Math.floor(T / 2);
    const c = new Float32Array(T * V);
    r = await step([ids.slice(0, h)], [Array(h).fill(1)], [range(0, h)], emptyPast(1));
    c.set(r.logits.data, 0);
    r = await step([ids.slice(h)], [Array(T).fill(1)], [range(h, T)], r.past);
    c.set(r.logits.data, h * V);
    record('chunked', c, ref.data);
  }

  // batch, the shorter sequence left-padded
  if (a.ids2) {
    const ids2 = readIds(a.ids2), ref2 = readLogits(a.ref2);
    const seqs = [[ids, ref], [ids2, ref2]];
    const L = Math.max(T, ids2.length);
    const rows = seqs.map(([s]) => Array(L - s.length).fill(0).concat(s));
    const mask = seqs.map(([s]) => Array(L - s.length).fill(0).concat(Array(s.length).fill(1)));
    // As transformers' generate: position = number of real tokens before, pads get 1.
    const pos = seqs.map(([s]) => Array(L - s.length).fill(1).concat(range(0, s.length)));
    r = await step(rows, mask, pos, emptyPast(2));
    seqs.forEach(([s, rf], b) => {
      const off = (b * L + (L - s.length)) * V;
      record(`batch_row${b}`, r.logits.data.subarray(off, off + s.length * V), rf.data);
    });
  }

  process.stdout.write(JSON.stringify({ok, tol: a.tol, rel_err: results, ort: ort.env.versions}) + '\n');
  process.exit(ok ? 0 : 1);
}

main().catch((e) => {
  process.stderr.write(`run_onnx.js: ${e.stack || e}\n`);
  process.exit(1);
});
