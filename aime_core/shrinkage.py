"""Calibrated rollouts: open-loop frames shrunk toward the mean training frame by a factor fitted per horizon.

A deterministic rollout commits to one sharp future. Where the model can no longer tell where the pole is, a sharp
frame in the wrong place costs about twice the squared error of the blurry mean frame (both the true and the
predicted pole are wrong pixels), so past its predictable horizon a sharp model scores worse than doing nothing.
The squared-error-optimal answer there is the conditional mean, which leans toward the mean frame as the model's
knowledge fades. Shrinkage estimates how far, per horizon h, by least squares on *training* clips:

    pred'_h = m + a_h (pred_h - m),   a_h = <x_h - m, pred_h - m> / |pred_h - m|^2, clipped to [0, 1]

(m the mean training frame, x_h the true frame, sums over clips and pixels). a_h = 1 keeps the rollout as it is;
a_h -> 0 says the rollout's departures from the mean frame carry no information at that horizon, which also makes
the a_h curve a readable diagnostic of how far the model predicts. It is fitted with the rollout settings the run
scores with, on training episodes only, so the held-out score stays honest; the raw rollout is scored alongside.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from aime_core.model.aime import as_float


@torch.no_grad()
def fit_shrinkage(
    model, batches: Iterable, context_frames: int, autocast, mean_frame: torch.Tensor, sample: bool = False
) -> list[float]:
    """a_h for h = 1..T-k from batches of training clips (frames [B,T,...], actions) with T - k open-loop steps,
    for rollouts made as the scored ones are (`sample`: draw z from the prior)."""
    k = context_frames
    model.eval()
    num: torch.Tensor | None = None
    den: torch.Tensor | None = None
    for frames, actions in batches:
        with autocast():
            pred = model.generate(frames[:, :k], actions, k, sample=sample).float()
        dev = (pred[:, k:] - mean_frame).flatten(2)  # [B,H,P]: the rollout's departure from the mean frame
        err = (as_float(frames[:, k:]) - mean_frame).flatten(2)  # the truth's departure
        n, d = (dev * err).sum((0, 2)), (dev * dev).sum((0, 2))
        num, den = (n, d) if num is None else (num + n, den + d)
    model.train()
    if num is None or den is None:
        raise ValueError("fit_shrinkage needs at least one batch of clips")
    # A rollout identical to the mean frame (den 0) has nothing to shrink: a_h = 1 leaves it unchanged.
    alpha = torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(den))
    return alpha.clamp(0.0, 1.0).tolist()


def apply_shrinkage(
    frames: torch.Tensor, context_frames: int, mean_frame: torch.Tensor, alphas: list[float]
) -> torch.Tensor:
    """frames [B,T,3,H,W] of a rollout (k observed, then open loop) -> the calibrated frames. Open-loop step h uses
    a_h; steps past the fitted horizon use the last a_h (the model does not predict better further out)."""
    k = context_frames
    steps = frames.shape[1] - k
    if steps <= 0 or not alphas:
        return frames
    a = torch.tensor([alphas[min(h, len(alphas) - 1)] for h in range(steps)], device=frames.device)
    a = a.to(frames.dtype).view(1, steps, 1, 1, 1)
    m = mean_frame.to(frames.dtype)
    return torch.cat([frames[:, :k], m + a * (frames[:, k:] - m)], 1)
