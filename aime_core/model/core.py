"""Posterior q(z_t | x_t, h_t, c_t), LSTM dynamics with its own context prediction, and the frame decoder."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from aime_core.model.dpgmm import MIN_STD


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class Posterior(nn.Module):
    """Diagonal Gaussian over z_t from the frame embedding, the recurrent state and the Perceiver context."""

    def __init__(self, embed_dim: int, hidden_dim: int, context_dim: int, latent_dim: int):
        super().__init__()
        self.net = mlp(embed_dim + hidden_dim + context_dim, hidden_dim, 2 * latent_dim)

    def forward(self, emb, h, c):
        mu, raw_std = self.net(torch.cat([emb, h, c], -1)).float().chunk(2, -1)
        # Start with small noise (std ~0.1): with unit noise the decoder first learns to ignore z (collapse).
        return mu, F.softplus(raw_std - 2.0) + MIN_STD


class Dynamics(nn.Module):
    """h_t = LSTM([z_{t-1}, c_{t-1}, a_t], h_{t-1}), and the model's own context prediction c^_t = g(h_t, z_t).

    Alignment: observations[t] is the frame after actions[t], so the state h_t that predicts z_t has seen a_t.
    The dynamics consume the *predicted* context c^ in training and in generation alike: open-loop rollouts see
    exactly the inputs the model was trained on (the Perceiver's context of true frames is only its target).
    """

    def __init__(self, latent_dim: int, context_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.cell = nn.LSTMCell(latent_dim + context_dim + action_dim, hidden_dim)
        self.ctx_head = mlp(hidden_dim + latent_dim, hidden_dim, context_dim)

    def step(self, z_prev, c_prev, action, state):
        h, cell = self.cell(torch.cat([z_prev, c_prev, action], -1), state)
        return h, cell

    def predict_context(self, h, z):
        return self.ctx_head(torch.cat([h, z], -1))


class Decoder(nn.Module):
    """p(x_t | z_t, h_t): a mean image (unit-variance Gaussian). No skip path from the true frame exists."""

    def __init__(self, latent_dim, hidden_dim, channels: list[int], sizes: list[int], img_size: int):
        super().__init__()
        self.c0, self.s0 = channels[-1], sizes[-1]
        # A hidden layer first: where an object sits in the image is a non-linear function of z.
        self.fc = nn.Sequential(
            nn.Linear(latent_dim + hidden_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, self.c0 * self.s0 * self.s0),
        )
        self.targets = list(reversed(sizes[:-1])) + [img_size]  # upsample to each encoder size, then full
        outs = list(reversed(channels[:-1])) + [channels[0]]
        layers, c_in = [], self.c0
        for c_out in outs:
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            layers.append(nn.GroupNorm(1, c_out))
            c_in = c_out
        self.convs = nn.ModuleList(layers)
        self.out = nn.Conv2d(c_in, 3, 3, padding=1)
        with torch.no_grad():  # start near the mean image, so early steps learn content, not the background
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
        # A fixed per-dataset offset (the mean training frame); it is not a path from x_t.
        # A buffer, not trained: as a parameter its gradient dwarfed all others and gradient clipping then
        # starved the encoder (measured: no learning in 360 steps with it, learning without).
        self.register_buffer("mean_image", torch.full((3, img_size, img_size), 0.5))

    def forward(self, z, h):
        lead = z.shape[:-1]
        y = self.fc(torch.cat([z, h], -1)).view(-1, self.c0, self.s0, self.s0)
        for i, size in enumerate(self.targets):
            y = F.interpolate(y, size=(size, size), mode="nearest")
            y = F.silu(self.convs[2 * i + 1](self.convs[2 * i](y)))
        x = self.out(y) + self.mean_image
        return x.view(*lead, 3, x.shape[-2], x.shape[-1])
