"""Evaluation on held-out clips: reconstruction MSE/PSNR/SSIM, and open-loop rollouts against both trivial
baselines, copy-last-frame and the mean training frame, over all pixels and over the pixels that move.

Every per-horizon figure is a mean over all scored clips of the per-clip MSE; PSNRs are computed from those mean
MSEs (a mean of per-clip PSNRs rewards copy-last on the clips where nothing moves). `ratio` is the rollout MSE over
the *better* baseline at each horizon: below 1 the model predicts better than doing nothing clever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aime_core.model.aime import as_float
from aime_core.shrinkage import apply_shrinkage, fit_shrinkage

# A pixel "moves" when its std over the training frames exceeds this (pixel values in [0, 1]; 0.02 ~ 5/255).
MOVING_STD = 0.02


@dataclass
class Baselines:
    """What the trivial predictors and the moving-pixel mask need, from the training frames."""

    mean_frame: torch.Tensor  # [3,H,W] in [0, 1]
    moving: torch.Tensor  # bool [H,W]: training-set std above MOVING_STD in any channel

    @classmethod
    def from_stats(cls, mean: np.ndarray, std: np.ndarray, device) -> Baselines:
        """From EpisodeStore.frame_stats() (float32 [H,W,3] each)."""
        mean_t = torch.from_numpy(mean).permute(2, 0, 1).contiguous().to(device)
        moving = torch.from_numpy(std.max(-1) > MOVING_STD).to(device)
        return cls(mean_t, moving)


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] from their MSE (capped at 100 dB for identical images)."""
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per image of [N,C,H,W] images in [0, 1], Gaussian window (Wang et al. 2004) -> [N]."""
    C = x.shape[1]
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(C, 1, window, window)

    def blur(t):
        return F.conv2d(t, kernel, groups=C)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def clip_errors(pred, target, moving: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-clip, per-step MSE over all pixels [B,H] and over the moving pixels (None without any)."""
    sq = (pred - target) ** 2  # [B,H,3,h,w]
    full = sq.flatten(2).mean(2)
    if moving is None or not bool(moving.any()):
        return full, None
    return full, sq.mean(2)[..., moving].mean(-1)  # channels first, then the masked pixels


def _ratio(model: list[float], *baselines: list[float]) -> list[float]:
    return [m / max(min(b), 1e-12) for m, *b in zip(model, *baselines, strict=True)]


@torch.no_grad()
def evaluate(
    model,
    batches,
    context_frames: int,
    sample: bool,
    autocast,
    baselines: Baselines | None = None,
    shrinkage: list[float] | None = None,
) -> dict:
    """Scores over held-out clips. Rollouts observe k frames, then run open loop on the recorded actions.

    Returns recon_mse/psnr/ssim and per-horizon lists (h = 1..T-k): rollout_mse, copy_last_mse (also as
    baseline_mse, its older name), mean_frame_mse (with `baselines`), ratio (to the better baseline), their
    PSNRs, and the same MSEs over the moving pixels (`*_moving`). With `shrinkage` (a_h per horizon, see
    aime_core/shrinkage.py; needs `baselines`) the rollout is the calibrated one, and the uncalibrated rollout is
    scored too, as rollout_raw_mse / ratio_raw (and their `_moving`).
    """
    if shrinkage is not None and baselines is None:
        raise ValueError("shrinkage pulls toward the mean training frame: pass baselines with it")
    model.eval()
    k = context_frames
    recon_se, recon_ssim, n, T = 0.0, 0.0, 0, 0
    sums: dict[str, torch.Tensor] = {}

    def add(name: str, value: torch.Tensor | None) -> None:
        if value is not None:
            sums[name] = sums[name] + value.sum(0) if name in sums else value.sum(0)

    moving = baselines.moving if baselines is not None else None
    for frames, actions in batches:
        gt = as_float(frames)  # [B,T,3,H,W]
        B, T = gt.shape[:2]
        assert 1 <= k < T, f"rollout_context {k} must be between 1 and video_length - 1 ({T - 1})"
        with autocast():
            recon = model.reconstruct(frames, actions).float()
            pred = model.generate(frames[:, :k], actions, k, sample=sample).float()
        flat_r, flat_g = recon.flatten(0, 1), gt.flatten(0, 1)
        recon_se += float(((flat_r - flat_g) ** 2).flatten(1).mean(1).sum())
        recon_ssim += float(ssim(flat_r, flat_g).sum())
        future = gt[:, k:]  # [B,H,...]
        last = gt[:, k - 1 : k].expand_as(future)
        guesses = [("rollout", pred[:, k:]), ("copy_last", last)]
        if shrinkage is not None:
            calibrated = apply_shrinkage(pred, k, baselines.mean_frame, shrinkage)
            guesses = [("rollout", calibrated[:, k:]), ("rollout_raw", pred[:, k:]), ("copy_last", last)]
        for name, guess in guesses:
            full, mov = clip_errors(guess, future, moving)
            add(f"{name}_mse", full)
            add(f"{name}_mse_moving", mov)
        if baselines is not None:
            full, mov = clip_errors(baselines.mean_frame.expand_as(future), future, moving)
            add("mean_frame_mse", full)
            add("mean_frame_mse_moving", mov)
        n += B
    model.train()
    if n == 0:
        return {}
    out: dict = {"context_frames": k, "horizon": list(range(1, T - k + 1)), "clips": n}
    out.update({name: (v / n).tolist() for name, v in sums.items()})
    out["baseline_mse"] = out["copy_last_mse"]  # the name older runs and pages use
    for name in ("rollout", "copy_last", "mean_frame"):
        if f"{name}_mse" in out:
            out[f"{name}_psnr"] = psnr(torch.tensor(out[f"{name}_mse"])).tolist()
    out["baseline_psnr"] = out["copy_last_psnr"]
    for suffix in ("", "_moving"):
        if f"rollout_mse{suffix}" not in out:
            continue
        bases = [out[f"{b}_mse{suffix}"] for b in ("copy_last", "mean_frame") if f"{b}_mse{suffix}" in out]
        out[f"ratio{suffix}"] = _ratio(out[f"rollout_mse{suffix}"], *bases)
        if f"rollout_raw_mse{suffix}" in out:
            out[f"ratio_raw{suffix}"] = _ratio(out[f"rollout_raw_mse{suffix}"], *bases)
    if shrinkage is not None:
        out["shrinkage"] = list(shrinkage[: len(out["horizon"])])
    frames_seen = n * T
    out["recon_mse"] = recon_se / frames_seen
    out["psnr"] = float(psnr(torch.tensor(out["recon_mse"])))
    out["ssim"] = recon_ssim / frames_seen
    if moving is not None:
        out["moving_pixels"] = float(moving.float().mean())
    return out


