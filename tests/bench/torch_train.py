#!/usr/bin/python3
"""PyTorch reference of the training step of tests/bench/bench_train.c.

The toy GPT of issue 6 as posgrad's pg_lm_defaults builds it (nn/transformer.c):
token embedding (vocab 256, d_model 128), 2 pre-norm blocks (LayerNorm eps 1e-5,
MultiheadAttention with one fused qkv Linear and an output Linear, both with
bias, 4 heads, causal, scale 1/sqrt(32); an MLP Linear(128, 512), exact GELU,
Linear(512, 128)), a final LayerNorm and a head Linear(128, 256) without bias,
not tied; mean cross-entropy. One step: forward + backward + Adam(lr 1e-3) step
+ zero_grad, over random tokens (batch 8, sequence 256).

The positional schemes are the --pos choices of examples/lm_common.h, each with
posgrad's default options (nn/pos_*.h, docs/pos/*.md), written as a PyTorch
user would write them: tensor ops, no Python loop over positions.

Run with Debian's python3-torch (tests/need.sh torch):
  /usr/bin/python3 tests/bench/torch_train.py --scheme rotary --threads 2
prints `train_rotary_t2 <tokens/s> tokens/s` (warm-up, then the median of 7
timed steps, as bench_train.c). --scheme all runs every scheme; --dtype f64
names the line train_<scheme>_f64_t<threads>; --params prints the parameter
count (compare: examples/train_lm prints posgrad's as "model: N parameters").

make bench-compare (tests/bench/compare.sh) runs it alternately with posgrad's
bench, with OMP_WAIT_POLICY=PASSIVE, OPENBLAS_NUM_THREADS=<threads> (OpenBLAS
does not follow torch.set_num_threads) and an allocator that keeps freed memory
(jemalloc with MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1); run by hand,
set the same for the same figures (docs/performance.md).
"""
import argparse
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, DIM, HEADS, LAYERS, SEQ, BATCH = 256, 128, 4, 2, 256, 8
DH = DIM // HEADS
WINDOW = SEQ // 4  # local: causal windows of 64, one window back
RUNS = 7
SCHEMES = ["none", "sinusoidal", "learned", "continuous", "rotary", "xpos", "alibi", "dpb", "xl",
           "t5", "kerple", "sandwich", "fire", "cope", "fox", "rel", "local"]
INPUT_SCHEMES = {"sinusoidal", "learned", "continuous"}


def causal_mask(L):
    """(L, L) bool, True where key j > query i (hidden)"""
    return torch.ones(L, L, dtype=torch.bool).triu(1)


def rel_index(L):
    """(L, L) long: i - j + L - 1, the row of distance i - j in a (2L-1)-row table"""
    r = torch.arange(L)
    return r[:, None] - r[None, :] + L - 1


# ---- input schemes (docs/pos/absolute.md): pe added to the token embeddings -------------

class Sinusoidal(nn.Module):
    """pe[t, 2i] = sin(t w_i), pe[t, 2i+1] = cos(t w_i), w_i = 10000^(-2i/dim)"""

    def __init__(self):
        super().__init__()
        t = torch.arange(SEQ, dtype=torch.float64)[:, None]
        w = 10000.0 ** (-torch.arange(0, DIM, 2, dtype=torch.float64) / DIM)
        pe = torch.stack([torch.sin(t * w), torch.cos(t * w)], dim=-1).reshape(SEQ, DIM)
        self.register_buffer("pe", pe.to(torch.get_default_dtype()))

    def forward(self, x):
        return x + self.pe[: x.shape[1]]


class Learned(nn.Module):
    """a (max_len, dim) table, N(0, 1)"""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(SEQ, DIM)
        self.register_buffer("pos", torch.arange(SEQ))

    def forward(self, x):
        return x + self.emb(self.pos[: x.shape[1]])


class Continuous(nn.Module):
    """pe[t] = Linear(1 -> dim)(t) (bio-attention's LearnedContinuous, depth 1)"""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Linear(1, DIM)
        self.register_buffer("pos", torch.arange(SEQ, dtype=torch.get_default_dtype())[:, None])

    def forward(self, x):
        return x + self.mlp(self.pos[: x.shape[1]])


