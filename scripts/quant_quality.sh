#!/usr/bin/env bash
# The quantization quality table (docs/QUANTIZATION.md): one trained model dir, each quantization type, perplexity
# on held-out tokens. Calibration (GPTQ, AWQ, the importance matrices of the "+imatrix" rows) comes from the train
# split, evaluation from the val split. The k-quant rows need input sizes 256 divides (others fall back to q8_0).
#   scripts/quant_quality.sh LMFORGE MODEL_DIR SHARD_DIR WORKDIR [CTX] [STRIDE] [MAX_TOKENS] [CALIB_TOKENS]
# LMFORGE_PPL_FLAGS: extra `eval perplexity` flags (--reference: the f32 model instead of the engine).
set -euo pipefail
lmforge=$1 model=$2 shards=$3 work=$4
ctx=${5:-256} stride=${6:-128} max_tokens=${7:-8192} calib_tokens=${8:-2048}
mkdir -p "$work"
out="$work/quality.jsonl"
: > "$out"
eval_dir() {  # name dir
  local t0 t1
  t0=$(date +%s.%N)
  "$lmforge" eval perplexity --model "$2" --data "$shards" --ctx "$ctx" --stride "$stride" --max-tokens "$max_tokens" \
    ${LMFORGE_PPL_FLAGS:-} --json 2>/dev/null | sed "s/^{/{\"type\":\"$1\",/" >> "$out"
  t1=$(date +%s.%N)
  echo "$1: $(tail -1 "$out")"
}
eval_dir f32 "$model"
for t in bf16 q8_0 int8 q4_0 q4_g128 q4_g128_asym; do
  "$lmforge" quantize --model "$model" --type "$t" --out "$work/$t" > /dev/null
  eval_dir "$t" "$work/$t"
done
for t in gptq-q4 awq-q4; do
  s=$(date +%s)
  "$lmforge" quantize --model "$model" --type "$t" --calib "$shards" --calib-tokens "$calib_tokens" --out "$work/$t" \
    > /dev/null 2> "$work/$t.log"
  echo "$t quantized in $(( $(date +%s) - s )) s"
  eval_dir "$t" "$work/$t"
done
for t in q4_0 q4_K q4_K_M q5_K_M q6_K; do
  if [[ $t != q4_0 ]]; then  # (plain q4_0 is above)
    "$lmforge" quantize --model "$model" --type "$t" --out "$work/$t" > /dev/null
    eval_dir "$t" "$work/$t"
  fi
  "$lmforge" quantize --model "$model" --type "$t" --calib "$shards" --calib-tokens "$calib_tokens" \
    --out "$work/$t+imatrix" > /dev/null 2> "$work/$t+imatrix.log"
  eval_dir "$t+imatrix" "$work/$t+imatrix"
done
