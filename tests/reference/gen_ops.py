#!/usr/bin/python3
"""PyTorch reference outputs for lmforge's ops and optimizers (tests/core/reference_test.cpp).

Run with Debian's python3-torch (call /usr/bin/python3 explicitly, not a pyenv python):

    /usr/bin/python3 tests/reference/gen_ops.py [--out DIR]

Writes DIR/ops.safetensors and DIR/optim.safetensors (DIR defaults to tests/reference/fixtures next to this
script). Inputs are drawn in float64 from fixed seeds and stored as F32; every reference is then computed in
float32 with PyTorch's own ops. For each op case "<case>" the file holds the inputs "<case>.<input>", a random
cotangent "<case>.R", the output "<case>.out" and the gradients of loss = sum(out * R) as "<case>.grad.<input>".
Integer inputs (ids, targets, indices) are stored as I32. Scalar settings (eps, window, offsets, ...) are written
out in both this script and the C++ test; keep them in step.
"""
import argparse
import json
import os
import struct

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------------------
# safetensors writer (no Python safetensors package on Debian): u64 LE header length, compact JSON header with
# sorted keys padded with spaces to a multiple of 8, then the tensors back to back in name order.


def save_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    dtypes = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32"}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# helpers

OPS = {}


def randn(*shape, scale=1.0):
    """float64 normal draws stored as float32 (the stored input *is* the float32 value)."""
    return (torch.randn(*shape, dtype=torch.float64) * scale).float()


def uniform(*shape, lo=-1.0, hi=1.0):
    return (torch.rand(*shape, dtype=torch.float64) * (hi - lo) + lo).float()


def case(name, inputs, fn, diff=None):
    """Stores inputs, R, fn(**inputs) and the gradients of sum(out * R) w.r.t. the float inputs in `diff`
    (default: every float input)."""
    leaves = {}
    for k, v in inputs.items():
        OPS[f"{name}.{k}"] = v.clone()
        if v.is_floating_point() and (diff is None or k in diff):
            leaves[k] = v.clone().requires_grad_(True)
        else:
            leaves[k] = v.clone()
    out = fn(**leaves)
    R = torch.randn(out.shape, dtype=torch.float64).float()
    (out * R).sum().backward()
    OPS[f"{name}.R"] = R
    OPS[f"{name}.out"] = out.detach().clone()
    for k, v in leaves.items():
        if v.requires_grad:
            OPS[f"{name}.grad.{k}"] = v.grad.detach().clone()


def ids(values, shape=None):
    t = torch.tensor(values, dtype=torch.int32)
    return t.reshape(shape) if shape is not None else t


# ---------------------------------------------------------------------------------------------------------------
# ops


def gen_linear_algebra():
    # matmul(a, b, trans_a, trans_b): a [..., M, K] (or [..., K, M]), b [K, N] (or [N, K]) shared or batched.
    for ta in (0, 1):
        for tb in (0, 1):
            a = randn(7, 5) if ta else randn(5, 7)
            b = randn(6, 7) if tb else randn(7, 6)
            case(f"matmul.t{ta}{tb}", {"a": a, "b": b},
                 lambda a, b, ta=ta, tb=tb: torch.matmul(a.t() if ta else a, b.t() if tb else b))
    # Shared weight across leading dims.
    case("matmul.shared", {"a": randn(2, 3, 5, 4), "b": randn(4, 6)}, lambda a, b: torch.matmul(a, b))
    case("matmul.shared_ta", {"a": randn(2, 4, 5), "b": randn(4, 6)},
         lambda a, b: torch.matmul(a.transpose(-1, -2), b))
    # Batched with the same leading dims, all transposes.
    for ta in (0, 1):
        for tb in (0, 1):
            a = randn(3, 4, 5) if ta else randn(3, 5, 4)
            b = randn(3, 6, 4) if tb else randn(3, 4, 6)
            case(f"matmul.batched_t{ta}{tb}", {"a": a, "b": b},
                 lambda a, b, ta=ta, tb=tb: torch.matmul(a.transpose(-1, -2) if ta else a,
                                                         b.transpose(-1, -2) if tb else b))
    # nn.Linear without bias (HF weight layout [out, in]).
    case("linear", {"x": randn(2, 3, 8), "w": randn(5, 8, scale=0.3)}, lambda x, w: F.linear(x, w))