# ---- rotary / xPos (docs/pos/rotary.md): interleaved pairs over the head dim -------------

class Rotary(nn.Module):
    def __init__(self, xpos=False):
        super().__init__()
        inv = 10000.0 ** (-torch.arange(0, DH, 2, dtype=torch.float64) / DH)
        a = torch.arange(SEQ, dtype=torch.float64)[:, None] * inv  # (L, Dh/2)
        dt = torch.get_default_dtype()
        self.register_buffer("cos", torch.cos(a).repeat_interleave(2, -1).to(dt))  # (L, Dh)
        self.register_buffer("sin", torch.sin(a).repeat_interleave(2, -1).to(dt))
        self.xpos = xpos
        if xpos:  # sigma = zeta_i^((p - c) / 512), c = floor(L / 2); q * sigma, k / sigma
            zeta = (torch.arange(0, DH, 2, dtype=torch.float64) + 0.4 * DH) / (1.4 * DH)
            power = (torch.arange(SEQ, dtype=torch.float64) - SEQ // 2)[:, None] / 512.0
            sigma = (zeta ** power).repeat_interleave(2, -1)
            self.register_buffer("sq", sigma.to(dt))
            self.register_buffer("sk", (1.0 / sigma).to(dt))

    @staticmethod
    def rotate_pairs(x):  # (x0, x1) -> (-x1, x0) per pair
        x = x.unflatten(-1, (-1, 2))
        return torch.stack([-x[..., 1], x[..., 0]], dim=-1).flatten(-2)

    def forward(self, q, k):
        L = q.shape[-2]
        cos, sin = self.cos[:L], self.sin[:L]
        q = q * cos + self.rotate_pairs(q) * sin
        k = k * cos + self.rotate_pairs(k) * sin
        if self.xpos:
            q, k = q * self.sq[:L], k * self.sk[:L]
        return q, k


# ---- logit biases: bias(q, k, x) -> (H, L, L) or (B, H, L, L), added after the scaling ---

def alibi_slopes(H):
    """§0.1 for a power of two: 2^(-8 (h+1) / H)"""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], dtype=torch.float64)


class Alibi(nn.Module):
    def __init__(self):
        super().__init__()
        d = (torch.arange(SEQ)[:, None] - torch.arange(SEQ)[None, :]).abs().to(torch.float64)
        self.register_buffer("bias", (-alibi_slopes(HEADS)[:, None, None] * d).to(torch.get_default_dtype()))

    def forward(self, q, k, x):
        L = q.shape[-2]
        return self.bias[:, :L, :L]


class DPB(nn.Module):
    """bio-attention's DPB: b = Linear(d, H)(Linear(1, d)(i - j)), bias = -b, evaluated on the
    2L-1 distances and gathered"""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, DIM), nn.Linear(DIM, HEADS))
        self.register_buffer("dist", torch.arange(-(SEQ - 1), SEQ, dtype=torch.get_default_dtype())[:, None])
        self.register_buffer("idx", rel_index(SEQ))

    def forward(self, q, k, x):
        b = self.mlp(self.dist)  # (2L-1, H)
        return -b[self.idx].permute(2, 0, 1)  # (H, L, L)


