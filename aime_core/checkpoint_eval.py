"""Score a saved checkpoint on its run's held-out episodes at any context length and rollout horizon.

Training evaluates within the training clip length (k context frames, video_length - k open-loop steps); a world
model is judged on longer rollouts too, where copy-last-frame degrades. This loads a checkpoint, rebuilds the
validation split its run used (same data file, val_fraction and seed), cuts clips of k + horizon frames and
reports the per-horizon errors next to copy-last-frame, with an optional video.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from aime_core import checkpoint as ckpt
from aime_core.config import TrainConfig, from_dict
from aime_core.data import DataError, EpisodeStore, dataset_split, file_frame_stats, read_info
from aime_core.evaluate import PROBE_EPISODES, HeldOut
from aime_core.loaders import ClipFeeder, first_clips
from aime_core.model.aime import AIME
from aime_core.train import TrainError, pick_device
from aime_core.trainer import amp_dtype, autocast
from aime_core.video import panel_frames, write_mp4


def load_model(
    path: str | Path, device: torch.device, raw_weights: bool = False
) -> tuple[AIME, TrainConfig, dict]:
    """The model of a checkpoint (eval mode), its run's config, and the checkpoint's epoch/step and which weights
    it holds: the moving average where the run kept one (`ema_decay`), unless `raw_weights`."""
    try:
        state = ckpt.load(path, map_location=device)
    except (FileNotFoundError, ckpt.CheckpointError) as exc:  # weights only: a pickle payload never runs
        raise TrainError(str(exc)) from exc
    except Exception as exc:  # torch.load of a foreign or truncated file: pickle, zip or EOF errors
        raise TrainError(
            f"{path} is not an AIME checkpoint: torch cannot read it ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict) or "model" not in state or "model_hparams" not in state:
        raise TrainError(f"{path} is not an AIME checkpoint (no model or model_hparams in it)")
    model = AIME(**state["model_hparams"]).to(device)
    weights = "ema" if state.get("ema") and not raw_weights else "raw"
    model.load_state_dict(ckpt.eval_state_dict(state) if weights == "ema" else state["model"])
    model.eval()
    cfg = from_dict(TrainConfig, state.get("config", {}))
    return model, cfg, {"epoch": state.get("epoch"), "step": state.get("step"), "weights": weights}


def evaluate_checkpoint(
    path: str | Path,
    *,
    horizon: int = 0,
    context: int = 0,
    clips: int = 0,
    data: str | None = None,
    device: str = "auto",
    sample: bool = False,
    samples: int = 0,
    shrinkage: bool | None = None,
    raw_weights: bool = False,
    amp: bool | None = None,
    video: str | Path | None = None,
    video_clips: int = 4,
    states: bool = False,
) -> dict:
    """Per-horizon rollout MSE/PSNR against copy-last-frame and the mean training frame (all pixels and moving
    pixels), the state-space scores when the data has states, and reconstruction scores, as training's
    evaluation returns them, plus where the result came from. 0 for `context`/`horizon`/`clips` means the
    run's own setting, and for `samples` (the average of that many sampled rollouts) the run's `rollout_samples`.
    `states=True` makes a dataset without physics states an error instead of skipping them. `shrinkage` (None:
    the run's rollout_shrinkage) calibrates the rollouts toward the mean frame (aime_core/shrinkage.py).
    `raw_weights` scores a run's trained weights instead of their moving average (`ema_decay`)."""
    dev = pick_device(device)
    model, cfg, where = load_model(path, dev, raw_weights)
    data_path = data or cfg.data_path or ""
    if not data_path or not Path(data_path).exists():
        raise TrainError(f"dataset {data_path} does not exist (the checkpoint's data path); pass --data PATH")
    k = context or cfg.rollout_context or cfg.video_length // 2
    H = horizon or cfg.eval_horizon or cfg.video_length - k
    clips = clips or cfg.eval_clips
    if k < 1 or H < 1 or clips < 1:
        raise TrainError(f"context, horizon and clips must be at least 1 (got {k}, {H}, {clips})")
    if samples < 0:
        raise TrainError(f"samples must be 0 (the run's rollout_samples) or a positive count, got {samples}")
    if samples:
        model.rollout_samples = samples
    try:
        info = read_info(data_path)
        if states and not info.get("state_dim"):
            raise TrainError(
                f"{data_path} has no physics states (the `states` datasets came with format 2): recollect it with "
                "`aime collect` to score rollouts in state space, or drop --states"
            )
        train_ids, val_ids = dataset_split(info, cfg.val_fraction)
        store = EpisodeStore.load(data_path, val_ids or train_ids[:1])
        probe_store = EpisodeStore.load(data_path, train_ids[:PROBE_EPISODES])
        stats = file_frame_stats(data_path, train_ids)  # one episode in memory at a time
    except DataError as exc:
        raise TrainError(str(exc)) from exc
    shortest = min(len(o) for o in store.observations)
    if k + H > shortest:
        raise TrainError(
            f"context {k} + horizon {H} = {k + H} frames, but the shortest held-out episode has {shortest}; "
            f"allowed: context + horizon <= {shortest}"
        )
    if int(info["action_dim"]) != model.hparams["action_dim"]:
        raise TrainError(
            f"{data_path} has {info['action_dim']}-dim actions, the checkpoint's model "
            f"{model.hparams['action_dim']}: a different environment"
        )
    calibrate = cfg.rollout_shrinkage if shrinkage is None else shrinkage
    try:
        held_out = HeldOut(probe_store, store, stats, k, H, cfg.video_length, dev, shrinkage=calibrate)
    except DataError as exc:
        raise TrainError(str(exc)) from exc
    dtype = amp_dtype(dev, cfg.amp if amp is None else amp)
    mixed = functools.partial(autocast, dev, dtype)
    result = held_out.score(model, clips, cfg.batch_size, sample, mixed)
    model.eval()  # scoring hands the model back in train mode
    if video is not None:
        feeder = ClipFeeder(store, k + H, dev, "always", 0)
        frames, actions = next(first_clips(feeder, video_clips, video_clips))
        with torch.no_grad(), mixed():
            pred = model.generate(frames[:, :k], actions, k, sample=sample)
        grid = panel_frames(frames.float() / 255, held_out.calibrated(pred, k).float(), k, cfg.video_length)
        result["video"] = write_mp4(video, grid)
    result.update(
        checkpoint=str(path),
        data=str(data_path),
        val_episodes=len(store.observations),
        video_length=cfg.video_length,
        rollout_samples=model.rollout_samples,
        **where,
    )
    return result
