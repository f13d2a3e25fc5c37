#!/usr/bin/env bash
# lmforge against llama.cpp end to end, side by side on this machine: one model (an f32 model dir, e.g. infer-250m
# from `lmforge init-model`) at f32 / q8_0 / q4_0, prefill of a random prompt then greedy decode, 2 threads.
# llama.cpp is node-llama-cpp's prebuilt CPU library (tests/reference/llamacpp; LMFORGE_WITH_NODE=1
# scripts/install-deps.sh) running the GGUF that `lmforge export gguf` writes; lmforge runs `bench generate` on the
# model dir that `lmforge quantize` writes. The two alternate, round by round, so both see the same machine; each
# round prints one JSON line per type, and the last lines are the medians.
#
# usage: bench/llamacpp_e2e.sh LMFORGE F32_MODEL_DIR WORKDIR [ROUNDS=3] [TYPES="f32 q8_0 q4_0"]
#        env PROMPT_TOKENS (512), GEN_TOKENS (128), THREADS (2)
# exit 77 when node or node-llama-cpp is missing.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n 2,11p "$0"
  exit 2
fi
LMF="$(realpath "$1")"
MODEL="$(realpath "$2")"
WORK="$3"
ROUNDS="${4:-3}"
TYPES="${5:-f32 q8_0 q4_0}"
P="${PROMPT_TOKENS:-512}" G="${GEN_TOKENS:-128}" T="${THREADS:-2}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v node > /dev/null || [[ ! -d "$HERE/tests/reference/llamacpp/node_modules/node-llama-cpp" ]]; then
  echo "SKIP: node or node-llama-cpp missing (LMFORGE_WITH_NODE=1 scripts/install-deps.sh)" >&2
  exit 77
fi
[[ -f "$MODEL/config.json" ]] || { echo "llamacpp_e2e.sh: $MODEL/config.json: missing" >&2; exit 2; }
mkdir -p "$WORK"
WORK="$(realpath "$WORK")"

# A GGUF carries its tokenizer: a byte-level BPE of 1,000 tokens learnt from the licence texts (the ids the
# benchmark feeds are random either way).
if [[ ! -f "$MODEL/tokenizer.json" ]]; then
  cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 > "$WORK/corpus.txt"
  "$LMF" tokenizer train --input "$WORK/corpus.txt" --vocab-size 1000 --special-tokens '<|bos|>,<|eos|>' \
    --pattern llama3 --out "$WORK/tokenizer.json" > /dev/null 2>&1
  rm -rf "$WORK/f32"
  mkdir -p "$WORK/f32"
  cp "$MODEL/config.json" "$MODEL/model.safetensors" "$WORK/tokenizer.json" "$WORK/f32/"
  MODEL="$WORK/f32"
fi
quiet() {  # runs a step, shows its output only when it fails
  if ! "$@" > "$WORK/step.log" 2>&1; then
    cat "$WORK/step.log" >&2
    echo "llamacpp_e2e.sh: failed: $*" >&2
    exit 1
  fi
}
for t in $TYPES; do
  [[ -f "$WORK/$t.gguf" ]] || quiet "$LMF" export gguf --model "$MODEL" --out "$WORK/$t.gguf" --type "$t"
  if [[ "$t" != f32 && ! -f "$WORK/m-$t/model.safetensors" ]]; then
    quiet "$LMF" quantize --model "$MODEL" --type "$t" --out "$WORK/m-$t"
  fi
done

OUT="$WORK/rounds.jsonl"
: > "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for t in $TYPES; do
    dir="$WORK/m-$t"
    [[ "$t" == f32 ]] && dir="$MODEL"
    # Order swapped every round: neither side always runs first.
    if (( r % 2 )); then order="lmf llama"; else order="llama lmf"; fi
    for side in $order; do
      if [[ "$side" == lmf ]]; then
        ours="$("$LMF" bench generate --model "$dir" --prompt-tokens "$P" --gen-tokens "$G" --threads "$T" --json)"
      else
        theirs="$(node "$HERE/bench/reference/llamacpp_bench.mjs" --gguf "$WORK/$t.gguf" --prompt-tokens "$P" \
          --gen-tokens "$G" --threads "$T" --repeats 1)"
      fi
    done
    python3 - "$t" "$r" "$ours" "$theirs" <<'EOF' | tee -a "$OUT"
import json, sys
t, r, ours, theirs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(json.dumps({"type": t, "round": r,
                  "lmforge_prefill_tokens_per_s": round(ours["prefill_tokens_per_s"], 2),
                  "llamacpp_prefill_tokens_per_s": round(theirs["prefill_tokens_per_s"], 2),
                  "prefill_ratio": round(ours["prefill_tokens_per_s"] / theirs["prefill_tokens_per_s"], 3),
                  "lmforge_decode_tokens_per_s": round(ours["decode_tokens_per_s"], 2),
                  "llamacpp_decode_tokens_per_s": round(theirs["decode_tokens_per_s"], 2),
                  "decode_ratio": round(ours["decode_tokens_per_s"] / theirs["decode_tokens_per_s"], 3),
                  "copy_gb_s": round(ours["copy_gb_s"], 1)}))
EOF
  done
done
python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for t in dict.fromkeys(r["type"] for r in rows):
    rs = [r for r in rows if r["type"] == t]
    med = lambda k: round(statistics.median(r[k] for r in rs), 3)
    print(json.dumps({"type": t, "rounds": len(rs), "median_prefill_ratio": med("prefill_ratio"),
                      "median_decode_ratio": med("decode_ratio"),
                      "median_lmforge_prefill": med("lmforge_prefill_tokens_per_s"),
                      "median_llamacpp_prefill": med("llamacpp_prefill_tokens_per_s"),
                      "median_lmforge_decode": med("lmforge_decode_tokens_per_s"),
                      "median_llamacpp_decode": med("llamacpp_decode_tokens_per_s")}))
EOF
