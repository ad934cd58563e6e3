"""Evaluation on held-out clips: reconstruction MSE/PSNR/SSIM and open-loop rollouts vs copy-last-frame."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aime_core.model.aime import as_float


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


@torch.no_grad()
def evaluate(model, batches, context_frames: int, sample: bool, autocast) -> dict:
    """Scores over held-out clips. Rollouts observe k frames, then run open loop on the recorded actions.

    Returns recon_mse/psnr/ssim, per-horizon lists (h = 1..T-k) for the model and copy-last-frame, and means.
    """
    model.eval()
    k = context_frames
    recon_se, recon_psnr, recon_ssim, n = 0.0, 0.0, 0.0, 0
    roll_mse, base_mse, roll_psnr, base_psnr = None, None, None, None
    for frames, actions in batches:
        gt = as_float(frames)  # [B,T,3,H,W]
        B, T = gt.shape[:2]
        assert 1 <= k < T, f"rollout_context {k} must be between 1 and video_length - 1 ({T - 1})"
        with autocast():
            recon = model.reconstruct(frames, actions).float()
            pred = model.generate(frames[:, :k], actions, k, sample=sample).float()
        flat_r, flat_g = recon.flatten(0, 1), gt.flatten(0, 1)
        frame_mse = ((flat_r - flat_g) ** 2).flatten(1).mean(1)  # [B*T]
        recon_se += float(frame_mse.sum())
        recon_psnr += float(psnr(frame_mse).sum())
        recon_ssim += float(ssim(flat_r, flat_g).sum())
        future = gt[:, k:]  # [B,H,...]
        last = gt[:, k - 1 : k].expand_as(future)  # copy-last-frame baseline
        m_err = ((pred[:, k:] - future) ** 2).flatten(2).mean(2)  # [B,H]
        b_err = ((last - future) ** 2).flatten(2).mean(2)
        sums = [m_err.sum(0), b_err.sum(0), psnr(m_err).sum(0), psnr(b_err).sum(0)]
        if roll_mse is None:
            roll_mse, base_mse, roll_psnr, base_psnr = sums
        else:
            roll_mse, base_mse, roll_psnr, base_psnr = (
                a + b for a, b in zip((roll_mse, base_mse, roll_psnr, base_psnr), sums, strict=True)
            )
        n += B
    model.train()
    if n == 0:
        return {}
    frames_seen = n * T
    out = {
        "context_frames": k,
        "horizon": list(range(1, T - k + 1)),
        "rollout_mse": (roll_mse / n).tolist(),
        "baseline_mse": (base_mse / n).tolist(),
        "rollout_psnr": (roll_psnr / n).tolist(),
        "baseline_psnr": (base_psnr / n).tolist(),
        "recon_mse": recon_se / frames_seen,
        "psnr": recon_psnr / frames_seen,
        "ssim": recon_ssim / frames_seen,
        "clips": n,
    }
    return out


def eval_metrics(result: dict) -> dict[str, float]:
    """The scalar eval/* metrics of docs/CONTRACTS.md (means over the horizon)."""

    def mean(xs):
        return sum(xs) / len(xs) if xs else math.nan

    return {
        "eval/recon_mse": result["recon_mse"],
        "eval/psnr": result["psnr"],
        "eval/ssim": result["ssim"],
        "eval/rollout_mse": mean(result["rollout_mse"]),
        "eval/rollout_psnr": mean(result["rollout_psnr"]),
        "eval/baseline_mse": mean(result["baseline_mse"]),
        "eval/baseline_psnr": mean(result["baseline_psnr"]),
    }
