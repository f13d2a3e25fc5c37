#!/usr/bin/python3
"""PyTorch reference fixtures for lmforge's whole models (src/model/): logits, loss, every parameter's gradient
and five AdamW steps, for three small configs (model_ref.py holds the models).

Run with Debian's python3-torch (call /usr/bin/python3 explicitly, not a pyenv python):

    /usr/bin/python3 tests/reference/gen_model.py [--out DIR] [--no-check]

For each case <case> writes DIR/model_<case>.json (the HF config.json) and DIR/model_<case>.safetensors:

    <param name>            initial weights under their HF names (F32); also the buffer
                            model.layers.N.mlp.gate.e_score_correction_bias when topk_method is noaux_tc
    ids                     I32 [B, T]
    logits                  F32 [B, T, V]     (training mode: same as eval, there is no dropout)
    loss                    F32 [1]           CE, HF shift: logits[:, :-1] vs ids[:, 1:], mean
    aux_loss                F32 [1]           sum over MoE layers of the gate aux loss (0 when none)
    grad.<param name>       F32               d(loss + aux_loss)/d param, every trainable parameter
    adamw.losses            F32 [5]           loss + aux_loss before each of 5 AdamW steps on the same batch
    adamw.grad_norms        F32 [5]           global grad norm returned by clip_grad_norm_ (before clipping)
    adamw.<param name>      F32               weights after the 5 steps

AdamW: torch.optim.AdamW(lr 1e-2, betas (0.9, 0.95), eps 1e-8, foreach=False), two groups: weight_decay 0.1 for
params with dim >= 2 whose name contains neither "embed" nor "norm", 0 for the rest;
clip_grad_norm_(all params, 1.0) before each step. The e_score_correction_bias buffer is not trained.

The generator also checks itself (disable with --no-check): routing margins (no near ties, > 1e-4, in any
forward of the f32 and f64 runs), float32 vs float64 gradients, directional finite differences in float64 per
parameter,. It prints the errors.
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_ops import save_safetensors  # noqa: E402
from model_ref import CausalLM, MoEGate, decay_groups  # noqa: E402

ADAM = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip=1.0, steps=5)
MARGIN = 1e-4

COMMON = {
    "vocab_size": 96,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "initializer_range": 0.02,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
}

CASES = {
    "llama_gqa_sliding": dict(COMMON, **{
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "num_key_value_heads": 2,
        "head_dim": 8,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
        "sliding_window": 4,
        "tie_word_embeddings": False,
    }),
    "dsv3_mla_moe_sigmoid": dict(COMMON, **{
        "model_type": "deepseek_v3",
        "architectures": ["DeepseekV3ForCausalLM"],
        "num_key_value_heads": 4,
        "rope_theta": 100.0,
        "q_lora_rank": 24,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4,
        "v_head_dim": 8,
        "moe_intermediate_size": 16,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "n_shared_experts": 1,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "n_group": 4,
        "topk_group": 2,
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "aux_loss_alpha": 0.0,
        "seq_aux": False,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8,
                         "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.707},
        "tie_word_embeddings": True,
    }),
    "dsv3_moe_softmax_greedy": dict(COMMON, **{
        "model_type": "deepseek_v3",
        "architectures": ["DeepseekV3ForCausalLM"],
        "num_key_value_heads": 4,
        "q_lora_rank": None,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4,
        "v_head_dim": 8,
        "moe_intermediate_size": 16,
        "num_hidden_layers": 2,
        "first_k_dense_replace": 0,
        "moe_layer_freq": 1,
        "n_shared_experts": 1,
        "n_routed_experts": 6,
        "num_experts_per_tok": 2,
        "scoring_func": "softmax",
        "topk_method": "greedy",
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "aux_loss_alpha": 0.01,
        "seq_aux": False,
        "rope_scaling": None,
        "tie_word_embeddings": False,
    }),
}
SHAPES = {"llama_gqa_sliding": (2, 16), "dsv3_mla_moe_sigmoid": (2, 16), "dsv3_moe_softmax_greedy": (2, 12)}
SEEDS = {"llama_gqa_sliding": 100, "dsv3_mla_moe_sigmoid": 200, "dsv3_moe_softmax_greedy": 300}


def init_state(model, seed):
    """Fixture weights drawn in float64 from `seed` (state_dict order) and stored as f32: std 0.02 for linear and
    embedding weights, 1 + 0.1 randn for norms (so norm gradients are exercised), std 0.5 for router weights (so
    routing is decisive), 0.1 randn for e_score_correction_bias, zeros for biases."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in model.state_dict().items():
        r = torch.randn(t.shape, generator=g, dtype=torch.float64)
        if name.endswith("norm.weight"):
            v = 1.0 + 0.1 * r
        elif name.endswith("mlp.gate.weight"):
            v = 0.5 * r
        elif name.endswith("e_score_correction_bias"):
            v = 0.1 * r
        elif name.endswith(".bias"):
            v = torch.zeros_like(r)
        else:
            v = 0.02 * r
        out[name] = v.float()
    ids = torch.randint(0, model.cfg["vocab_size"], SHAPE_CUR, generator=g, dtype=torch.int64)
    return out, ids


def make(cfg, state, dtype):
    m = CausalLM(cfg)
    m.load_state_dict({k: v.clone() for k, v in state.items()})
    m = m.to(dtype)
    m.train()
    return m