def gen_elementwise():
    a = randn(2, 3, 4)
    shapes = {"same": (2, 3, 4), "row": (4,), "suffix": (3, 4), "scalar": (1,)}
    for opname, op in (("add", torch.add), ("sub", torch.sub), ("mul", torch.mul)):
        for sname, shape in shapes.items():
            case(f"{opname}.{sname}", {"a": a, "b": randn(*shape)}, lambda a, b, op=op: op(a, b))
    case("scale", {"a": a}, lambda a: a * -2.5)
    case("sum", {"a": a}, lambda a: a.sum().reshape(1))
    case("mean", {"a": a}, lambda a: a.mean().reshape(1))
    b = randn(2, 3, 2)
    case("transpose", {"a": a}, lambda a: a.transpose(0, 2).contiguous())
    case("slice", {"a": a}, lambda a: a[:, :, 1:3].contiguous())
    case("concat", {"a": a, "b": b}, lambda a, b: torch.cat([a, b], dim=-1))
    case("reshape", {"a": a}, lambda a: a.reshape(6, 4))


class LlamaRMSNorm(torch.nn.Module):
    """transformers.models.llama.modeling_llama.LlamaRMSNorm."""

    def __init__(self, weight, eps):
        super().__init__()
        self.weight = weight
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def gen_layers():
    case("rmsnorm", {"x": randn(2, 3, 16), "w": uniform(16, lo=0.5, hi=1.5)},
         lambda x, w: LlamaRMSNorm(w, 1e-5)(x))
    # Small-magnitude rows, where eps matters.
    case("rmsnorm_eps", {"x": randn(4, 8, scale=1e-3), "w": uniform(8, lo=0.5, hi=1.5)},
         lambda x, w: LlamaRMSNorm(w, 1e-6)(x))

    # Embedding with repeated ids (gradients accumulate).
    case("embedding", {"w": randn(10, 4), "ids": ids([3, 1, 3, 9, 0, 3], (2, 3))},
         lambda w, ids: F.embedding(ids.long(), w))

    case("silu", {"x": randn(4, 10, scale=2.0)}, lambda x: F.silu(x))
    case("swiglu", {"g": randn(4, 10, scale=2.0), "u": randn(4, 10)}, lambda g, u: F.silu(g) * u)
    case("softmax", {"x": randn(3, 4, 9, scale=3.0)}, lambda x: torch.softmax(x, dim=-1))

    # Cross-entropy, mean over targets != -100.
    case("cross_entropy", {"logits": randn(6, 11, scale=2.0), "targets": ids([3, -100, 0, 10, -100, 7])},
         lambda logits, targets: F.cross_entropy(logits, targets.long(), ignore_index=-100).reshape(1))

    # Top-k values (descending) of each row; gradients flow to the selected entries.
    case("topk", {"x": randn(5, 8)}, lambda x: torch.topk(x, 3, dim=-1).values)
    OPS["topk.indices"] = torch.topk(OPS["topk.x"], 3, dim=-1).indices.int()

    # index_select rows (gather_rows) and index_add_ rows (scatter_add_rows), repeated indices.
    case("gather_rows", {"x": randn(6, 4), "idx": ids([2, 0, 2, 5, 2])},
         lambda x, idx: torch.index_select(x, 0, idx.long()))
    case("scatter_add_rows", {"src": randn(5, 4), "idx": ids([1, 6, 1, 0, 1])},
         lambda src, idx: torch.zeros(7, 4).index_add_(0, idx.long(), src))


# ---- RoPE ----


