"""Frame encoder: a conv net per frame (2D) or a causal spatio-temporal one (3D conv)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def feature_sizes(img_size: int, min_size: int = 8) -> list[int]:
    """Spatial sizes after each stride-2 conv (k4 s2 p1 maps s -> s // 2) until the map is <= min_size."""
    sizes = [img_size]
    while sizes[-1] > min_size:
        sizes.append(sizes[-1] // 2)
    return sizes[1:]  # e.g. 64 -> [32, 16, 8]; 84 -> [42, 21, 10, 5]; 32 -> [16, 8]


def channel_plan(hidden_dim: int, layers: int) -> list[int]:
    """Channels per conv layer, doubling from a base that scales with the model size."""
    base = max(16, hidden_dim // 8)
    return [base * 2**i for i in range(layers)]


class FrameEncoder(nn.Module):
    """Frames [B,T,3,H,W] in [0,1] -> feature-map tokens [B,T,N,C] and a flat embedding [B,T,E] per frame.

    With use_3d the convolutions also look at the two previous frames, padded only on the past side, so the
    output at step t depends on frames <= t (the context and the posterior stay causal).
    """

    def __init__(self, img_size: int, hidden_dim: int, embed_dim: int, use_3d: bool = False):
        super().__init__()
        self.sizes = feature_sizes(img_size)
        self.channels = channel_plan(hidden_dim, len(self.sizes))
        self.use_3d = use_3d
        convs, c_in = [], 3
        for c_out in self.channels:
            if use_3d:
                convs.append(
                    nn.Conv3d(c_in, c_out, kernel_size=(3, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1))
                )
            else:
                convs.append(nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        for conv in self.convs:  # variance-preserving init for the SiLU stack
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        self.register_buffer("pixel_std", torch.full((3, img_size, img_size), 0.25))
        self.out_channels = c_in
        self.num_tokens = self.sizes[-1] ** 2
        # No LayerNorm here: it drowned the small, moving part of the image (measured: no learning in 150
        # steps with it, clear progress without).
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c_in * self.num_tokens, embed_dim))

    def forward(self, x: torch.Tensor, mean_image: torch.Tensor | None = None):
        """x [B,T,3,H,W] in [0,1]; mean_image [3,H,W] is subtracted so static background does not dominate."""
        B, T, C, H, W = x.shape
        # Standardise per pixel with the dataset's statistics: the moving parts (a small ball, a pole) then
        # dominate the input instead of a static background (measured: 0.0025 across-sample std without).
        x = (x - (0.5 if mean_image is None else mean_image)) / self.pixel_std
        if self.use_3d:
            y = x.transpose(1, 2)  # [B,3,T,H,W]
            for conv in self.convs:
                y = F.silu(conv(F.pad(y, (0, 0, 0, 0, 2, 0))))  # causal: pad two frames in the past only
            y = y.transpose(1, 2).reshape(B * T, self.out_channels, self.sizes[-1], self.sizes[-1])
        else:
            y = x.reshape(B * T, C, H, W)
            for conv in self.convs:
                y = F.silu(conv(y))
        s = self.sizes[-1]
        assert y.shape == (B * T, self.out_channels, s, s), y.shape
        tokens = y.flatten(2).transpose(1, 2).reshape(B, T, s * s, self.out_channels)  # [B,T,N,C]
        emb = self.embed(y).reshape(B, T, -1)  # [B,T,E]
        return tokens, emb