def forward_backward(m, ids):
    m.zero_grad(set_to_none=True)
    out = m(ids)
    out["total"].backward()
    return out


def run_case(name, cfg, seed):
    """Returns (tensors, min routing margin)."""
    MoEGate.margins = []
    state, ids = init_state(CausalLM(cfg), seed)
    m = make(cfg, state, torch.float32)
    out = forward_backward(m, ids)
    t = {k: v.clone() for k, v in state.items()}
    t["ids"] = ids.to(torch.int32)
    t["logits"] = out["logits"].detach().clone()
    t["loss"] = out["loss"].detach().reshape(1).clone()
    t["aux_loss"] = out["aux_loss"].detach().reshape(1).float().clone()
    for n, p in m.named_parameters():  # an expert that got no token has no gradient: zeros
        t[f"grad.{n}"] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)

    groups, _, _ = decay_groups(m, ADAM["weight_decay"])
    opt = torch.optim.AdamW(groups, lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"], foreach=False)
    params = [p for p in m.parameters()]
    losses, norms = [], []
    for _ in range(ADAM["steps"]):
        opt.zero_grad(set_to_none=True)
        o = m(ids)
        o["total"].backward()
        losses.append(float(o["total"]))
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm=ADAM["clip"])))
        opt.step()
    t["adamw.losses"] = torch.tensor(losses, dtype=torch.float32)
    t["adamw.grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, p in m.named_parameters():
        t[f"adamw.{n}"] = p.detach().clone()
    margins = MoEGate.margins
    MoEGate.margins = None
    return t, state, ids, (min(margins) if margins else float("inf"))


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def self_check(cfg, state, ids, t):
    """float64 run: routing margins, f32-vs-f64 errors, directional finite differences."""
    MoEGate.margins = []
    m64 = make(cfg, state, torch.float64)
    out = forward_backward(m64, ids)
    margin64 = min(MoEGate.margins) if MoEGate.margins else float("inf")
    MoEGate.margins = None
    res = {"margin_f64": margin64,
           "logits_f32_vs_f64": rel(t["logits"], out["logits"].detach()),
           "loss_f32_vs_f64": rel(t["loss"], out["loss"].detach().reshape(1))}
    worst, worst_name = 0.0, ""
    for n, p in m64.named_parameters():
        e = rel(t[f"grad.{n}"], p.grad if p.grad is not None else torch.zeros_like(p))
        if e > worst:
            worst, worst_name = e, n
    res["grad_f32_vs_f64_max"] = (worst, worst_name)

    # Directional finite differences per parameter tensor, float64, central, eps 1e-6.
    g = torch.Generator().manual_seed(7)
    grads = {n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
             for n, p in m64.named_parameters()}
    worst, worst_name, eps = 0.0, "", 1e-6
    with torch.no_grad():
        for n, p in m64.named_parameters():
            v = torch.randn(p.shape, generator=g, dtype=torch.float64)
            p0 = p.detach().clone()
            p.copy_(p0 + eps * v)
            lp = float(m64(ids)["total"])
            p.copy_(p0 - eps * v)
            lm = float(m64(ids)["total"])
            p.copy_(p0)
            fd = (lp - lm) / (2 * eps)
            an = float((grads[n] * v).sum())
            e = abs(fd - an) / max(abs(an), 1e-4)  # floor: FD rounding is ~1e-10 absolute
            if e > worst:
                worst, worst_name = e, n
    res["fd_directional_max_rel"] = (worst, worst_name)

    return res


def main():
    global SHAPE_CUR
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "fixtures"), help="output directory")
    ap.add_argument("--no-check", action="store_true", help="skip the float64 self-checks")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    for name, cfg in CASES.items():
        SHAPE_CUR = SHAPES[name]
        seed = SEEDS[name]
        for _ in range(50):  # reseed while any routing decision is a near tie
            t, state, ids, margin = run_case(name, cfg, seed)
            if margin > MARGIN:
                break
            print(f"[{name}] seed {seed}: routing margin {margin:.3g} <= {MARGIN}, reseeding")
            seed += 1
        else:
            raise SystemExit(f"{name}: no seed without near ties")
        for k, v in t.items():
            assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
        meta = {"generator": "tests/reference/gen_model.py", "torch": torch.__version__, "case": name,
                "seed": str(seed), "config": json.dumps(cfg, sort_keys=True),
                "adamw": json.dumps(ADAM, sort_keys=True)}
        save_safetensors(os.path.join(args.out, f"model_{name}.safetensors"), t, meta)
        tmp = os.path.join(args.out, f"model_{name}.json.tmp")
        with open(tmp, "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        os.replace(tmp, os.path.join(args.out, f"model_{name}.json"))
        n_params = sum(v.numel() for k, v in t.items() if k.startswith("grad."))
        print(f"[{name}] seed {seed} params {n_params} loss {float(t['loss']):.6f} aux {float(t['aux_loss']):.6g} "
              f"adamw.losses {[round(x, 5) for x in t['adamw.losses'].tolist()]} "
              f"min routing margin {margin:.3g}")
        if not args.no_check:
            res = self_check(cfg, state, ids, t)
            print(f"[{name}] check: " + ", ".join(f"{k} {v}" for k, v in res.items()))
            assert res["margin_f64"] > MARGIN, res
            assert res["grad_f32_vs_f64_max"][0] < 1e-4 and res["fd_directional_max_rel"][0] < 1e-5, res


if __name__ == "__main__":
    main()
