#!/usr/bin/env bash
# The demo (`make demo`): what the build can do today, end to end, in a few minutes.
#  1. the op benchmarks in quick mode, each side by side with its reference (raw OpenBLAS, naive attention,
#     copy bandwidth);
#  2. pretraining from real English text (the licence texts Debian's base-files ships on every system):
#     byte-level token shards, `lmforge train` on a 9.6M-parameter hybrid-attention model (checkpoints,
#     validation loss, a final model dir), then `lmforge forward` on the result.
# Later issues turn this into the full pipeline (corpus -> tokenizer -> pretrain -> quantize -> serve).
set -euo pipefail
lmforge=${1:-build/bin/lmforge}

"$lmforge" --version
echo
echo "== engine ops vs references (lmforge bench ops --quick) =="
"$lmforge" bench ops --quick
echo
echo "== pretraining a byte-level model on Debian's licence texts (lmforge data shard, train, forward) =="
bash "$(dirname "$0")/train_byte_lm.sh" "$lmforge" runs/byte-lm 1.75
echo "run folder: runs/byte-lm/run (log.jsonl, checkpoints/, final/)"