def rope_cos_sin_hf(T, rot, theta, pos0):
    """LlamaRotaryEmbedding (float32 inv_freq, emb = cat(freqs, freqs)): cos/sin [T, rot]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rot, 2).float() / rot))
    t = torch.arange(pos0, pos0 + T, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_half(x, rot, theta, pos0):
    """HF apply_rotary_pos_emb on x [B, T, H, D]; dims past `rot` pass through (partial rotary, as GPT-NeoX)."""
    T = x.shape[1]
    cos, sin = rope_cos_sin_hf(T, rot, theta, pos0)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    xr, xp = x[..., :rot], x[..., rot:]
    return torch.cat((xr * cos + rotate_half(xr) * sin, xp), dim=-1)


def rope_interleaved(x, rot, theta, pos0):
    """Pairs (2i, 2i+1) rotated by angle pos * theta^(-2i/rot) (Meta Llama / GPT-J layout)."""
    B, T, H, D = x.shape
    inv_freq = 1.0 / (theta ** (torch.arange(0, rot, 2).float() / rot))
    t = torch.arange(pos0, pos0 + T, dtype=torch.float32)
    ang = torch.outer(t, inv_freq)[None, :, None, :]  # [1, T, 1, rot/2]
    cos, sin = ang.cos(), ang.sin()
    xr = x[..., :rot].reshape(B, T, H, rot // 2, 2)
    a, b = xr[..., 0], xr[..., 1]
    y = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).reshape(B, T, H, rot)
    return torch.cat((y, x[..., rot:]), dim=-1)


def gen_rope():
    theta = 10000.0
    # (name, B, T, H, D, rot, pos0) -- keep in step with reference_test.cpp
    for layout, fn in (("half", rope_half), ("inter", rope_interleaved)):
        for suffix, (B, T, H, D, rot, pos0) in (("full", (2, 5, 3, 8, 8, 37)), ("partial", (1, 4, 2, 12, 8, 3))):
            case(f"rope.{layout}_{suffix}", {"x": randn(B, T, H, D)},
                 lambda x, fn=fn, rot=rot, pos0=pos0: fn(x, rot, theta, pos0))
    # The tables themselves: cos/sin [T, rot/2] for positions 37..41, rot 8, computed in float64.
    inv_freq = 1.0 / (theta ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8))
    ang = torch.outer(torch.arange(37, 42, dtype=torch.float64), inv_freq)
    OPS["rope.table.cos"] = ang.cos().float()
    OPS["rope.table.sin"] = ang.sin().float()


# ---- attention ----


def attention_ref(q, k, v, causal, window, q_offset, scale):
    """Manual softmax(QK^T * scale + mask) V on q [B, Tq, Hq, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv].
    Query t sits at position q_offset + t and sees key j iff j <= pos (causal) and pos - window < j (window > 0).
    GQA: query head h uses kv head h // (Hq / Hkv) (HF repeat_kv == repeat_interleave)."""
    B, Tq, Hq, Dk = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    rep = Hq // Hkv
    kk = k.repeat_interleave(rep, dim=2).permute(0, 2, 1, 3)  # [B, Hq, Tk, Dk]
    vv = v.repeat_interleave(rep, dim=2).permute(0, 2, 1, 3)  # [B, Hq, Tk, Dv]
    qq = q.permute(0, 2, 1, 3)  # [B, Hq, Tq, Dk]
    scores = torch.matmul(qq, kk.transpose(-1, -2)) * scale
    pos = torch.arange(Tq)[:, None] + q_offset
    j = torch.arange(Tk)[None, :]
    visible = torch.ones(Tq, Tk, dtype=torch.bool)
    if causal:
        visible &= j <= pos
        if window > 0:
            visible &= j > pos - window
    mask = torch.zeros(Tq, Tk).masked_fill(~visible, float("-inf"))
    p = torch.softmax(scores + mask, dim=-1)
    return torch.matmul(p, vv).permute(0, 2, 1, 3).contiguous()  # [B, Tq, Hq, Dv]


# (name, B, Tq, Tk, Hq, Hkv, Dk, Dv, causal, window, q_offset, scale (0: 1/sqrt(Dk))) -- keep in step with the test
ATTENTION_CASES = [
    ("mha", 2, 6, 6, 2, 2, 8, 8, True, 0, 0, 0.0),
    ("gqa", 1, 7, 7, 4, 2, 8, 8, True, 0, 0, 0.0),
    ("window", 1, 9, 9, 2, 1, 4, 4, True, 3, 0, 0.0),
    ("dkdv_offset", 2, 3, 8, 4, 2, 8, 6, True, 4, 5, 0.3),
    ("noncausal", 1, 4, 6, 2, 1, 8, 4, False, 0, 0, 0.0),
    ("long", 1, 80, 80, 2, 1, 8, 8, True, 0, 0, 0.0),
    ("long_window", 1, 80, 80, 2, 1, 8, 8, True, 20, 0, 0.0),
]


