"""Checkpoints: model, optimiser, scaler, scheduler, RNG states, position in training, resolved config."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def save(path: str | Path, trainer, config: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """Write atomically (temporary file + rename): a crash never leaves a half checkpoint under the name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": trainer.raw_model.state_dict(),
        "model_hparams": trainer.raw_model.hparams,
        "optimizer": trainer.opt.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "scheduler": trainer.sched.state_dict(),
        "rng": rng_state(),
        "epoch": trainer.epoch,  # epochs fully done
        "batch_in_epoch": trainer.batch_in_epoch,  # batches of the current epoch already consumed
        "step": trainer.step,
        "nan_skips": trainer.nan_skips,
        "best_val_loss": trainer.best_val_loss,
        "config": config,
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return str(path)


def load(path: str | Path, map_location="cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=False)


def restore(trainer, state: dict[str, Any]) -> None:
    """Put a trainer back exactly where the checkpoint stopped (the caller checks the model shapes first)."""
    trainer.raw_model.load_state_dict(state["model"])
    trainer.opt.load_state_dict(state["optimizer"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.sched.load_state_dict(state["scheduler"])
    trainer.epoch, trainer.batch_in_epoch, trainer.step = (
        state["epoch"],
        state["batch_in_epoch"],
        state["step"],
    )
    trainer.nan_skips, trainer.best_val_loss = state["nan_skips"], state["best_val_loss"]
    set_rng_state(state["rng"])
