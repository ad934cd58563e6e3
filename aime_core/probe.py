"""Scoring predictions in state space: a linear probe from the model's features to the physics state.

Pixels hide how well a rollout tracks the system: a blurry frame can have a low MSE. When the dataset stores the
physics state of every frame (`states`), a ridge regression is fitted from the teacher-forced features [h_t, z_t]
of training clips to the standardised states, then applied to the open-loop features of held-out clips. The error
is compared, per horizon, with the same two trivial predictors in state space: the last observed state, and the
mean training state (0 after standardisation, so its MSE is ~1 per dimension).
"""

from __future__ import annotations

import torch

from aime_core.data import DataError

RIDGE = 1e-3  # relative to the mean feature variance: enough to keep an over-complete feature set well posed


class StateProbe:
    """y = [features, 1] @ W in standardised state units; fitted by ridge regression in float64."""

    def __init__(self, weight: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        self.weight, self.mean, self.std = weight, mean, std

    @staticmethod
    def features(out: dict) -> torch.Tensor:
        return torch.cat([out["h"].float(), out["z"].float()], -1)  # [B,T,F]

    @classmethod
    def fit(cls, model, batches, autocast) -> StateProbe:
        """batches of (frames, actions, states) from training clips; features from posterior (filtered) steps."""
        feats, targets = [], []
        with torch.no_grad():
            for frames, actions, states in batches:
                with autocast():
                    out = model.rollout(frames, actions, frames.shape[1])
                feats.append(cls.features(out).flatten(0, 1).double())
                targets.append(states.flatten(0, 1).double())
        if not feats:
            raise DataError("no training clips with states to fit the state probe on")
        X, Y = torch.cat(feats), torch.cat(targets)
        mean, std = Y.mean(0), Y.std(0).clamp_min(1e-6)
        Xb = torch.cat([X, torch.ones_like(X[:, :1])], 1)
        gram = Xb.T @ Xb
        reg = RIDGE * gram.diagonal()[:-1].mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        reg[-1, -1] = 0.0  # the bias is not shrunk
        weight = torch.linalg.solve(gram + reg, Xb.T @ ((Y - mean) / std))
        return cls(weight, mean, std)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised states [...,S] from features [...,F]."""
        f = features.double()
        return torch.cat([f, torch.ones_like(f[..., :1])], -1) @ self.weight

    def standardise(self, states: torch.Tensor) -> torch.Tensor:
        return (states.double() - self.mean) / self.std


@torch.no_grad()
def score_states(model, probe: StateProbe, batches, context_frames: int, sample: bool, autocast) -> dict:
    """Per-horizon state MSE (standardised units, mean over dimensions and clips) of the open-loop rollout,
    of copy-last-state and of the mean training state; `state_ratio` = rollout / better baseline; and
    `state_probe_mse`, the probe's error on the observed (filtered) steps: the floor the rollout is held to."""
    k = context_frames
    sums: dict[str, torch.Tensor] = {}
    n = 0
    for frames, actions, states in batches:
        with autocast():
            out = model.rollout(frames[:, :k], actions, k, sample)
        pred = probe.predict(StateProbe.features(out))  # [B,T,S]
        truth = probe.standardise(states)
        future = truth[:, k:]
        errs = {
            "state_mse": ((pred[:, k:] - future) ** 2).mean(-1),
            "copy_last_state_mse": ((truth[:, k - 1 : k] - future) ** 2).mean(-1),
            "mean_state_mse": (future**2).mean(-1),
            "state_probe_mse": ((pred[:, :k] - truth[:, :k]) ** 2).mean(-1).mean(-1, keepdim=True),
        }
        for name, e in errs.items():
            sums[name] = sums[name] + e.sum(0) if name in sums else e.sum(0)
        n += len(frames)
    if n == 0:
        return {}
    res = {name: (v / n).tolist() for name, v in sums.items()}
    res["state_probe_mse"] = res["state_probe_mse"][0]
    res["state_ratio"] = [
        m / max(min(a, b), 1e-12)
        for m, a, b in zip(res["state_mse"], res["copy_last_state_mse"], res["mean_state_mse"], strict=True)
    ]
    return res
