"""The AIME world model: encoder -> causal Perceiver context -> posterior / DPGMM prior -> LSTM -> decoder.

Shapes: frames uint8 [B,T,3,H,W] (or float in [0,1]), actions float [B,T,A] where frame t follows action t.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from aime_core.model.context import CausalPerceiver
from aime_core.model.core import Decoder, Dynamics, Posterior
from aime_core.model.dpgmm import DPGMMPrior, mixture_diagnostics
from aime_core.model.encoder import FrameEncoder

LOSS_TERMS = ("recon", "kl_z", "kl_sticks", "kl_alpha", "context_pred", "overshoot")
MODULES = ("encoder", "context", "posterior", "prior", "dynamics", "decoder")


def as_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float().div(255.0) if frames.dtype == torch.uint8 else frames.float()


class AIME(nn.Module):
    """The whole model and its loss (negative ELBO + context prediction)."""

    def __init__(
        self,
        action_dim: int,
        img_size: int = 64,
        latent_dim: int = 18,
        hidden_dim: int = 256,
        context_dim: int = 128,
        max_components: int = 8,
        use_3d_conv: bool = False,
        temporal_downsample: bool = False,
        perceiver_latents: int = 8,
        perceiver_heads: int = 4,
        recon_std: float = 1.0,
        overshoot_steps: int = 0,
        overshoot_fraction: float = 1.0,
        overshoot_past_fraction: float = 1.0,
        overshoot_past_starts: int = 2,
        rollout_latent: str = "mode",
        rollout_samples: int = 1,
    ):
        super().__init__()
        if context_dim % perceiver_heads:
            raise ValueError(
                f"context_dim {context_dim} must be divisible by perceiver_heads {perceiver_heads}"
            )
        self.hparams = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.latent_dim, self.hidden_dim, self.context_dim = latent_dim, hidden_dim, context_dim
        self.recon_scale = 0.5 / recon_std**2  # Gaussian likelihood with a fixed std per pixel
        self.overshoot_steps = overshoot_steps
        self.overshoot_fraction = overshoot_fraction  # share of open-loop predictions decoded per step
        self.overshoot_past_fraction = overshoot_past_fraction  # the same for targets past the clip
        self.overshoot_past_starts = overshoot_past_starts  # start frames whose open loop runs past the clip
        self.rollout_latent = (
            rollout_latent  # what open loop feeds forward: "mean" of the mixture or its "mode"
        )
        # Open-loop predictions from N > 1: the average of N rollouts that sample the prior, the model's expected
        # frame (what minimises squared error): it blurs where the model is unsure instead of guessing sharply.
        self.rollout_samples = rollout_samples
        self.stochastic = True  # False: posterior means and median sticks (deterministic, used by tests)
        self.encoder = FrameEncoder(img_size, hidden_dim, hidden_dim, use_3d_conv)
        self.context = CausalPerceiver(
            self.encoder.out_channels,
            self.encoder.num_tokens,
            context_dim,
            perceiver_latents,
            perceiver_heads,
            temporal_downsample,
        )
        self.posterior = Posterior(hidden_dim, hidden_dim, context_dim, latent_dim)
        self.prior = DPGMMPrior(hidden_dim + context_dim, latent_dim, hidden_dim, max_components)
        self.dynamics = Dynamics(latent_dim, context_dim, action_dim, hidden_dim)
        self.decoder = Decoder(latent_dim, hidden_dim, self.encoder.channels, self.encoder.sizes, img_size)

    @classmethod
    def from_config(cls, cfg: Any, action_dim: int) -> AIME:
        return cls(
            action_dim,
            img_size=cfg.img_size,
            latent_dim=cfg.latent_dim,
            hidden_dim=cfg.hidden_dim,
            context_dim=cfg.context_dim,
            max_components=cfg.max_components,
            use_3d_conv=cfg.use_3d_conv,
            temporal_downsample=cfg.temporal_downsample,
            perceiver_latents=cfg.perceiver_latents,
            perceiver_heads=cfg.perceiver_heads,
            recon_std=cfg.recon_std,
            overshoot_steps=cfg.overshoot_steps,
            overshoot_fraction=cfg.overshoot_fraction,
            overshoot_past_fraction=cfg.overshoot_past_fraction,
            overshoot_past_starts=cfg.overshoot_past_starts,
            rollout_latent=cfg.rollout_latent,
            rollout_samples=cfg.rollout_samples,
        )

    # ------------------------------------------------------------------------------------------------------
    def observe(self, emb, ctx, actions, sample: bool, state=None):
        """Filter through observed frames: per step h_t, z_t ~ q, c^_t. Returns stacked [B,T,...] and the end state."""
        B, T = emb.shape[:2]
        if state is None:
            h = emb.new_zeros(B, self.hidden_dim, dtype=torch.float32)
            state = (h, h.clone(), h.new_zeros(B, self.latent_dim), h.new_zeros(B, self.context_dim))
        h, cell, z, c_hat = state
        keys = ("h", "cell", "z", "mu", "std", "c_prev", "c_hat")
        out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for t in range(T):
            out["c_prev"].append(c_hat)
            h, cell = self.dynamics.step(z, c_hat, actions[:, t], (h, cell))
            mu, std = self.posterior(emb[:, t], h, ctx[:, t])
            z = mu + std * torch.randn_like(std) if sample else mu
            c_hat = self.dynamics.predict_context(h, z)
            for k, v in (("h", h), ("cell", cell), ("z", z), ("mu", mu), ("std", std), ("c_hat", c_hat)):
                out[k].append(v)
        return {k: torch.stack(v, 1) for k, v in out.items()}, (h, cell, z, c_hat)

    def forward(
        self,
        frames,
        actions,
        beta: float = 1.0,
        context_weight: float = 0.1,
        free_nats: float = 0.0,
        inject_nan: str | None = None,
        kl_balance: float = 0.5,
        overshoot_weight: float = 1.0,
        observed: int | None = None,
        valid: torch.Tensor | None = None,
    ):
        """Loss terms per frame (mean over batch and time) and the total. Returns (loss, terms, log_pi).

        observed: the clip is the first `observed` frames (default all); the frames and actions after it are
        overshooting's targets only (overshoot_past_clip), with `valid` [B,T] False where the episode had ended.
        """
        x_all = as_float(frames)
        assert actions.shape[:2] == x_all.shape[:2], (actions.shape, x_all.shape)
        x = x_all if observed is None else x_all[:, :observed]
        B, T = x.shape[:2]
        tokens, emb = self.encoder(x, self.decoder.mean_image.detach())  # [B,T,N,C], [B,T,E]
        ctx = self.context(tokens)  # [B,T,Dc], causal
        obs, _ = self.observe(emb, ctx, actions, sample=self.stochastic)
        p = self.prior(torch.cat([obs["h"], obs["c_prev"].to(obs["h"].dtype)], -1))  # p(z_t | h_t, c_{t-1})
        with torch.autocast(x.device.type, enabled=False):
            log_pi = self.prior.log_weights(p, sample=self.stochastic)  # [B,T,K]
            z, mu, std = obs["z"].float(), obs["mu"], obs["std"]
            kl_z, kl_sticks = self.prior.kl_terms(p, z, mu, std, log_pi)
            # KL balancing (DreamerV2): the same value, but its gradient moves the prior toward the posterior
            # with weight kl_balance and the posterior toward the prior with 1 - kl_balance.
            p_sg = {k: v.detach() for k, v in p.items()}
            to_prior = self.prior.kl_terms(p, z.detach(), mu.detach(), std.detach(), log_pi)[0]
            to_post = self.prior.kl_terms(p_sg, z, mu, std, log_pi.detach())[0]
            kl_z_loss = kl_balance * to_prior + (1.0 - kl_balance) * to_post
            kl_alpha = self.prior.kl_alpha() / (B * T)  # a global variable: its KL counted once per batch
        recon = self.decoder(obs["z"], obs["h"])  # [B,T,3,H,W], no path from x except through z
        terms = {
            "recon": self.recon_scale * ((recon.float() - x) ** 2).sum((-3, -2, -1)).mean(),
            "kl_z": kl_z.mean(),
            "kl_sticks": kl_sticks.mean(),
            "kl_alpha": kl_alpha,
            "context_pred": ((obs["c_hat"].float() - ctx.detach().float()) ** 2).sum(-1).mean(),
            "overshoot": self.overshoot(obs, actions, x_all, self.overshoot_steps, valid)
            if self.overshoot_steps
            else x.new_zeros(()),
        }
        if inject_nan is not None:  # test hook: the term goes NaN (keeping the graph, so its grads go NaN)
            if inject_nan not in terms:
                raise ValueError(f"inject_nan_term must be one of {', '.join(terms)}, got {inject_nan!r}")
            terms[inject_nan] = terms[inject_nan] * float("nan")
        # Free bits: below free_nats the latent KL exerts no pull, so z is not collapsed onto the prior early.
        kl_z_loss = kl_z_loss.mean() * (float("nan") if inject_nan == "kl_z" else 1.0)
        kl = kl_z_loss.clamp(min=free_nats) + terms["kl_sticks"] + terms["kl_alpha"]
        loss = terms["recon"] + beta * kl + context_weight * terms["context_pred"]
        loss = loss + overshoot_weight * terms["overshoot"]
        return loss, terms, log_pi

    def prior_latent(self, h, c_prev, sample: bool = False) -> torch.Tensor:
        """z_t from the DPGMM prior p(z | h_t, c_{t-1}): a sample, or (deterministic) the mixture's mean or mode.

        The mean sum_k pi_k mu_k (sticks at their medians) is differentiable in every component, so training
        through it (overshooting) teaches the prior what open loop needs; the mode picks one component's mean.
        """
        p = self.prior(torch.cat([h, c_prev.to(h.dtype)], -1))
        log_pi = self.prior.log_weights(p, sample)
        if sample or self.rollout_latent == "mode":
            return self.prior.sample(p, log_pi, sample)
        return (log_pi.exp().unsqueeze(-1) * p["mu"]).sum(-2)

    def overshoot(self, obs: dict, actions, x, steps: int, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Observation overshooting (PlaNet's latent overshooting, scored on frames): from the filtered state
        after every frame t, run the dynamics and the prior open loop for d = 1..steps and decode; the term is
        the reconstruction loss of frame t+d, averaged over every scored (t, d) pair inside the clip.

        When x (and actions) run past the clip the states were filtered on (overshoot_past_clip), the open loop
        of `overshoot_past_starts` random start frames also continues into those frames, with `valid` [B,T]
        masking the ones past an episode's end; its pairs join the same average.

        steps = 1 is the one-step prior prediction decode(prior(h_{t+1}), h_{t+1}) with the teacher-forced h.
        """
        T_obs = obs["h"].shape[1]
        total, count = self._overshoot_inside(obs, actions[:, :T_obs], x[:, :T_obs], min(steps, T_obs - 1))
        if x.shape[1] > T_obs and self.overshoot_past_starts:
            past_total, past_count = self._overshoot_past(obs, actions, x, steps, valid)
            total, count = total + past_total, count + past_count
        if torch.is_tensor(count):  # weighted: every picked target may have been past its episode's end
            count = count.clamp_min(1.0)
        return self.recon_scale * total / count

    def _decoded_rows(self, rows: int, fraction: float, device) -> torch.Tensor | None:
        """A random share of `rows` open-loop predictions to decode (None = all): the decoder dominates the cost."""
        if fraction >= 1.0:
            return None
        return torch.randperm(rows, device=device)[: max(1, round(fraction * rows))]

    def _overshoot_inside(self, obs: dict, actions, x, steps: int) -> tuple[torch.Tensor, torch.Tensor | int]:
        """Summed squared error and count of the open-loop predictions whose target is inside the clip."""
        B, T = x.shape[:2]
        # Open-loop states for all start frames at once: [B, T-d] shrinks by one start per step.
        h, cell, z, c_hat = obs["h"], obs["cell"], obs["z"], obs["c_hat"]
        picked = []
        for d in range(1, steps + 1):
            n = T - d  # starts t = 0..T-1-d have a target t+d inside the clip
            h, cell = self.dynamics.step(
                z[:, :n].flatten(0, 1),
                c_hat[:, :n].flatten(0, 1),
                actions[:, d:].flatten(0, 1),
                (h[:, :n].flatten(0, 1), cell[:, :n].flatten(0, 1)),
            )
            z = self.prior_latent(h, c_hat[:, :n].flatten(0, 1), sample=False)
            c_hat = self.dynamics.predict_context(h, z)
            target = x[:, d:].flatten(0, 1)
            rows = self._decoded_rows(h.shape[0], self.overshoot_fraction, h.device)
            if rows is None:
                picked.append((z, h, target))
            else:
                picked.append((z[rows], h[rows], target[rows]))
            h, cell, z, c_hat = (v.view(B, n, -1) for v in (h, cell, z, c_hat))
        return self._decoded_error(picked)

    def _decoded_error(
        self, picked: list, weights: list | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | int]:
        """Decode the picked open-loop predictions (z, h, target) of every depth in one decoder call (one call per
        depth costs its fixed overhead ~30 times) -> summed squared error and count (the summed weights)."""
        if not picked:
            return self.decoder.mean_image.new_zeros(()), 0
        z, h, target = (torch.cat(parts) for parts in zip(*picked, strict=True))
        err = ((self.decoder(z, h).float() - target) ** 2).sum((-3, -2, -1))
        if weights is None:
            return err.sum(), err.numel()
        weight = torch.cat(weights)
        return (err * weight).sum(), weight.sum()

    def _overshoot_past(
        self, obs: dict, actions, x, steps: int, valid
    ) -> tuple[torch.Tensor, torch.Tensor | int]:
        """Summed squared error and count of the predictions past the clip: the open loop from a few random
        start frames runs `steps` deep into the frames after the clip (targets past x or the episode's end are
        not scored). A few starts, not all: the dynamics run for every row at every depth, and their cost, not
        the decoder's, is what grows with the depth (measured on the cpu profile: every start to 30 steps
        made a step 1.8x as long)."""
        B, T_obs = obs["h"].shape[:2]
        T = x.shape[1]
        starts = torch.randperm(T_obs)[: self.overshoot_past_starts]  # the same for the whole batch
        m = len(starts)
        pick = starts.to(x.device)
        h, cell, z, c_hat = (obs[k][:, pick].flatten(0, 1) for k in ("h", "cell", "z", "c_hat"))  # [B*m, .]
        picked, weights = [], []
        for d in range(1, steps + 1):
            # The target frame of each start, on the CPU: deciding what to score needs no device sync.
            pos = starts + d
            if int(pos.min()) >= T:
                break
            at = pos.clamp(max=T - 1).to(x.device)
            h, cell = self.dynamics.step(z, c_hat, actions[:, at].flatten(0, 1), (h, cell))
            z_next = self.prior_latent(h, c_hat, sample=False)
            c_hat, z = self.dynamics.predict_context(h, z_next), z_next
            past = ((pos >= T_obs) & (pos < T)).nonzero().squeeze(1)  # starts whose target is past the clip
            if not len(past):
                continue
            rows = (torch.arange(B)[:, None] * m + past[None, :]).flatten().to(x.device)  # rows b*m + j
            keep = self._decoded_rows(rows.numel(), self.overshoot_past_fraction, x.device)
            rows = rows if keep is None else rows[keep]
            picked.append((z[rows], h[rows], x[:, at].flatten(0, 1)[rows]))
            if valid is None:
                weights.append(x.new_ones(rows.numel()))
            else:  # frames past the episode's end weigh nothing
                weights.append(valid[:, at].flatten(0, 1)[rows].to(x.dtype))
        return self._decoded_error(picked, weights)

    @torch.no_grad()
    def set_pixel_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Data-dependent init from the training frames [3,H,W] in [0,1]: the decoder's offset (mean) and the
        encoder's input scale (std, floored at 0.05 so static pixels are not blown up)."""
        self.decoder.mean_image.copy_(mean.to(self.decoder.mean_image))
        self.encoder.pixel_std.copy_(std.clamp_min(0.05).to(self.encoder.pixel_std))

    def diagnostics(self, log_pi: torch.Tensor) -> dict[str, float]:
        shape, rate = self.prior.alpha_params()
        return mixture_diagnostics(log_pi, float((shape / rate).detach()))

    # ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, frames, actions, context_frames: int, sample: bool = False) -> dict[str, torch.Tensor]:
        """Observe `context_frames` frames, then run open loop with `actions`.

        Returns frames [B,T_a,3,H,W] in [0,1] and the features (h, z) [B,T_a,*] behind them. The first k outputs
        are reconstructions (posterior means); after that z_t comes from the DPGMM prior (sampled, or its mean
        or mode as `rollout_latent` says) and the dynamics use their own context c^, exactly as in training.
        With `rollout_samples` N > 1 (and sample False) every output is the average over N sampled rollouts.
        actions may run past the training clip length.
        """
        if (
            sample or self.rollout_samples <= 1 or context_frames >= actions.shape[1]
        ):  # no open loop: one pass
            return self._rollout(frames, actions, context_frames, sample)
        total: dict[str, torch.Tensor] = {}
        # A private, fixed random stream: the same clips always get the same prediction (evaluations are
        # reproducible), and the training RNG is not advanced (resume stays bit-exact).
        cuda = [frames.device] if frames.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(0)
            for _ in range(self.rollout_samples):
                for key, value in self._rollout(frames, actions, context_frames, True).items():
                    total[key] = total[key] + value if key in total else value
        return {key: value / self.rollout_samples for key, value in total.items()}

    def _rollout(self, frames, actions, context_frames: int, sample: bool) -> dict[str, torch.Tensor]:
        k, T = context_frames, actions.shape[1]
        assert 1 <= k <= T and frames.shape[1] >= k, (k, T, frames.shape)
        x = as_float(frames[:, :k])
        tokens, emb = self.encoder(x, self.decoder.mean_image.detach())
        obs, (h, cell, z, c_hat) = self.observe(emb, self.context(tokens), actions[:, :k], sample=False)
        preds, hs, zs = [self.decoder(obs["z"], obs["h"]).float()], [obs["h"]], [obs["z"]]
        for t in range(k, T):
            h, cell = self.dynamics.step(z, c_hat, actions[:, t], (h, cell))
            z = self.prior_latent(h, c_hat, sample)
            c_hat = self.dynamics.predict_context(h, z)
            preds.append(self.decoder(z, h).float().unsqueeze(1))
            hs.append(h.unsqueeze(1))
            zs.append(z.unsqueeze(1))
        return {"frames": torch.cat(preds, 1).clamp(0.0, 1.0), "h": torch.cat(hs, 1), "z": torch.cat(zs, 1)}

    @torch.no_grad()
    def generate(self, frames, actions, context_frames: int, sample: bool = False) -> torch.Tensor:
        """Frames [B,T_a,3,H,W] in [0,1] of `rollout`: k observed (reconstructed), then open loop."""
        return self.rollout(frames, actions, context_frames, sample)["frames"]

    @torch.no_grad()
    def reconstruct(self, frames, actions) -> torch.Tensor:
        """Teacher-forced reconstructions (posterior means) of every frame -> [B,T,3,H,W] in [0,1]."""
        return self._rollout(frames, actions, frames.shape[1], sample=False)["frames"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def psnr_from_mse(mse: float) -> float:
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))
