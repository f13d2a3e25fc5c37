#!/usr/bin/python3
"""Times PyTorch's manual causal attention on the shapes of `lmforge bench ops --filter attention`.

Run it with Debian's python3-torch (1.13), not a pyenv python:

    /usr/bin/python3 bench/reference/attention_torch.py --threads 2 --repeats 7
    /usr/bin/python3 bench/reference/attention_torch.py --ours ours.jsonl   # adds ratio = pytorch ms / our ms

It prints the JSON-lines format of `lmforge bench ops --json`, one object per case:
{"op", "shape", "threads", "ms", "gflops", "reference": "pytorch-manual", "ratio"}. Here "ms" and "gflops" are
PyTorch's own figures. With --ours (a file of `lmforge bench ops --json` lines) "ratio" is PyTorch's median over
ours for the row with the same op and shape, so above 1 means lmforge is faster; without it "ratio" is null.

The attention is the usual manual one (nanoGPT's, and what HF Llama does without SDPA): q, k, v come out of the
projections as [B, T, H, D], are viewed as [B, H, T, D], and

    att = (q @ k.transpose(-2, -1)) * (1 / sqrt(D))
    att = att.masked_fill(mask[:T, :T] == 0, float("-inf"))
    att = softmax(att, dim=-1)
    y = att @ v

Forward rows run under torch.no_grad(); forward+backward rows call y.backward(dy) and include it.

--reuse-memory re-runs the script with glibc malloc told never to return memory to the system
(MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_ huge), so PyTorch's per-op [H, T, T] tensors reuse pages instead of
faulting fresh ones in. On the Firecracker VM of docs/PERFORMANCE.md a fresh 4 KiB page costs ~6 us, which
dominates PyTorch's default figures; the reuse run is the stronger baseline (what jemalloc/tcmalloc would give).
Its rows say "reference": "pytorch-manual+malloc-reuse".
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

H, D = 8, 64


def manual_attention(q, k, v, mask):
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    att = att.masked_fill(mask[:T, :T] == 0, float("-inf"))
    att = F.softmax(att, dim=-1)
    return att @ v


def time_case(T, backward, repeats):
    torch.manual_seed(0)
    B = 1
    # [B, T, H, D] storage, viewed per head, as a model's projections produce them.
    q0 = torch.rand(B, T, H, D) * 2 - 1
    k0 = torch.rand(B, T, H, D) * 2 - 1
    v0 = torch.rand(B, T, H, D) * 2 - 1
    dy = torch.rand(B, H, T, D) * 2 - 1
    mask = torch.tril(torch.ones(T, T))

    def once():
        if backward:
            q = q0.clone().requires_grad_(True)
            k = k0.clone().requires_grad_(True)
            v = v0.clone().requires_grad_(True)
            y = manual_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
            y.backward(dy)
        else:
            with torch.no_grad():
                manual_attention(q0.transpose(1, 2), k0.transpose(1, 2), v0.transpose(1, 2), mask)

    once()  # warm-up, not counted
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--lengths", default="256,1024,2048", help="comma-separated sequence lengths T")
    ap.add_argument("--ours", help="`lmforge bench ops --json` output to compute ratios against")
    ap.add_argument("--reuse-memory", action="store_true",
                    help="keep freed memory in malloc's heap (no page faults per op); see the module docstring")
    args = ap.parse_args()
    if args.reuse_memory and os.environ.get("MALLOC_MMAP_MAX_") != "0":
        env = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 46))
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    reference = "pytorch-manual+malloc-reuse" if args.reuse_memory else "pytorch-manual"
    if args.threads < 1 or args.repeats < 1:
        ap.error("--threads and --repeats must be at least 1")
    torch.set_num_threads(args.threads)

    ours = {}
    if args.ours:
        with open(args.ours) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    r = json.loads(line)
                    ours[(r["op"], r["shape"])] = r["ms"]

    for T in [int(t) for t in args.lengths.split(",")]:
        shape = f"B=1 T={T} H={H} D={D} causal"
        # Same FLOP convention as lmforge: useful (causal) products, T(T+1)·D per product per head; the forward
        # has two products, the backward four.
        per_product = T * (T + 1) * D * H
        for op, backward in (("attention-fwd", False), ("attention-fwd-bwd", True)):
            ms = time_case(T, backward, args.repeats)
            flops = (6 if backward else 2) * per_product
            mine = ours.get((op, shape))
            row = {
                "op": op,
                "shape": shape,
                "threads": args.threads,
                "ms": round(ms, 4),
                "gflops": round(flops / ms / 1e6, 2),
                "reference": reference,
                "ratio": round(ms / mine, 4) if mine else None,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
