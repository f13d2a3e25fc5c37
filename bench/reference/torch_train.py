#!/usr/bin/python3
"""PyTorch reference trainer that `lmforge bench train` and `lmforge train` are compared with.

The model is tests/reference/model_ref.py's CausalLM (llama / deepseek_v3, HF semantics, manual attention:
materialised softmax(QKᵀ·scale + mask)·V, as HF's eager path). Run it with Debian's python3-torch (1.13) at
/usr/bin/python3, not the first python3 on PATH:

    # throughput, as /work/shared/BENCHMARKS.md says (random tokens, 3 warm-up steps not timed, median of --steps)
    /usr/bin/python3 bench/reference/torch_train.py --config /work/shared/bench/train-dense.json \\
        --steps 8 --warmup 3 --batch 8 --seq 256 --threads 2 --lr 3e-4 --wd 0.1 --clip 1.0 --json
    /usr/bin/python3 bench/reference/torch_train.py --config CONFIG.json --bf16 --json   # autocast cpu bfloat16

    # loss on real text, byte level (token ids = bytes 0..255; vocab_size of the config must be >= 257)
    /usr/bin/python3 bench/reference/torch_train.py --config CONFIG.json --text FILE --steps 300 \\
        --warmup-steps 30 --min-lr-ratio 0.1 --eval-every 50 --eval-batches 8 --json

Benchmark mode (no --text) runs --warmup + --steps training steps on random token ids [batch, seq] (a fresh
batch each step, drawn from a torch.Generator seeded with --seed + 1) and prints one object:
    {"tokens_per_s", "step_ms_median", "peak_rss_mb", "params", "steps", "torch", "threads", ...}
tokens_per_s = batch·seq / median step time (BENCHMARKS.md's convention: 2,048 tokens a step); "steps" counts
the timed steps only; peak_rss_mb = ru_maxrss / 1024 (the whole process, model and optimizer state included).
A step is: zero_grad(set_to_none) -> forward (model(ids)["total"]: CE with HF's shift + MoE aux loss) ->
backward -> clip_grad_norm_(--clip) -> AdamW.step(). AdamW: betas 0.9/0.95, eps 1e-8, weight decay --wd on
params with dim >= 2 whose name has neither "embed" nor "norm" (model_ref.decay_groups), 0 on the rest; fp32
unless --bf16 (the forward under torch.autocast("cpu", torch.bfloat16), backward outside it).

Text mode (--text FILE): the file's bytes are the tokens; the last 10% (by bytes, split at len·9//10) is
validation. Each step draws --batch windows of --seq + 1 bytes from the training part (start positions from a
torch.Generator seeded with --seed + 1); inputs are the first --seq bytes, targets the last --seq (so every step
has batch·seq predicted tokens; loss = mean CE over them, plus the MoE aux loss in the gradient). Learning rate,
for step s = 1..N with W = --warmup-steps and floor f = --min-lr-ratio:
    s <= W: lr·s/W;   after: lr·(f + (1 - f)·0.5·(1 + cos(pi·(s - W)/(N - W))))
Validation loss = mean CE over --eval-batches fixed batches of windows from the validation part (positions
drawn once from a generator seeded with --seed + 2; eval mode, no grad, no aux loss), every --eval-every steps
and after the last step. Prints one line per --log-every steps and at every evaluation,
    {"step", "loss", "lr", "val_loss" (null when not evaluated at that step), "aux_loss", "grad_norm", "ms"}
then a summary {"final_val_loss", "tokens_per_s", "step_ms_median", "peak_rss_mb", "params", "steps", ...}
(tokens_per_s from the median training step, evaluation and the first --warmup steps not counted).

Model initialisation: torch.manual_seed(--seed), then model_ref's HF init (normal(0, initializer_range)).
Threads: torch.set_num_threads(--threads); OMP_NUM_THREADS and OPENBLAS_NUM_THREADS (Debian's torch calls the
pthread OpenBLAS, which torch.set_num_threads does not reach) are set to --threads before torch is imported,
unless already set.

--reuse-memory re-runs the script with glibc malloc told never to return memory to the system
(MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_ huge), as bench/reference/attention_torch.py does: the stronger
baseline on VMs where fresh pages are expensive (docs/PERFORMANCE.md). The output then says "malloc_reuse": true.

Without --json the same records are printed as `key=value` lines. A bad flag or value exits with code 2.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_REF_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "reference"))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="HF config.json (model_type llama or deepseek_v3)")
    ap.add_argument("--steps", type=int, default=None,
                    help="benchmark: timed steps after the warm-up (default 8); text: training steps (default 200)")
    ap.add_argument("--warmup", type=int, default=3, help="steps not timed (default 3)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0, help="max global grad norm; 0 disables clipping")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="forward under torch.autocast('cpu', torch.bfloat16)")
    ap.add_argument("--json", action="store_true", help="JSON lines instead of key=value lines")
    ap.add_argument("--reuse-memory", action="store_true",
                    help="keep freed memory in malloc's heap (no fresh page faults per op); see the docstring")
    t = ap.add_argument_group("text mode")
    t.add_argument("--text", help="train at byte level on this file instead of timing random tokens")
    t.add_argument("--warmup-steps", type=int, default=None, help="linear LR warm-up steps (default steps // 10)")
    t.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a fraction of --lr")
    t.add_argument("--eval-every", type=int, default=100, help="validate every N steps (0: only at the end)")
    t.add_argument("--eval-batches", type=int, default=8)
    t.add_argument("--log-every", type=int, default=1, help="print a step line every N steps")
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = 200 if args.text else 8
    bad = []
    for name in ("steps", "batch", "threads", "eval_batches", "log_every"):
        if getattr(args, name) < 1:
            bad.append(f"--{name.replace('_', '-')} must be at least 1")
    if args.seq < 2:
        bad.append("--seq must be at least 2")
    if args.warmup < 0 or (args.warmup_steps is not None and args.warmup_steps < 0) or args.eval_every < 0:
        bad.append("--warmup, --warmup-steps and --eval-every must be >= 0")
    if not 0.0 <= args.min_lr_ratio <= 1.0:
        bad.append("--min-lr-ratio must be in [0, 1]")
    if args.lr <= 0 or args.wd < 0 or args.clip < 0:
        bad.append("--lr must be > 0, --wd and --clip >= 0")
    if bad:
        ap.error("; ".join(bad))
    return ap, args


def emit(obj, as_json):
    if as_json:
        print(json.dumps(obj), flush=True)
    else:
        print("  ".join(f"{k}={v}" for k, v in obj.items()), flush=True)


def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # Linux: KiB


def main(argv):
    ap, args = parse_args(argv)
    if args.reuse_memory and os.environ.get("MALLOC_MMAP_MAX_") != "0":
        env = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 46))
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    # Before torch (and its OpenMP runtime and OpenBLAS) load.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))

    import torch
    import torch.nn.functional as F
    sys.path.insert(0, MODEL_REF_DIR)
    from model_ref import CausalLM, count_params, decay_groups

    try:
        with open(args.config) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        ap.error(f"--config {args.config}: {e}")
    V = int(cfg["vocab_size"])

    data = None
    if args.text:
        if V < 257:
            ap.error(f"--config {args.config}: vocab_size {V} < 257 (byte-level text mode needs ids 0..256)")
        try:
            with open(args.text, "rb") as f:
                data = f.read()
        except OSError as e:
            ap.error(f"--text {args.text}: {e}")
        split = len(data) * 9 // 10
        if split < 4 * (args.seq + 1) or len(data) - split < 2 * (args.seq + 1):
            ap.error(f"--text {args.text} ({len(data)} bytes) is too short for --seq {args.seq}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = CausalLM(cfg)
    model.train()
    groups, _, _ = decay_groups(model, args.wd)
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=args.wd)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = count_params(model)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)

    def train_step(fwd):
        """One optimizer step; fwd() returns (loss for the gradient, CE loss, aux loss). Returns floats."""
        opt.zero_grad(set_to_none=True)
        with autocast():
            total, ce, aux = fwd()
        total.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, args.clip) if args.clip > 0 else None
        opt.step()
        return float(ce), float(aux), (float(gn) if gn is not None else None)

    common = {
        "config": os.path.basename(args.config),
        "model_type": cfg.get("model_type"),
        "params": n_params,
        "batch": args.batch,
        "seq": args.seq,
        "threads": args.threads,
        "dtype": "bf16-autocast" if args.bf16 else "f32",
        "attention": "manual",
        "torch": torch.__version__,
        "malloc_reuse": os.environ.get("MALLOC_MMAP_MAX_") == "0",
    }

    if data is None:
        # ---- benchmark mode: random token ids, time steady-state steps
        gen = torch.Generator().manual_seed(args.seed + 1)
        total_steps = args.warmup + args.steps
        batches = [torch.randint(0, V, (args.batch, args.seq), generator=gen) for _ in range(total_steps)]
        times, losses = [], []
        for i, ids in enumerate(batches):
            def fwd():
                out = model(ids)
                return out["total"], out["loss"].detach(), out["aux_loss"].detach()
            t0 = time.perf_counter()
            ce, _, _ = train_step(fwd)
            dt = time.perf_counter() - t0
            losses.append(ce)
            if i >= args.warmup:
                times.append(dt)
        med = statistics.median(times)
        emit({
            "tokens_per_s": round(args.batch * args.seq / med, 2),
            "step_ms_median": round(med * 1e3, 2),
            "step_ms_min": round(min(times) * 1e3, 2),
            "step_ms_max": round(max(times) * 1e3, 2),
            "peak_rss_mb": peak_rss_mb(),
            "params": n_params,
            "steps": args.steps,
            "warmup": args.warmup,
            "torch": torch.__version__,
            "threads": args.threads,
            "first_loss": round(losses[0], 5),
            "last_loss": round(losses[-1], 5),
            **{k: v for k, v in common.items() if k not in ("params", "threads", "torch")},
        }, args.json)
        return 0

    # ---- text mode: byte-level training with validation
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.long)
    split = len(data) * 9 // 10
    W = args.seq + 1
    offs = torch.arange(W)

    def windows(starts):
        w = buf[starts[:, None] + offs[None, :]]
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def ce_loss(logits, y):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))

    train_gen = torch.Generator().manual_seed(args.seed + 1)
    val_gen = torch.Generator().manual_seed(args.seed + 2)
    # Train starts in [0, split - W], validation starts in [split, len - W] (windows never cross the split).
    val_starts = [torch.randint(split, len(data) - W + 1, (args.batch,), generator=val_gen)
                  for _ in range(args.eval_batches)]

    @torch.no_grad()
    def validate():
        model.eval()  # no aux loss in eval mode
        tot = 0.0
        for s in val_starts:
            x, y = windows(s)
            with autocast():
                logits = model(x)["logits"]
            tot += float(ce_loss(logits, y))
        model.train()
        return tot / len(val_starts)

    N = args.steps
    Wu = args.warmup_steps if args.warmup_steps is not None else max(1, N // 10)
    floor = args.min_lr_ratio

    def lr_at(s):
        if Wu > 0 and s <= Wu:
            return args.lr * s / Wu
        progress = (s - Wu) / max(1, N - Wu)
        return args.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    times, val_loss = [], None
    t_start = time.perf_counter()
    for s in range(1, N + 1):
        lr = lr_at(s)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = windows(torch.randint(0, split - W + 1, (args.batch,), generator=train_gen))

        def fwd():
            out = model(x)
            ce = ce_loss(out["logits"], y)
            return ce + out["aux_loss"], ce.detach(), out["aux_loss"].detach()

        t0 = time.perf_counter()
        ce, aux, gn = train_step(fwd)
        dt = time.perf_counter() - t0
        if s > args.warmup:
            times.append(dt)
        evaluated = (args.eval_every and s % args.eval_every == 0) or s == N
        if evaluated:
            val_loss = validate()
        if evaluated or s % args.log_every == 0 or s == 1:
            emit({"step": s, "loss": round(ce, 5), "lr": lr, "val_loss": round(val_loss, 5) if evaluated else None,
                  "aux_loss": round(aux, 6), "grad_norm": round(gn, 4) if gn is not None else None,
                  "ms": round(dt * 1e3, 1)}, args.json)
    wall = time.perf_counter() - t_start
    med = statistics.median(times) if times else float("nan")
    emit({
        "final_val_loss": round(val_loss, 5),
        "tokens_per_s": round(args.batch * args.seq / med, 2) if times else None,
        "step_ms_median": round(med * 1e3, 2) if times else None,
        "peak_rss_mb": peak_rss_mb(),
        "params": n_params,
        "steps": N,
        "torch": torch.__version__,
        "threads": args.threads,
        "text": os.path.basename(args.text),
        "bytes_train": split,
        "bytes_val": len(data) - split,
        "lr": args.lr,
        "warmup_steps": Wu,
        "min_lr_ratio": floor,
        "eval_batches": args.eval_batches,
        "seed": args.seed,
        "wall_s": round(wall, 2),
        "uniform_loss": round(math.log(256.0), 5),
        **{k: v for k, v in common.items() if k not in ("params", "threads", "torch")},
    }, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