def eval_metrics(result: dict) -> dict[str, float]:
    """The scalar eval/* metrics of docs/CONTRACTS.md (means over the horizon)."""

    def mean(xs):
        return sum(xs) / len(xs) if xs else math.nan

    out = {
        "eval/recon_mse": result["recon_mse"],
        "eval/psnr": result["psnr"],
        "eval/ssim": result["ssim"],
        "eval/rollout_mse": mean(result["rollout_mse"]),
        "eval/rollout_psnr": mean(result["rollout_psnr"]),
        "eval/baseline_mse": mean(result["copy_last_mse"]),
        "eval/baseline_psnr": mean(result["copy_last_psnr"]),
        "eval/copy_last_mse": mean(result["copy_last_mse"]),
        "eval/rollout_ratio": mean(result["ratio"]),
    }
    optional = {
        "eval/mean_frame_mse": "mean_frame_mse",
        "eval/rollout_mse_moving": "rollout_mse_moving",
        "eval/rollout_ratio_moving": "ratio_moving",
        "eval/state_mse": "state_mse",
        "eval/state_ratio": "state_ratio",
        "eval/rollout_ratio_raw": "ratio_raw",
        "eval/shrinkage": "shrinkage",
    }
    out |= {key: mean(result[name]) for key, name in optional.items() if name in result}
    return out


PROBE_EPISODES = (
    20  # training episodes whose clips fit the state probe (the same in training and `aime evaluate`)
)


class HeldOut:
    """Everything a run is scored with: held-out clips of k + horizon frames starting at every frame, the
    baselines from the training frames, (when the file has states) the training clips of the state probe, and
    (with `shrinkage`) the training clips that calibrate the rollouts. Training and `aime evaluate` both score
    through this, so they agree exactly."""

    def __init__(
        self,
        train_store,
        val_store,
        stats,
        context: int,
        horizon: int,
        video_length: int,
        device,
        shrinkage: bool = False,
    ):
        from aime_core.data import DataError  # noqa: PLC0415 (data is heavier: h5py)
        from aime_core.loaders import ClipFeeder  # noqa: PLC0415 (loaders imports data, which is heavier)

        self.k, self.horizon = context, horizon
        self.clips = ClipFeeder(val_store, context + horizon, device, "always", 0, stride=1)
        self.baselines = Baselines.from_stats(*stats, device)
        self.shrink_clips = None
        if shrinkage:  # training clips as long as the scored ones, from the probe's training episodes
            try:
                self.shrink_clips = ClipFeeder(
                    train_store.subset(PROBE_EPISODES), context + horizon, device, "always", 0, stride=1
                )
            except DataError as exc:  # its words speak of video_length, which is not what is too long here
                raise DataError(
                    f"rollout_shrinkage is fitted on training clips of context + horizon = {context + horizon} "
                    f"frames ({exc}); allowed: a shorter horizon, or no shrinkage"
                ) from exc
        self.shrinkage: list[float] | None = None  # the a_h of the latest score
        self.probe_clips = None
        if val_store.states is not None and train_store.states is not None:
            self.probe_clips = ClipFeeder(
                train_store.subset(PROBE_EPISODES), video_length, device, "always", 0
            )

    def calibrated(self, frames: torch.Tensor, context_frames: int) -> torch.Tensor:
        """A rollout's frames as the latest score judged them: shrunk by its a_h when there are any (videos)."""
        if self.shrinkage is None:
            return frames
        return apply_shrinkage(frames.float(), context_frames, self.baselines.mean_frame, self.shrinkage)

    def score(self, model, clips: int, batch_size: int, sample: bool, autocast) -> dict:
        from aime_core.loaders import first_clips  # noqa: PLC0415
        from aime_core.probe import StateProbe, score_states  # noqa: PLC0415

        self.shrinkage = None
        if self.shrink_clips is not None:
            fit_clips = first_clips(self.shrink_clips, clips, batch_size)
            self.shrinkage = fit_shrinkage(
                model, fit_clips, self.k, autocast, self.baselines.mean_frame, sample
            )
        result = evaluate(
            model,
            first_clips(self.clips, clips, batch_size),
            self.k,
            sample,
            autocast,
            self.baselines,
            self.shrinkage,
        )
        if self.probe_clips is not None:
            model.eval()
            probe = StateProbe.fit(model, first_clips(self.probe_clips, clips, batch_size, True), autocast)
            held = first_clips(self.clips, clips, batch_size, with_states=True)
            result |= score_states(model, probe, held, self.k, sample, autocast)
            model.train()
        return result
