"""Causal Perceiver-IO context: learned latents read each frame, then causal attention over time.

Time positions are encoded only by ALiBi biases (a penalty linear in the distance between steps), which has no
table of fixed length: the module runs on sequences longer than the training clips (the seed's "Perceiver fix").
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sincos_2d(n_side: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position codes for an n_side x n_side feature map -> [n_side**2, dim]."""
    quarter = max(1, dim // 4)
    freq = torch.exp(-math.log(100.0) * torch.arange(quarter) / quarter)
    ys, xs = torch.meshgrid(torch.arange(n_side).float(), torch.arange(n_side).float(), indexing="ij")
    parts = [f(ax.reshape(-1, 1) * freq) for ax in (ys, xs) for f in (torch.sin, torch.cos)]
    code = torch.cat(parts, dim=1)
    return F.pad(code, (0, dim - code.shape[1]))[:, :dim]


def alibi_bias(T: int, heads: int, device) -> torch.Tensor:
    """Causal ALiBi bias [heads, T, T]: -slope * (i - j) for j <= i, -inf for j > i (the future)."""
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)], device=device)
    pos = torch.arange(T, device=device)
    dist = (pos.view(-1, 1) - pos.view(1, -1)).float()  # i - j
    bias = -slopes.view(-1, 1, 1) * dist.clamp(min=0)
    return bias.masked_fill(dist < 0, float("-inf"))


class Block(nn.Module):
    """Pre-norm attention + MLP. `causal_alibi` switches to causal self-attention over time."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0, f"context_dim {dim} must be divisible by perceiver_heads {heads}"
        self.heads = heads
        self.ln_q, self.ln_kv, self.ln_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        N, Lq, D = x.shape
        src = self.ln_q(x) if kv is None else self.ln_kv(kv)
        q = self.q(self.ln_q(x)).view(N, Lq, self.heads, -1).transpose(1, 2)  # [N,h,Lq,d]
        k, v = self.kv(src).view(N, src.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # [N,h,Lk,d]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.proj(y.transpose(1, 2).reshape(N, Lq, D))
        return x + self.mlp(self.ln_mlp(x))


class CausalPerceiver(nn.Module):
    """Feature tokens [B,T,N,C] -> context c_t [B,T,D] where c_t depends on frames <= t only."""

    def __init__(self, in_channels, num_tokens, dim, latents=8, heads=4, temporal_downsample=False):
        super().__init__()
        self.dim, self.heads, self.downsample = dim, heads, temporal_downsample
        self.inp = nn.Linear(in_channels, dim)
        self.register_buffer("pos", sincos_2d(int(math.isqrt(num_tokens)), dim), persistent=False)
        self.latents = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.cross = Block(dim, heads)  # latents read one frame's tokens (Perceiver encode)
        self.latent_self = Block(dim, heads)  # latents talk to each other
        # Perceiver-IO decode: each step's query attends causally over the frame summaries so far (ALiBi).
        self.time = Block(dim, heads)
        self.null = nn.Parameter(torch.zeros(dim))  # the context before any frame has been seen
        self.ln = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, T, N, C = tokens.shape
        x = self.inp(tokens.reshape(B * T, N, C)) + self.pos  # [BT,N,D]
        lat = self.latents.expand(B * T, -1, -1)
        lat = self.latent_self(self.cross(lat, kv=x))  # [BT,L,D]
        summary = lat.mean(1).view(B, T, self.dim)  # one vector per frame
        if self.downsample:
            # Token j covers frames 2j and 2j+1; a trailing odd frame has no complete token and is dropped.
            Tc = T // 2
            summary = summary[:, : 2 * Tc].reshape(B, Tc, 2, self.dim).mean(2)
        Tc = summary.shape[1]
        if Tc > 0:
            seq = self.time(summary, bias=alibi_bias(Tc, self.heads, tokens.device).to(summary.dtype))
        else:
            seq = summary
        # Per-step context: step t may use only tokens built from frames <= t. A leading null token stands for
        # "nothing seen yet" (downsampled step 0, whose first token also needs frame 1).
        padded = torch.cat([self.null.to(seq.dtype).expand(B, 1, -1), seq], dim=1)  # [B,Tc+1,D]
        steps = torch.arange(T, device=tokens.device)
        idx = (steps + 1) // 2 if self.downsample else steps + 1
        return self.ln(padded[:, idx])  # [B,T,D]
