#!/usr/bin/python3
"""Plain-PyTorch reference of the decoder models lmforge implements (src/model/), for parity fixtures and the
training-throughput reference. No `transformers` needed; the semantics follow Hugging Face's
`modeling_llama.py` (model_type "llama") and DeepSeek's V2/V3 remote code `modeling_deepseek.py`
(model_type "deepseek_v3"), with parameter names exactly as in those checkpoints:

    model.embed_tokens.weight
    model.layers.N.input_layernorm.weight, model.layers.N.post_attention_layernorm.weight
    model.layers.N.self_attn.{q_proj,k_proj,v_proj,o_proj}.{weight,bias}                      (llama)
    model.layers.N.self_attn.{q_proj | q_a_proj,q_a_layernorm,q_b_proj}.weight,
        kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj                                  (deepseek_v3, MLA)
    model.layers.N.mlp.{gate_proj,up_proj,down_proj}.weight                                     (dense SwiGLU)
    model.layers.N.mlp.gate.weight, model.layers.N.mlp.gate.e_score_correction_bias (buffer, noaux_tc only),
        model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight,
        model.layers.N.mlp.shared_experts.{gate,up,down}_proj.weight                             (DeepSeekMoE)
    model.norm.weight, lm_head.weight (absent when tie_word_embeddings)

Our extension (both model types): `layer_types` ("full_attention" / "sliding_attention" per layer) with
`sliding_window` W; a sliding layer lets query i see key j iff 0 <= i - j < W.

Usage:
    from model_ref import CausalLM
    m = CausalLM(json.load(open("config.json")))
    out = m(ids)            # dict: logits [B,T,V], loss (CE, HF shift), aux_loss (sum over MoE layers), total
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def acc_dtype(dt):
    """Where HF computes in float32 (softmax, router, loss): float32, or float64 in the float64 self-checks."""
    return torch.float64 if dt == torch.float64 else torch.float32

# ---------------------------------------------------------------------------------------------------------------
# building blocks


class RMSNorm(nn.Module):
    """LlamaRMSNorm / DeepseekV2RMSNorm: x * rsqrt(mean(x^2) + eps) in f32, times weight."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x):
        dt = x.dtype
        h = x.to(torch.float32) if dt in (torch.float16, torch.bfloat16) else x
        var = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(var + self.variance_epsilon)
        return self.weight * h.to(dt)


