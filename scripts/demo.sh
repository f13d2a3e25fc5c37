#!/usr/bin/env bash
# The engine demo (`make demo`): what the build can do today, end to end, in about a minute.
#  1. the op benchmarks in quick mode, each side by side with its reference (raw OpenBLAS, naive attention,
#     copy bandwidth);
#  2. a byte-level transformer trained from scratch by the engine on real English text.
# Later issues turn this into the full pipeline (corpus -> tokenizer -> pretrain -> quantize -> serve).
set -euo pipefail
lmforge=${1:-build/bin/lmforge}
bin=$(dirname "$lmforge")
corpus=/usr/share/common-licenses/GPL-3   # real text shipped by Debian's base-files on every system

"$lmforge" --version
echo
echo "== engine ops vs references (lmforge bench ops --quick) =="
"$lmforge" bench ops --quick
echo
echo "== training a byte-level transformer on $corpus =="
"$bin/tiny_lm" --text "$corpus" --steps 300 --max-val-loss 2.6
