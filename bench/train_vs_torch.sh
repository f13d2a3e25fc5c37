#!/usr/bin/env bash
# Side by side, same machine, same run: `lmforge bench train` and the PyTorch reference trainer
# (bench/reference/torch_train.py, Debian's python3-torch) on BENCHMARKS.md's training configs, 2 threads each.
# Prints one JSON line per measurement. Usage: bench/train_vs_torch.sh [dense|moe]... (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
LMFORGE=${LMFORGE:-build/bin/lmforge}
STEPS=${STEPS:-8}
WARMUP=${WARMUP:-3}
for name in "${@:-dense moe}"; do
  for n in $name; do
    "$LMFORGE" bench train --config "configs/bench/train-$n.toml" --steps "$STEPS" --warmup "$WARMUP" --json |
      sed "s/^{/{\"side\":\"lmforge\",\"bench\":\"train-$n\",/"
    /usr/bin/python3 bench/reference/torch_train.py --config "configs/bench/train-$n.json" --steps "$STEPS" \
      --warmup "$WARMUP" --batch 8 --seq 256 --threads 2 --lr 3e-4 --wd 0.1 --clip 1.0 --reuse-memory --json |
      sed "s/^{/{\"side\":\"pytorch\",\"bench\":\"train-$n\",/"
  done
done
