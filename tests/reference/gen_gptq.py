#!/usr/bin/python3
"""GPTQ reference (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", Algorithm 1 with lazy batch updates and the Cholesky form of H^-1), in PyTorch float64, written from
the paper for lmforge's tests. Writes tests/reference/fixtures/gptq.safetensors:

  W            F32 [rows, cols]   the weight
  H            F64 [cols, cols]   2/n X^T X of the calibration inputs X [n, cols] (with outlier channels)
  <case>.q     I32 [rows, cols]   4-bit codes 0..15
  <case>.scale F32 [rows, cols/128] (values exactly representable in f16: the stored scale)
  <case>.zero  I32 [rows, cols/128]
  <case>.loss  F64 [1]            tr((Q - W) H (Q - W)^T), the layer-output error GPTQ minimises
  rtn.loss     F64 [1]            the same for round-to-nearest with the same quantizer (GPTQ must beat it)

Cases: sym (zero 8), asym, sym_actorder (columns by decreasing diag(H); group parameters from the original
weight's groups of 128 consecutive columns -- "static groups" -- since lmforge's q4_g128 cannot hold a g_idx).
Settings shared with tests/quant/gptq_test.cpp: block 128, group 128, damping 0.01 * mean(diag(H)).

  /usr/bin/python3 tests/reference/gen_gptq.py [--out DIR]
"""
import argparse
import json
import os
import struct

import torch

GROUP = 128
BLOCK = 128
DAMP = 0.01


def save_safetensors(path, tensors):
    dtypes = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32"}
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        b = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def find_params(x, sym):
    """Per-row scale and zero of a [rows, group] slice (GPTQ's quantizer, 4 bits), scale rounded to f16."""
    xmin = torch.clamp(x.min(dim=1).values, max=0)
    xmax = torch.clamp(x.max(dim=1).values, min=0)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = -xmax
    both0 = (xmin == 0) & (xmax == 0)
    xmin[both0] = -1
    xmax[both0] = 1
    scale = ((xmax - xmin) / 15).to(torch.float16).to(torch.float64)
    zero = torch.full_like(scale, 8.0) if sym else torch.round(-xmin / scale)
    return scale, zero


def quant(w, scale, zero):
    q = torch.clamp(torch.round(w / scale) + zero, 0, 15)
    return q, scale * (q - zero)


def gptq(W, H, sym, act_order):
    W = W.clone().double()
    H = H.clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    groups = cols // GROUP
    static = None
    if act_order:  # group parameters from the original column groups
        static = [find_params(W[:, g * GROUP:(g + 1) * GROUP], sym) for g in range(groups)]
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    else:
        perm = torch.arange(cols)
    H += DAMP * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    scales = torch.zeros(rows, groups, dtype=torch.float64)
    zeros = torch.zeros(rows, groups, dtype=torch.float64)
    cur = None
    for i1 in range(0, cols, BLOCK):
        i2 = min(i1 + BLOCK, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            g = col // GROUP
            if act_order:
                cur = static[g]
            elif (i1 + i) % GROUP == 0:
                cur = find_params(W1[:, i:i + GROUP], sym)
            scales[:, g], zeros[:, g] = cur
            w = W1[:, i]
            d = Hinv1[i, i]
            q, dq = quant(w, cur[0], cur[1])
            codes[:, i1 + i] = q
            Q[:, i1 + i] = dq
            err = (w - dq) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    inv = torch.argsort(perm)
    return codes[:, inv], Q[:, inv], scales, zeros


def loss(Q, W, H):
    D = Q - W.double()
    return torch.trace(D @ H @ D.T).reshape(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    args = ap.parse_args()
    torch.manual_seed(1234)
    rows, cols, n = 24, 384, 600
    W = (torch.randn(rows, cols, dtype=torch.float64) * 0.05).float()
    W[:, 5] += 0.2  # a column with larger weights
    X = torch.randn(n, cols, dtype=torch.float64)
    X[:, [3, 100, 260]] *= 8.0  # outlier input channels, as transformer activations have
    X[:, 200] = 0.0  # a dead input channel
    H = 2.0 / n * (X.T @ X)
    out = {"W": W, "H": H}
    for name, sym, act in [("sym", True, False), ("asym", False, False), ("sym_actorder", True, True)]:
        codes, Q, scales, zeros = gptq(W, H, sym, act)
        out[name + ".q"] = codes.to(torch.int32)
        out[name + ".scale"] = scales.float()
        out[name + ".zero"] = zeros.to(torch.int32)
        out[name + ".loss"] = loss(Q, W, H)
    # round-to-nearest with the same quantizer
    Wd = W.double()
    Q = torch.zeros_like(Wd)
    for g in range(cols // GROUP):
        sl = slice(g * GROUP, (g + 1) * GROUP)
        s, z = find_params(Wd[:, sl], True)
        Q[:, sl] = quant(Wd[:, sl], s.unsqueeze(1), z.unsqueeze(1))[1]
    out["rtn.loss"] = loss(Q, W, H)
    os.makedirs(args.out, exist_ok=True)
    save_safetensors(os.path.join(args.out, "gptq.safetensors"), out)
    for k in ["sym", "asym", "sym_actorder", "rtn"]:
        print(k, float(out[k + ".loss"]))


if __name__ == "__main__":
    main()
