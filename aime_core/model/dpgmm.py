"""Dirichlet-process Gaussian mixture prior by truncated stick-breaking (Nalisnick & Smyth 2017).

Sticks v_k ~ Kumaraswamy(a_k, b_k) (amortised from the state), prior Beta(1, alpha); alpha ~ Gamma with a
learned, softplus-positive variational posterior and a Gamma(1, 1) prior. pi_k = v_k * prod_{j<k} (1 - v_j),
the last component takes the remainder. Everything here runs in float32, also under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EULER = 0.5772156649015329
TAYLOR_TERMS = 20  # exact terms of the series in the Kumaraswamy-Beta KL (the paper uses 10), plus a tail
MIN_STD = 1e-2


def kumaraswamy_log_sample(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor):
    """Reparameterised v = (1 - (1-u)^(1/b))^(1/a), returned as (log v, log(1-v)) computed in log space."""
    log_inner = torch.log(-torch.expm1(torch.log1p(-u) / b).clamp(max=-1e-12))  # log(1 - (1-u)^(1/b))
    log_v = (log_inner / a).clamp(max=-1e-6)
    log_1mv = torch.log(-torch.expm1(log_v))
    return log_v, log_1mv


def stick_log_weights(log_v: torch.Tensor, log_1mv: torch.Tensor) -> torch.Tensor:
    """Sticks [..., K-1] -> log pi [..., K]; the last component takes what is left of the stick."""
    rest = torch.cumsum(log_1mv, dim=-1)  # log prod_{j<=k}(1 - v_j)
    before = F.pad(rest, (1, 0))  # log prod_{j<k}(1 - v_j), 0 for k = 0
    return torch.cat([log_v, torch.zeros_like(log_v[..., :1])], dim=-1) + before


def kl_kumaraswamy_beta(a, b, alpha_mean, log_alpha_mean):
    """E_q(alpha) KL(Kumaraswamy(a, b) || Beta(1, alpha)), closed form (Nalisnick & Smyth 2017), >= 0.

    The series sum_m B(m/a, b) / (m + ab) decays like m^-(b+1): its first terms are summed exactly and the
    tail by its integral, since the paper's 10 terms alone are off by ~0.05 nats for b near 1 (tested).
    """
    ab = a * b
    series = torch.zeros_like(a)
    for m in range(1, TAYLOR_TERMS + 1):
        log_beta_fn = torch.lgamma(m / a) + torch.lgamma(b) - torch.lgamma(m / a + b)
        series = series + torch.exp(log_beta_fn) / (m + ab)
    # Tail m > M: B(m/a, b) ~ Gamma(b) (m/a)^-b, so the sum is ~ Gamma(b) a^b (M + 1/2)^-b / b.
    tail = torch.exp(torch.lgamma(b) + b * torch.log(a) - b * math.log(TAYLOR_TERMS + 0.5)) / b
    series = series + tail
    kl = (alpha_mean - 1.0) * b * series
    kl = kl + (a - 1.0) / a * (-EULER - torch.digamma(b) - 1.0 / b)
    kl = kl + torch.log(ab) - log_alpha_mean  # log B(1, alpha) = -log alpha
    return kl - (b - 1.0) / b


def kl_gamma(a_q, b_q, a_p, b_p):
    """KL(Gamma(a_q, rate b_q) || Gamma(a_p, rate b_p)), closed form (>= 0)."""
    return (
        (a_q - a_p) * torch.digamma(a_q)
        - torch.lgamma(a_q)
        + math.lgamma(a_p)
        + a_p * (torch.log(b_q) - math.log(b_p))
        + a_q * (b_p - b_q) / b_q
    )


def gaussian_log_prob(z, mu, std):
    """Diagonal Gaussian log density summed over the last axis."""
    return (-0.5 * ((z - mu) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def mixture_log_prob(z, log_pi, mu, std):
    """log sum_k pi_k N(z; mu_k, std_k) by logsumexp. z [...,D], log_pi [...,K], mu/std [...,K,D]."""
    return torch.logsumexp(log_pi + gaussian_log_prob(z.unsqueeze(-2), mu, std), dim=-1)


class DPGMMPrior(nn.Module):
    """p(z_t | h_t, c_{t-1}): state-dependent component means/stds and sticks, global Gamma posterior on alpha."""

    def __init__(self, in_dim: int, latent_dim: int, hidden_dim: int, K: int, alpha_prior=(1.0, 1.0)):
        super().__init__()
        assert K >= 2, "the mixture needs at least two components"
        self.K, self.D = K, latent_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.SiLU())
        self.comp = nn.Linear(hidden_dim, K * 2 * latent_dim)  # means and raw stds
        self.sticks = nn.Linear(hidden_dim, (K - 1) * 2)  # raw Kumaraswamy a, b
        # q(alpha) = Gamma(softplus(raw_shape), softplus(raw_rate)); start near the prior's mean of 1.
        self.alpha_raw = nn.Parameter(torch.tensor([math.log(math.e - 1), math.log(math.e - 1)]))
        self.alpha_prior = alpha_prior

    def alpha_params(self):
        shape, rate = F.softplus(self.alpha_raw.float()) + 1e-3
        return shape, rate

    def forward(self, inp: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.net(inp).float()
        mu, raw_std = self.comp(y).view(*inp.shape[:-1], self.K, 2, self.D).unbind(-2)
        std = F.softplus(raw_std) + MIN_STD
        a, b = (
            (F.softplus(self.sticks(y)).view(*inp.shape[:-1], self.K - 1, 2) + 0.05).clamp(max=100).unbind(-1)
        )
        return {"mu": mu, "std": std, "a": a, "b": b}

    def log_weights(self, p: dict[str, torch.Tensor], sample: bool = True) -> torch.Tensor:
        """log pi [...,K] from sampled sticks (or their medians, u = 0.5, when sample is False)."""
        u = torch.rand_like(p["a"]).clamp(1e-6, 1 - 1e-6) if sample else torch.full_like(p["a"], 0.5)
        return stick_log_weights(*kumaraswamy_log_sample(p["a"], p["b"], u))

    def kl_terms(self, p, z, post_mu, post_std, log_pi):
        """Per-step KL(q(z)||mixture) by one-sample Monte Carlo, and the closed-form stick KL; [...] each."""
        kl_z = gaussian_log_prob(z, post_mu, post_std) - mixture_log_prob(z, log_pi, p["mu"], p["std"])
        shape, rate = self.alpha_params()
        alpha_mean, log_alpha_mean = shape / rate, torch.digamma(shape) - torch.log(rate)
        kl_sticks = kl_kumaraswamy_beta(p["a"], p["b"], alpha_mean, log_alpha_mean).sum(-1)
        return kl_z, kl_sticks

    def kl_alpha(self) -> torch.Tensor:
        shape, rate = self.alpha_params()
        return kl_gamma(shape, rate, *self.alpha_prior)

    def sample(self, p, log_pi: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """z from the mixture: a component drawn by pi (or the most probable one) and its Gaussian (or mean)."""
        k = torch.distributions.Categorical(logits=log_pi).sample() if sample else log_pi.argmax(-1)
        idx = k[..., None, None].expand(*k.shape, 1, self.D)
        mu, std = p["mu"].gather(-2, idx).squeeze(-2), p["std"].gather(-2, idx).squeeze(-2)
        return mu + std * torch.randn_like(mu) if sample else mu


def mixture_diagnostics(log_pi: torch.Tensor, alpha_mean: float) -> dict[str, float]:
    """Effective components (fewest holding 99 % of the mean weight), entropy of the mean pi, mean alpha."""
    pi = log_pi.detach().float().exp().reshape(-1, log_pi.shape[-1]).mean(0)
    sorted_pi = pi.sort(descending=True).values
    effective = int((sorted_pi.cumsum(0) < 0.99).sum().item()) + 1
    entropy = float(-(pi * pi.clamp_min(1e-12).log()).sum())
    return {
        "dpgmm/effective_components": float(min(effective, pi.numel())),
        "dpgmm/pi_entropy": entropy,
        "dpgmm/alpha": float(alpha_mean),
    }