def t5_bucket(n, num_buckets=32, max_distance=128):
    """causal buckets of n = i - j (x-transformers' _relative_position_bucket)"""
    n = n.clamp(min=0)
    exact = num_buckets // 2
    large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (num_buckets - exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return torch.where(n < exact, n, large)


class T5(nn.Module):
    def __init__(self):
        super().__init__()
        self.relative_attention_bias = nn.Embedding(32, HEADS)
        r = torch.arange(SEQ)
        self.register_buffer("bucket", t5_bucket(r[:, None] - r[None, :]))
        self.scale = math.sqrt(DH)

    def forward(self, q, k, x):
        L = q.shape[-2]
        return self.relative_attention_bias(self.bucket[:L, :L]).permute(2, 0, 1) * self.scale


class Kerple(nn.Module):
    """log variant: -r1 log(1 + r2 |i - j|), r1 = bias_p, r2 = bias_a, clamped to >= 0.01 in place
    at each forward (the reference's projection)"""

    def __init__(self):
        super().__init__()
        self.bias_p = nn.Parameter(torch.rand(HEADS) * 2)
        self.bias_a = nn.Parameter(torch.rand(HEADS))
        d = (torch.arange(SEQ)[:, None] - torch.arange(SEQ)[None, :]).abs()
        self.register_buffer("d", d.to(torch.get_default_dtype()))

    def forward(self, q, k, x):
        with torch.no_grad():
            self.bias_p.clamp_(min=1e-2)
            self.bias_a.clamp_(min=1e-2)
        L = q.shape[-2]
        return -self.bias_p[:, None, None] * torch.log1p(self.bias_a[:, None, None] * self.d[:L, :L])


class Sandwich(nn.Module):
    """parameter-free: b_h(d) = (sum_k cos(d w_k) - D'/2) / (8 h / H), d = |i - j|, D' = Dh"""

    def __init__(self):
        super().__init__()
        d = (torch.arange(SEQ)[:, None] - torch.arange(SEQ)[None, :]).abs().to(torch.float64)
        w = 10000.0 ** (-2.0 * torch.arange(1, DH // 2 + 1, dtype=torch.float64) / DH)
        s = torch.cos(d[..., None] * w).sum(-1) - DH / 2
        h = torch.arange(1, HEADS + 1, dtype=torch.float64)
        self.register_buffer("bias", (s[None] / (8.0 * h / HEADS)[:, None, None]).to(torch.get_default_dtype()))

    def forward(self, q, k, x):
        L = q.shape[-2]
        return self.bias[:, :L, :L]


class Fire(nn.Module):
    """f(psi(|i - j|) / (psi(max(L, i)) + 1e-6)), psi(x) = log(|c| x + 1), f = Linear(1, 32), ReLU,
    Linear(32, H) on every (query, key) pair, as the references"""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, HEADS))
        self.c = nn.Parameter(torch.tensor(0.1))
        self.init_L = nn.Parameter(torch.tensor(512.0), requires_grad=False)
        self.L_multiplier = nn.Parameter(torch.tensor(1.0))
        dt = torch.get_default_dtype()
        r = torch.arange(SEQ, dtype=dt)
        self.register_buffer("d", (r[:, None] - r[None, :]).abs())
        self.register_buffer("i", r[:, None])

    def forward(self, q, k, x):
        L = q.shape[-2]
        c = self.c.abs()
        norm = torch.log(c * torch.maximum((self.L_multiplier * self.init_L).abs(), self.i[:L]) + 1) + 1e-6
        u = torch.log(c * self.d[:L, :L] + 1) / norm  # (L, L)
        return self.mlp(u[..., None]).permute(2, 0, 1)  # (H, L, L)


class CoPE(nn.Module):
    """RAM's CoPE: gates sigmoid(s q.k) (0 where hidden), positions their suffix sum clamped to
    npos - 1 = max_len, interpolated rows of z = q E; the bias times s (docs/pos/cope.md)"""

    def __init__(self):
        super().__init__()
        self.npos = SEQ + 1
        self.pos_emb = nn.Parameter(torch.zeros(1, DH, self.npos))
        self.scale = 1.0 / math.sqrt(DH)
        self.register_buffer("mask", causal_mask(SEQ))

    def forward(self, q, k, x):
        L = q.shape[-2]
        gates = torch.sigmoid(q @ k.transpose(-1, -2) * self.scale).masked_fill(self.mask[:L, :L], 0.0)
        pos = gates.flip(-1).cumsum(-1).flip(-1).clamp(max=self.npos - 1)  # (B, H, L, L)
        pos_ceil = pos.ceil().long()
        pos_floor = pos.floor().long()
        z = q @ self.pos_emb  # (B, H, L, npos)
        z_ceil = z.gather(-1, pos_ceil)
        z_floor = z.gather(-1, pos_floor)
        w = pos - pos_floor
        return (z_ceil * w + z_floor * (1 - w)) * self.scale


class FoX(nn.Module):
    """forgetting gate: c_t = cumsum log sigmoid(w . x_t + b), bias_ij = c_i - c_j"""

    def __init__(self):
        super().__init__()
        self.fgate_proj = nn.Linear(DIM, HEADS)
        nn.init.normal_(self.fgate_proj.weight, std=0.02)
        nn.init.zeros_(self.fgate_proj.bias)

    def forward(self, q, k, x):
        c = F.logsigmoid(self.fgate_proj(x)).cumsum(1).transpose(1, 2)  # (B, H, L)
        return c[..., :, None] - c[..., None, :]


class Rel(nn.Module):
    """Shaw-style rel1d: q_i . R[j - i + L - 1], one (2L-1, Dh) table for every head, unscaled;
    q R^T over the 2L-1 rows, then gathered"""

    def __init__(self):
        super().__init__()
        self.rel_pos_emb = nn.Parameter(torch.randn(2 * SEQ - 1, DH) * DH ** -0.5)
        self.register_buffer("idx", 2 * (SEQ - 1) - rel_index(SEQ))  # j - i + L - 1 at [i, j]

    def forward(self, q, k, x):
        B, H, L, _ = q.shape
        logits = q @ self.rel_pos_emb.t()  # (B, H, L, 2L-1)
        return logits.gather(-1, self.idx[None, None].expand(B, H, L, L))


def rel_shift(x):
    """Transformer-XL's relative shift: x[..., i, m] for the distance L-1-m -> out[..., i, j] for
    the distance i - j (j <= i; entries above the diagonal are junk, masked by causality)"""
    B, H, L, M = x.shape
    x = F.pad(x, (1, 0)).view(B, H, M + 1, L)[:, :, 1:].view(B, H, L, M)
    return x


class XL(nn.Module):
    """Dai et al.: logit = ((q + u) . k + (q + v) . W_R R(i - j)) s; R = [sin | cos], r_dim = dim"""

    def __init__(self):
        super().__init__()
        bound = 1.0 / math.sqrt(DH)
        self.bias_r_w = nn.Parameter(torch.empty(HEADS, DH).uniform_(-bound, bound))
        self.bias_r_r = nn.Parameter(torch.empty(HEADS, DH).uniform_(-bound, bound))
        self.embed_lin = nn.Linear(DIM, HEADS * DH, bias=False)
        t = torch.arange(SEQ - 1, -1, -1, dtype=torch.float64)[:, None]  # distances L-1 .. 0
        f = 10000.0 ** (-torch.arange(0, DIM, 2, dtype=torch.float64) / DIM)
        self.register_buffer("R", torch.cat([torch.sin(t * f), torch.cos(t * f)], -1).to(torch.get_default_dtype()))
        self.scale = 1.0 / math.sqrt(DH)

    def forward(self, q, k, x):
        B, H, L, _ = q.shape
        r = self.embed_lin(self.R[SEQ - L:]).view(L, H, DH).permute(1, 2, 0)  # (H, Dh, L)
        ac = self.bias_r_w[None, :, None, :] @ k.transpose(-1, -2)  # u . k_j: (B, H, 1, L)
        bd = rel_shift((q + self.bias_r_r[None, :, None, :]) @ r)  # (B, H, L, L)
        return (ac + bd) * self.scale


# ---- attention ------------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, scheme):
        super().__init__()
        self.to_qkv = nn.Linear(DIM, 3 * DIM)
        self.to_out = nn.Linear(DIM, DIM)
        self.scale = 1.0 / math.sqrt(DH)
        self.rotary = Rotary(xpos=scheme == "xpos") if scheme in ("rotary", "xpos", "local") else None
        biases = {"alibi": Alibi, "dpb": DPB, "t5": T5, "kerple": Kerple, "sandwich": Sandwich, "fire": Fire,
                  "cope": CoPE, "fox": FoX, "rel": Rel, "xl": XL}
        self.pos = biases[scheme]() if scheme in biases else None
        self.local = scheme == "local"
        self.register_buffer("mask", causal_mask(SEQ))

    def forward(self, x):
        B, L, _ = x.shape
        q, k, v = self.to_qkv(x).view(B, L, 3, HEADS, DH).permute(2, 0, 3, 1, 4)  # each (B, H, L, Dh)
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        if self.local:
            o = local_attention(q, k, v, self.scale)
        else:
            logits = q @ k.transpose(-1, -2) * self.scale
            if self.pos is not None:
                logits = logits + self.pos(q, k, x)
            logits = logits.masked_fill(self.mask[:L, :L], float("-inf"))
            o = logits.softmax(-1) @ v  # (B, H, L, Dh)
        return self.to_out(o.transpose(1, 2).reshape(B, L, DIM))


def local_attention(q, k, v, scale, w=WINDOW):
    """lucidrains' local-attention: windows of w, each query sees its window and the one before
    (look_backward 1), causal; the first window's look-back is padding (masked)"""
    B, H, L, D = q.shape
    n = L // w
    bq, bk, bv = (t.reshape(B, H, n, w, D) for t in (q, k, v))
    look = lambda t: torch.cat([F.pad(t, (0, 0, 0, 0, 1, 0))[:, :, :-1], t], dim=3)  # (B, H, n, 2w, D)
    bk, bv = look(bk), look(bv)
    pos = torch.arange(L, device=q.device).view(n, w)
    kpos = torch.cat([pos - w, pos], dim=1)  # (n, 2w): -w.. for the padded look-back
    hidden = (kpos[:, None, :] > pos[:, :, None]) | (kpos[:, None, :] < 0)  # (n, w, 2w)
    logits = (bq @ bk.transpose(-1, -2)) * scale
    logits = logits.masked_fill(hidden, float("-inf"))
    return (logits.softmax(-1) @ bv).reshape(B, H, L, D)


class Block(nn.Module):
    def __init__(self, scheme):
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM)
        self.attn = Attention(scheme)
        self.norm2 = nn.LayerNorm(DIM)
        self.ff = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class LM(nn.Module):
    def __init__(self, scheme):
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, DIM)
        inputs = {"sinusoidal": Sinusoidal, "learned": Learned, "continuous": Continuous}
        self.pos = inputs[scheme]() if scheme in inputs else None
        self.blocks = nn.ModuleList([Block(scheme) for _ in range(LAYERS)])
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, ids, targets):
        x = self.tok_emb(ids)
        if self.pos is not None:
            x = self.pos(x)
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))


