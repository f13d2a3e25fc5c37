#!/usr/bin/env bash
# The end-to-end pretraining run: real English text that every Debian system ships (base-files' licence texts),
# byte-level shards, and the 9.6M-parameter hybrid-attention model of configs/e2e/byte-lm-10m.toml trained for 300
# steps. Checks that the final validation loss is at most MAX_VAL_LOSS (nats per byte) and that the final model
# runs in `lmforge forward`.
#   scripts/train_byte_lm.sh LMFORGE WORKDIR [MAX_VAL_LOSS] [extra lmforge train flags...]
set -euo pipefail
lmforge=$1
work=$2
bound=${3:-}
shift $(( $# >= 3 ? 3 : $# ))
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
licenses=/usr/share/common-licenses
cat "$licenses"/{GPL-3,GPL-2,LGPL-2.1,Apache-2.0,Artistic,MPL-1.1,MPL-2.0,GFDL-1.3} > "$work/corpus.txt"
rm -rf "$work/shards" "$work/run"
"$lmforge" data shard --bytes --val-fraction 0.1 --input "$work/corpus.txt" --output "$work/shards"
"$lmforge" train --config "$here/configs/e2e/byte-lm-10m.toml" \
  --set data.train="$work/shards" --set checkpoint.dir="$work/run" "$@"
val=$(grep '"val_loss"' "$work/run/log.jsonl" | grep -v '"event"' | tail -1 | sed 's/.*"val_loss":\([0-9.eE+-]*\).*/\1/')
echo "final validation loss: $val nats/byte"
printf '70 114 101 101 32 115 111 102 116 119 97 114 101' > "$work/ids.txt"   # "Free software"
"$lmforge" forward --model "$work/run/final" --ids-file "$work/ids.txt" --out "$work/logits.safetensors"
if [[ -n "$bound" ]]; then
  awk -v v="$val" -v b="$bound" 'BEGIN { if (v + 0 > b + 0) { print "FAIL: " v " > bound " b; exit 1 } print "ok: " v " <= " b }'
fi
