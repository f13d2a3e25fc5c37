#!/usr/bin/env bash
# Mixed precision, side by side in one run: `lmforge bench train` at f32 / bf16 / fp16 (and bf16 with activation
# checkpointing) and the PyTorch reference at f32 and under torch.autocast("cpu", bfloat16), on BENCHMARKS.md's
# training configs, 2 threads each. One JSON line per measurement. Usage: bench/precision_vs_torch.sh [dense|moe]...
set -euo pipefail
cd "$(dirname "$0")/.."
LMFORGE=${LMFORGE:-build/bin/lmforge}
STEPS=${STEPS:-4}
WARMUP=${WARMUP:-1}
for n in ${@:-dense moe}; do
  for p in f32 bf16 fp16 bf16+ckpt; do
    set_ckpt=()
    [[ $p == *+ckpt ]] && set_ckpt=(--set training.activation_checkpointing=true)
    "$LMFORGE" bench train --config "configs/bench/train-$n.toml" --steps "$STEPS" --warmup "$WARMUP" --json \
      --set training.precision="${p%+ckpt}" "${set_ckpt[@]}" |
      sed "s/^{/{\"side\":\"lmforge\",\"bench\":\"train-$n\",\"mode\":\"$p\",/"
  done
  for p in f32 bf16; do
    flag=()
    [[ $p == bf16 ]] && flag=(--bf16)
    /usr/bin/python3 bench/reference/torch_train.py --config "configs/bench/train-$n.json" --steps "$STEPS" \
      --warmup "$WARMUP" --batch 8 --seq 256 --threads 2 --lr 3e-4 --wd 0.1 --clip 1.0 --reuse-memory --json \
      "${flag[@]}" | sed "s/^{/{\"side\":\"pytorch\",\"bench\":\"train-$n\",\"mode\":\"$p\",/"
  done
done