def train_rate(scheme, threads, dtype):
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.manual_seed(1)
    model = LM(scheme)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    targets = torch.randint(0, VOCAB, (BATCH, SEQ))

    def step():
        loss = model(ids, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        step()
        t.append(time.perf_counter() - t0)
    t.sort()
    return BATCH * SEQ / t[RUNS // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scheme", default="all", help="one of %s, or all" % " ".join(SCHEMES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    p.add_argument("--params", action="store_true", help="print the parameter count instead of timing")
    a = p.parse_args()
    if a.scheme != "all" and a.scheme not in SCHEMES:
        p.error("unknown scheme %r; choices: %s or all" % (a.scheme, " ".join(SCHEMES)))
    if a.threads < 1:
        p.error("--threads must be >= 1")
    dtype = torch.float64 if a.dtype == "f64" else torch.float32
    for s in SCHEMES if a.scheme == "all" else [a.scheme]:
        if a.params:
            torch.set_default_dtype(dtype)
            n = sum(t.numel() for t in LM(s).parameters())  # frozen ones too (FIRE's init_L), as posgrad
            print("params_%s %d" % (s, n))
        else:
            name = "train_%s%s_t%d" % (s, "_f64" if a.dtype == "f64" else "", a.threads)
            print("%s %.0f tokens/s" % (name, train_rate(s, a.threads, dtype)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
