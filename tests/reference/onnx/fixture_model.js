#!/usr/bin/env node
// Turns a PyTorch parity fixture (tests/reference/fixtures/model_*.safetensors: weights, ids [B, T], logits
// [B, T, V], ...) into what the ONNX parity test needs: a model directory lmforge loads (config.json +
// model.safetensors with only the model's tensors), and per batch row b the ids (ids<b>.txt) and PyTorch's logits
// (torch<b>.safetensors, one f32 tensor 'logits' [T, V]).
//
// usage: node fixture_model.js FIXTURE.safetensors CONFIG.json OUTDIR
'use strict';
const fs = require('fs');
const path = require('path');

function die(msg) {
  process.stderr.write(`fixture_model.js: ${msg}\n`);
  process.exit(2);
}

function readSafetensors(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const data = buf.subarray(8 + n);
  const get = (name) => {
    const t = header[name];
    if (!t) die(`${file}: no tensor '${name}'`);
    return {dtype: t.dtype, shape: t.shape, bytes: data.subarray(t.data_offsets[0], t.data_offsets[1])};
  };
  return {names: Object.keys(header).filter((k) => k !== '__metadata__'), get};
}

function writeSafetensors(file, tensors) {  // tensors: [[name, {dtype, shape, bytes}]]
  const header = {};
  let off = 0;
  for (const [name, t] of tensors) {
    header[name] = {dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length]};
    off += t.bytes.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...tensors.map(([, t]) => t.bytes)]));
}

const [fixture, config, out] = process.argv.slice(2);
if (!out) die('usage: node fixture_model.js FIXTURE.safetensors CONFIG.json OUTDIR');
const st = readSafetensors(fixture);
fs.mkdirSync(out, {recursive: true});
fs.copyFileSync(config, path.join(out, 'config.json'));
const weights = st.names.filter((k) => k.startsWith('model.') || k.startsWith('lm_head.')).sort();
writeSafetensors(path.join(out, 'model.safetensors'), weights.map((k) => [k, st.get(k)]));

const ids = st.get('ids'), logits = st.get('logits');
if (ids.dtype !== 'I32' || logits.dtype !== 'F32') die(`${fixture}: ids must be I32 and logits F32`);
const [B, T] = ids.shape, V = logits.shape[2];
for (let b = 0; b < B; ++b) {
  const row = [];
  for (let t = 0; t < T; ++t) row.push(ids.bytes.readInt32LE((b * T + t) * 4));
  fs.writeFileSync(path.join(out, `ids${b}.txt`), row.join(' ') + '\n');
  const bytes = logits.bytes.subarray(b * T * V * 4, (b + 1) * T * V * 4);
  writeSafetensors(path.join(out, `torch${b}.safetensors`), [['logits', {dtype: 'F32', shape: [T, V], bytes}]]);
}
process.stdout.write(`${out}: ${weights.length} tensors, ${B} rows of ${T} ids\n`);
