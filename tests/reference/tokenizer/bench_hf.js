#!/usr/bin/env node
// HF tokenizers' side of `lmforge bench tokenizer` (the Rust library through @anush008/tokenizers).
//   node bench_hf.js encode TOKENIZER_JSON TEXT_FILE DOC_BYTES MAX_BYTES
//     Splits TEXT_FILE (its first MAX_BYTES) into documents of about DOC_BYTES cut after a newline, as lmforge does,
//     and encodes them one after another (one thread) and as one encodeBatch (RAYON_NUM_THREADS threads; set it in
//     the environment). Prints {"single_mb_s", "batch_mb_s", "threads", "bytes", "tokens"}.
//   node bench_hf.js train PRE_TOKENIZER_JSON FILE...
//     Trains HF's default BpeTrainer (vocabulary 30000, min_frequency 0) with that pre-tokenizer; prints
//     {"seconds", "max_rss_mb", "vocab_size"}.
'use strict';
const fs = require('fs');
const os = require('os');
const { Tokenizer } = require('@anush008/tokenizers');

function documents(file, docBytes, maxBytes) {
  const whole = fs.readFileSync(file);
  let buf = whole.subarray(0, maxBytes);
  // A longer file is cut after its last whole line, never inside a UTF-8 sequence (as lmforge bench tokenizer).
  if (whole.length > maxBytes && buf.lastIndexOf(10) >= 0) buf = buf.subarray(0, buf.lastIndexOf(10) + 1);
  const docs = [];
  let start = 0;
  while (start < buf.length) {
    let end = Math.min(start + docBytes, buf.length);
    if (end < buf.length) {
      const nl = buf.indexOf(10, end);
      end = nl < 0 ? buf.length : nl + 1;
    }
    docs.push(buf.subarray(start, end).toString('utf8'));
    start = end;
  }
  return docs;
}

async function encode(tokPath, file, docBytes, maxBytes) {
  const tok = Tokenizer.fromFile(tokPath);
  const docs = documents(file, docBytes, maxBytes);
  const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d), 0);
  const opts = { addSpecialTokens: false };
  await tok.encode(docs[0], null, opts);  // warm-up
  let t0 = process.hrtime.bigint();
  let tokens = 0;
  for (const d of docs) tokens += (await tok.encode(d, null, opts)).getLength();
  const single = Number(process.hrtime.bigint() - t0) / 1e9;
  t0 = process.hrtime.bigint();
  await tok.encodeBatch(docs, opts);
  const batch = Number(process.hrtime.bigint() - t0) / 1e9;
  const threads = Number(process.env.RAYON_NUM_THREADS || os.cpus().length);
  console.log(JSON.stringify({ single_mb_s: bytes / 1e6 / single, batch_mb_s: bytes / 1e6 / batch, threads, bytes, tokens }));
}

function train(preTokenizerJson, files) {
  const spec = {
    version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
    pre_tokenizer: JSON.parse(fs.readFileSync(preTokenizerJson, 'utf8')),
    post_processor: null, decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, vocab: {}, merges: [] },
  };
  const tok = Tokenizer.fromString(JSON.stringify(spec));
  const t0 = process.hrtime.bigint();
  tok.train(files);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ seconds, max_rss_mb: process.resourceUsage().maxRSS / 1024, vocab_size: tok.getVocabSize(true) }));
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'encode') {
  encode(args[0], args[1], Number(args[2]), Number(args[3])).catch((e) => { console.error(e); process.exit(1); });
} else if (mode === 'train') {
  train(args[0], args.slice(1));
} else {
  console.error('usage: bench_hf.js encode TOKENIZER TEXT DOC_BYTES MAX_BYTES | train PRE_TOKENIZER_JSON FILE...');
  process.exit(2);
}
