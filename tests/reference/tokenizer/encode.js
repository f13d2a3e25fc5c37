#!/usr/bin/env node
// Encodes texts with HF tokenizers (Rust, via @anush008/tokenizers) for lmforge's tests of tokenizers it trained.
// Usage: node encode.js TOKENIZER_JSON TEXTS_JSON   (TEXTS_JSON: a file holding a JSON array of strings)
// Prints a JSON array of id arrays (post-processor special tokens added) on stdout.
'use strict';
const fs = require('fs');
const { Tokenizer } = require('@anush008/tokenizers');

(async () => {
  const tok = Tokenizer.fromFile(process.argv[2]);
  const texts = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
  const out = [];
  for (const t of texts) out.push((await tok.encode(t, null, { addSpecialTokens: true })).getIds());
  process.stdout.write(JSON.stringify(out));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