class SwiGLU(nn.Module):
    """LlamaMLP / DeepseekV3MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden, inter, bias=False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=bias)
        self.up_proj = nn.Linear(hidden, inter, bias=bias)
        self.down_proj = nn.Linear(inter, hidden, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def default_inv_freq(dim, base, dtype):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim)).to(dtype)


def yarn_find_correction_dim(num_rotations, dim, base, max_pos):
    return (dim * math.log(max_pos / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_find_correction_range(low_rot, high_rot, dim, base, max_pos):
    low = math.floor(yarn_find_correction_dim(low_rot, dim, base, max_pos))
    high = math.ceil(yarn_find_correction_dim(high_rot, dim, base, max_pos))
    return max(low, 0), min(high, dim - 1)


def yarn_get_mscale(scale=1.0, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_linear_ramp_mask(lo, hi, dim):
    if lo == hi:
        hi += 0.001
    return torch.clamp((torch.arange(dim, dtype=torch.float32) - lo) / (hi - lo), 0, 1)


def rope_tables(cfg, dim, T, dtype):
    """cos, sin [T, dim] as HF/DeepSeek cache them (emb = cat(freqs, freqs)). Supports rope_scaling None,
    {"type"/"rope_type": "default"} and DeepSeek's YaRN (DeepseekV2YarnRotaryEmbedding)."""
    base = float(cfg.get("rope_theta", 10000.0))
    rs = cfg.get("rope_scaling") or None
    kind = (rs.get("rope_type") or rs.get("type")) if rs else "default"
    mscale = 1.0
    if kind == "default":
        inv_freq = default_inv_freq(dim, base, torch.float32)
    elif kind == "yarn":
        factor = float(rs["factor"])
        orig = int(rs.get("original_max_position_embeddings", 4096))
        beta_fast = float(rs.get("beta_fast", 32))
        beta_slow = float(rs.get("beta_slow", 1))
        ms = float(rs.get("mscale", 1))
        ms_all = float(rs.get("mscale_all_dim", 0))
        pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        freq_extra = 1.0 / pos_freqs
        freq_inter = 1.0 / (factor * pos_freqs)
        low, high = yarn_find_correction_range(beta_fast, beta_slow, dim, base, orig)
        inv_freq_mask = 1.0 - yarn_linear_ramp_mask(low, high, dim // 2)
        inv_freq = freq_inter * (1 - inv_freq_mask) + freq_extra * inv_freq_mask
        mscale = float(yarn_get_mscale(factor, ms) / yarn_get_mscale(factor, ms_all))
    else:
        raise ValueError(f"rope_scaling type {kind!r} not supported by the reference")
    t = torch.arange(T, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * mscale).to(dtype), (emb.sin() * mscale).to(dtype)


def attention_mask(T, window, dtype):
    """Additive mask [T, T]: 0 where key j is visible from query i (j <= i, and i - j < window if window)."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = j <= i
    if window:
        visible &= (i - j) < window
    return torch.zeros(T, T, dtype=dtype).masked_fill(~visible, float("-inf"))


def sdpa_manual(q, k, v, mask, scale):
    """q [B,H,T,Dk], k [B,H,T,Dk], v [B,H,T,Dv] -> [B,T,H*Dv]; softmax in f32 (all f32 here)."""
    w = torch.matmul(q, k.transpose(2, 3)) * scale + mask
    w = torch.softmax(w, dim=-1, dtype=acc_dtype(q.dtype)).to(q.dtype)
    o = torch.matmul(w, v)
    B, H, T, Dv = o.shape
    return o.transpose(1, 2).reshape(B, T, H * Dv)


def layer_window(cfg, idx):
    lt = cfg.get("layer_types")
    if lt and lt[idx] == "sliding_attention":
        return int(cfg["sliding_window"])
    return 0


# ---------------------------------------------------------------------------------------------------------------
# attention


class LlamaAttention(nn.Module):
    def __init__(self, cfg, idx):
        super().__init__()
        D = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.Hkv = cfg.get("num_key_value_heads") or self.H
        self.hd = cfg.get("head_dim") or D // self.H
        bias = bool(cfg.get("attention_bias", False))
        self.q_proj = nn.Linear(D, self.H * self.hd, bias=bias)
        self.k_proj = nn.Linear(D, self.Hkv * self.hd, bias=bias)
        self.v_proj = nn.Linear(D, self.Hkv * self.hd, bias=bias)
        self.o_proj = nn.Linear(self.H * self.hd, D, bias=bias)
        self.cfg, self.window = cfg, layer_window(cfg, idx)

    def forward(self, x, ctx):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.Hkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.Hkv, self.hd).transpose(1, 2)
        cos, sin = ctx.rope(self.hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.H // self.Hkv  # HF repeat_kv: query head h uses kv head h // rep
        if rep > 1:  # as HF's repeat_kv: no copy when every query head has its own KV head
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        o = sdpa_manual(q, k, v, ctx.mask(self.window), self.hd ** -0.5)
        return self.o_proj(o)


class MLAttention(nn.Module):
    """DeepseekV2Attention / DeepseekV3Attention (eager), MLA without cache absorption."""

    def __init__(self, cfg, idx):
        super().__init__()
        D = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.q_lora = cfg.get("q_lora_rank")
        self.kv_lora = cfg["kv_lora_rank"]
        self.nope = cfg["qk_nope_head_dim"]
        self.rope = cfg["qk_rope_head_dim"]
        self.vd = cfg["v_head_dim"]
        self.qd = self.nope + self.rope
        bias = bool(cfg.get("attention_bias", False))
        if self.q_lora is None:
            self.q_proj = nn.Linear(D, self.H * self.qd, bias=False)
        else:
            self.q_a_proj = nn.Linear(D, self.q_lora, bias=bias)
            self.q_a_layernorm = RMSNorm(self.q_lora, 1e-6)  # DeepSeek: default eps 1e-6, not rms_norm_eps
            self.q_b_proj = nn.Linear(self.q_lora, self.H * self.qd, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, self.kv_lora + self.rope, bias=bias)
        self.kv_a_layernorm = RMSNorm(self.kv_lora, 1e-6)
        self.kv_b_proj = nn.Linear(self.kv_lora, self.H * (self.nope + self.vd), bias=False)
        self.o_proj = nn.Linear(self.H * self.vd, D, bias=bias)
        self.softmax_scale = self.qd ** -0.5
        rs = cfg.get("rope_scaling") or None
        if rs:
            ms_all = rs.get("mscale_all_dim", 0)
            if ms_all:
                m = yarn_get_mscale(float(rs["factor"]), float(ms_all))
                self.softmax_scale = self.softmax_scale * m * m
        self.window = layer_window(cfg, idx)

    @staticmethod
    def apply_rope(x, cos, sin):
        """DeepSeek's apply_rotary_pos_emb: de-interleave (x0,x1,x2,x3..) -> (x0,x2,..,x1,x3,..) then rotate_half.
        Rotates pairs (x[2i], x[2i+1]) by pos * inv_freq[i]; the output is in de-interleaved order, which is the
        same for q and k, so q.k equals the interleaved complex form's."""
        B, H, T, d = x.shape
        x = x.view(B, H, T, d // 2, 2).transpose(4, 3).reshape(B, H, T, d)
        return x * cos + rotate_half(x) * sin

    def forward(self, x, ctx):
        B, T, _ = x.shape
        if self.q_lora is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, T, self.H, self.qd).transpose(1, 2)
        q_nope, q_pe = torch.split(q, [self.nope, self.rope], dim=-1)
        ckv = self.kv_a_proj_with_mqa(x)
        ckv, k_pe = torch.split(ckv, [self.kv_lora, self.rope], dim=-1)
        k_pe = k_pe.view(B, T, 1, self.rope).transpose(1, 2)
        kv = self.kv_b_proj(self.kv_a_layernorm(ckv)).view(B, T, self.H, self.nope + self.vd).transpose(1, 2)
        k_nope, v = torch.split(kv, [self.nope, self.vd], dim=-1)
        cos, sin = ctx.rope(self.rope)
        q_pe = self.apply_rope(q_pe, cos, sin)
        k_pe = self.apply_rope(k_pe, cos, sin)
        qs = torch.cat([q_nope, q_pe], dim=-1)
        ks = torch.cat([k_nope, k_pe.expand(B, self.H, T, self.rope)], dim=-1)
        o = sdpa_manual(qs, ks, v, ctx.mask(self.window), self.softmax_scale)
        return self.o_proj(o)


# ---------------------------------------------------------------------------------------------------------------
# DeepSeekMoE


class MoEGate(nn.Module):
    """DeepSeek MoEGate: V3 routing (greedy / group_limited_greedy / noaux_tc, sigmoid or softmax), V3 weight
    normalisation (routed_scaling_factor always applied), V2 auxiliary loss (aux_loss_alpha, seq_aux)."""

    # Routing margins seen by every gate call (gen_model.py checks them for near ties); None disables recording.
    margins = None

    def __init__(self, cfg):
        super().__init__()
        self.top_k = cfg["num_experts_per_tok"]
        self.E = cfg["n_routed_experts"]
        self.scoring = cfg.get("scoring_func", "softmax")
        self.topk_method = cfg.get("topk_method", "greedy")
        self.n_group = cfg.get("n_group") or 1
        self.topk_group = cfg.get("topk_group") or 1
        self.norm_topk_prob = bool(cfg.get("norm_topk_prob", False))
        self.routed_scaling_factor = float(cfg.get("routed_scaling_factor", 1.0))
        self.alpha = float(cfg.get("aux_loss_alpha", 0.0) or 0.0)
        self.seq_aux = bool(cfg.get("seq_aux", False))
        self.weight = nn.Parameter(torch.empty(self.E, cfg["hidden_size"]))
        if self.topk_method == "noaux_tc":
            self.register_buffer("e_score_correction_bias", torch.zeros(self.E))

    def _record(self, sel, k, groups=None, kg=None):
        if MoEGate.margins is None:
            return
        s = sel.detach().sort(dim=-1, descending=True).values
        MoEGate.margins.append(float((s[:, k - 1] - s[:, k]).min()))
        if groups is not None:
            g = groups.detach().sort(dim=-1, descending=True).values
            MoEGate.margins.append(float((g[:, kg - 1] - g[:, kg]).min()))

    def forward(self, x):
        B, T, D = x.shape
        h = x.reshape(-1, D)
        logits = F.linear(h.to(acc_dtype(h.dtype)), self.weight.to(acc_dtype(h.dtype)))
        if self.scoring == "softmax":
            scores = logits.softmax(dim=-1, dtype=logits.dtype)
        elif self.scoring == "sigmoid":
            scores = logits.sigmoid()
        else:
            raise ValueError(f"scoring_func {self.scoring!r}")
        N = scores.shape[0]
        if self.topk_method == "greedy":
            self._record(scores, self.top_k)
            topk_weight, topk_idx = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        elif self.topk_method in ("group_limited_greedy", "noaux_tc"):
            if self.topk_method == "noaux_tc":
                choice = scores + self.e_score_correction_bias.unsqueeze(0)
                group_scores = choice.view(N, self.n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
            else:
                choice = scores
                group_scores = scores.view(N, self.n_group, -1).max(dim=-1).values
            group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
            group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
            score_mask = group_mask.unsqueeze(-1).expand(N, self.n_group, self.E // self.n_group).reshape(N, -1)
            # DeepSeek's code fills masked experts with 0.0 (not -inf); gen_model.py checks both agree.
            tmp = choice.masked_fill(~score_mask.bool(), 0.0)
            self._record(tmp, self.top_k, group_scores if self.topk_group < self.n_group else None,
                         self.topk_group)
            topk_idx = torch.topk(tmp, k=self.top_k, dim=-1, sorted=False)[1]
            topk_weight = scores.gather(1, topk_idx)
            if MoEGate.margins is not None:
                alt = torch.topk(choice.masked_fill(~score_mask.bool(), float("-inf")), k=self.top_k, dim=-1)[1]
                same = (alt.sort(-1).values == topk_idx.sort(-1).values).all()
                MoEGate.margins.append(1.0 if bool(same) else -1.0)
        else:
            raise ValueError(f"topk_method {self.topk_method!r}")
        if self.top_k > 1 and self.norm_topk_prob:
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
        topk_weight = topk_weight * self.routed_scaling_factor

        aux = None
        if self.training and self.alpha > 0.0:
            idx_aux = topk_idx.view(B, -1)
            if self.seq_aux:
                s = scores.view(B, T, -1)
                ce = torch.zeros(B, self.E, dtype=scores.dtype)
                ce.scatter_add_(1, idx_aux, torch.ones(B, T * self.top_k, dtype=scores.dtype))
                ce = ce / (T * self.top_k / self.E)
                aux = (ce * s.mean(dim=1)).sum(dim=1).mean() * self.alpha
            else:
                ce = F.one_hot(idx_aux.view(-1), num_classes=self.E).to(scores.dtype).mean(0)
                aux = (scores.mean(0) * ce * self.E).sum() * self.alpha
        return topk_idx, topk_weight, aux


class DeepseekMoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, I = cfg["hidden_size"], cfg["moe_intermediate_size"]
        self.experts = nn.ModuleList([SwiGLU(D, I) for _ in range(cfg["n_routed_experts"])])
        self.gate = MoEGate(cfg)
        ns = cfg.get("n_shared_experts")
        self.shared_experts = SwiGLU(D, I * ns) if ns else None

    def forward(self, x):
        B, T, D = x.shape
        idx, w, aux = self.gate(x)
        h = x.reshape(-1, D)
        y = torch.zeros_like(h)
        # Each expert runs only on its tokens (gather -> expert -> weighted scatter-add), as moe_infer does.
        for e, expert in enumerate(self.experts):
            tok, slot = torch.nonzero(idx == e, as_tuple=True)
            if tok.numel() == 0:
                continue
            out = expert(h[tok]) * w[tok, slot].unsqueeze(-1).to(h.dtype)
            y = y.index_add(0, tok, out)
        y = y.view(B, T, D)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y, aux


# ---------------------------------------------------------------------------------------------------------------
# decoder


class DecoderLayer(nn.Module):
    def __init__(self, cfg, idx):
        super().__init__()
        D, eps = cfg["hidden_size"], float(cfg.get("rms_norm_eps", 1e-6))
        self.input_layernorm = RMSNorm(D, eps)
        self.post_attention_layernorm = RMSNorm(D, eps)
        if cfg["model_type"] == "deepseek_v3":
            self.self_attn = MLAttention(cfg, idx)
            moe = (cfg.get("n_routed_experts") and idx >= cfg.get("first_k_dense_replace", 0)
                   and idx % cfg.get("moe_layer_freq", 1) == 0)
            self.mlp = DeepseekMoE(cfg) if moe else SwiGLU(D, cfg["intermediate_size"])
        else:
            self.self_attn = LlamaAttention(cfg, idx)
            self.mlp = SwiGLU(D, cfg["intermediate_size"], bias=bool(cfg.get("mlp_bias", False)))

    def forward(self, x, ctx):
        x = x + self.self_attn(self.input_layernorm(x), ctx)
        h = self.post_attention_layernorm(x)
        if isinstance(self.mlp, DeepseekMoE):
            m, aux = self.mlp(h)
        else:
            m, aux = self.mlp(h), None
        return x + m, aux


class _Ctx:
    """Per-forward caches: RoPE tables per rotary dim and masks per window."""

    def __init__(self, cfg, T, dtype):
        self.cfg, self.T, self.dtype, self._rope, self._mask = cfg, T, dtype, {}, {}

    def rope(self, dim):
        if dim not in self._rope:
            self._rope[dim] = rope_tables(self.cfg, dim, self.T, self.dtype)
        return self._rope[dim]

    def mask(self, window):
        if window not in self._mask:
            self._mask[window] = attention_mask(self.T, window, self.dtype)
        return self._mask[window]


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(cfg, i) for i in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], float(cfg.get("rms_norm_eps", 1e-6)))


class CausalLM(nn.Module):
    """LlamaForCausalLM / DeepseekV3ForCausalLM. forward(ids [B,T] long) returns a dict with logits [B,T,V],
    loss (HF shift: logits[:, :-1] vs ids[:, 1:], mean, ignore_index -100), aux_loss (sum of the MoE gates'
    aux losses; only in training mode with aux_loss_alpha > 0, else 0) and total = loss + aux_loss."""

    def __init__(self, cfg):
        super().__init__()
        if cfg["model_type"] not in ("llama", "deepseek_v3"):
            raise ValueError(f"model_type {cfg['model_type']!r}")
        self.cfg = dict(cfg)
        self.model = Model(cfg)
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        self.init_weights(float(cfg.get("initializer_range", 0.02)))

    @torch.no_grad()
    def init_weights(self, std, generator=None):
        """HF _init_weights: normal(0, std) for Linear/Embedding weights, zero biases, ones for norms."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, std, generator=generator)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, MoEGate):
                m.weight.normal_(0.0, std, generator=generator)
            elif isinstance(m, RMSNorm):
                m.weight.fill_(1.0)

    def lm_weight(self):
        return self.model.embed_tokens.weight if self.tied else self.lm_head.weight

    def forward(self, ids, labels=None):
        B, T = ids.shape
        h = self.model.embed_tokens(ids)
        ctx = _Ctx(self.cfg, T, h.dtype)
        aux = h.new_zeros(())
        for layer in self.model.layers:
            h, a = layer(h, ctx)
            if a is not None:
                aux = aux + a
        h = self.model.norm(h)
        logits = F.linear(h, self.lm_weight())
        labels = ids if labels is None else labels
        V = logits.shape[-1]
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V).to(acc_dtype(logits.dtype)), labels[:, 1:].reshape(-1).long(),
                               ignore_index=-100)
        return {"logits": logits, "loss": loss, "aux_loss": aux, "total": loss + aux}


def decay_groups(model, weight_decay):
    """Two AdamW groups: weight_decay for params with dim >= 2 whose name has neither "embed" nor "norm";
    0 for the rest. Returns (groups, names_decay, names_no_decay)."""
    dec, nodec, dn, nn_ = [], [], [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and "embed" not in n and "norm" not in n:
            dec.append(p), dn.append(n)
        else:
            nodec.append(p), nn_.append(n)
    return [{"params": dec, "weight_decay": weight_decay}, {"params": nodec, "weight_decay": 0.0}], dn, nn_


def count_params(model):
    """All tensors of the checkpoint: parameters plus buffers saved under HF names (e_score_correction_bias)."""
    return sum(t.numel() for t in model.state_dict().values())