def gen_attention():
    for name, B, Tq, Tk, Hq, Hkv, Dk, Dv, causal, window, q_offset, scale in ATTENTION_CASES:
        s = scale if scale > 0 else 1.0 / Dk ** 0.5
        case(f"attention.{name}", {"q": randn(B, Tq, Hq, Dk), "k": randn(B, Tk, Hkv, Dk), "v": randn(B, Tk, Hkv, Dv)},
             lambda q, k, v, c=causal, w=window, o=q_offset, s=s: attention_ref(q, k, v, c, w, o, s))


# ---------------------------------------------------------------------------------------------------------------
# optimizers


def gen_optim():
    out = {}
    steps = 5
    # Parameters (names "w1", "b", "w2") and per-step gradients. Step scales make clipping active on some steps
    # (global norm > 1) and inactive on others.
    shapes = {"w1": (4, 6), "b": (6,), "w2": (3, 5)}
    grad_scale = [2.0, 0.05, 1.0, 0.02, 3.0]

    def make(prefix):
        init = {n: randn(*s) for n, s in shapes.items()}
        grads = [{n: randn(*s, scale=grad_scale[i] / 4.0) for n, s in shapes.items()} for i in range(steps)]
        for n in shapes:
            out[f"{prefix}.init.{n}"] = init[n].clone()
            for i in range(steps):
                out[f"{prefix}.step{i}.grad.{n}"] = grads[i][n].clone()
        params = {n: torch.nn.Parameter(init[n].clone()) for n in shapes}
        return params, grads

    # AdamW, lr 3e-3, betas (0.9, 0.95), eps 1e-8; group 0 (w1, w2) weight_decay 0.1, group 1 (b) weight_decay 0
    # and half the lr; clip_grad_norm_(max_norm=1.0) over all parameters before each step.
    params, grads = make("adamw")
    opt = torch.optim.AdamW([
        {"params": [params["w1"], params["w2"]], "weight_decay": 0.1},
        {"params": [params["b"]], "weight_decay": 0.0, "lr": 1.5e-3},
    ], lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False)
    norms = []
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.grad = grads[i][n].clone()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm=1.0)))
        for n, p in params.items():
            out[f"adamw.step{i}.clipped.{n}"] = p.grad.detach().clone()
        opt.step()
        for n, p in params.items():
            out[f"adamw.step{i}.param.{n}"] = p.detach().clone()
    out["adamw.norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, p in params.items():
        st = opt.state[p]
        out[f"adamw.exp_avg.{n}"] = st["exp_avg"].clone()
        out[f"adamw.exp_avg_sq.{n}"] = st["exp_avg_sq"].clone()

    # SGD, lr 0.05, momentum 0.9, nesterov, dampening 0; group 0 (w1, w2) weight_decay 0.01, group 1 (b)
    # weight_decay 0 and twice the lr. No clipping.
    params, grads = make("sgd")
    opt = torch.optim.SGD([
        {"params": [params["w1"], params["w2"]], "weight_decay": 0.01},
        {"params": [params["b"]], "weight_decay": 0.0, "lr": 0.1},
    ], lr=0.05, momentum=0.9, nesterov=True, dampening=0.0, weight_decay=0.01, foreach=False)
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.grad = grads[i][n].clone()
        opt.step()
        for n, p in params.items():
            out[f"sgd.step{i}.param.{n}"] = p.detach().clone()
    for n, p in params.items():
        out[f"sgd.momentum_buffer.{n}"] = opt.state[p]["momentum_buffer"].clone()
    return out


# ---------------------------------------------------------------------------------------------------------------


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "fixtures"), help="output directory")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    meta = {"generator": "tests/reference/gen_ops.py", "torch": torch.__version__}

    torch.manual_seed(0)
    gen_linear_algebra()
    gen_elementwise()
    gen_layers()
    gen_rope()
    gen_attention()
    for k, v in OPS.items():
        assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
    save_safetensors(os.path.join(args.out, "ops.safetensors"), OPS, meta)

    torch.manual_seed(1)
    optim = gen_optim()
    save_safetensors(os.path.join(args.out, "optim.safetensors"), optim, meta)
    print(f"wrote {len(OPS)} + {len(optim)} tensors to {args.out}")


if __name__ == "__main__":
    main()
