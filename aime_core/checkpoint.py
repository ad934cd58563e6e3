"""Checkpoints: model, optimiser, scaler, scheduler, RNG states, position in training, resolved config."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import re
import shutil
import warnings
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
        **({"ema": trainer.ema} if getattr(trainer, "ema", None) is not None else {}),
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch says "unexpected pos N vs M" for a full disk
        problem = write_problem(path.parent, exc)  # before the .tmp goes: it may hold the last free bytes
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise CheckpointWriteError(
            f"could not write checkpoint {path}: {problem}; the previous checkpoint is kept"
        ) from exc
    return str(path)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names the path and the cause (disk full, read-only...)."""


def write_problem(directory: str | Path, exc: BaseException | None = None) -> str:
    """Why writing into `directory` failed, in words that name it: "no space left on <dir>", read-only, denied."""
    directory = Path(directory)
    err, text = getattr(exc, "errno", None), str(exc or "")
    try:
        free: int | None = shutil.disk_usage(directory).free
    except OSError:
        free = None
    space = f"no space left on {directory} ({free if free is not None else '?'} bytes free)"
    if err == errno.ENOSPC or "No space left" in text:
        return space
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if err == errno.EROFS or "Read-only file system" in text or read_only:
        return f"{directory} is on a read-only file system"
    if err in (errno.EACCES, errno.EPERM) or (directory.exists() and not os.access(directory, os.W_OK)):
        return f"no permission to write to {directory}"
    if err == errno.EDQUOT:
        return f"disk quota exceeded on {directory}"
    if free is not None and free < 2**20:  # torch reports a full disk as "unexpected pos N vs M"
        return space
    first = text.strip().splitlines()[0] if text.strip() else ""
    return (
        f"writing to {directory} failed ({type(exc).__name__}: {first})"
        if exc
        else f"cannot write {directory}"
    )


class CheckpointError(ValueError):
    """The file is not a checkpoint this code wrote: unreadable, or holding objects a checkpoint never holds."""


def _safe_types() -> list:
    """The only non-tensor types a checkpoint (or NaN dump) holds beyond plain containers and scalars: numpy's
    RNG state (`np.random.get_state()` is a tuple with a uint32 array). Nothing here can run code on load."""
    try:
        from numpy._core.multiarray import _reconstruct  # noqa: PLC0415 - numpy 2
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct  # noqa: PLC0415

    return [np.ndarray, np.dtype, _reconstruct, *{type(np.dtype(t)) for t in ("uint32", "float64", "int64")}]


def load(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Read a checkpoint or NaN dump without executing anything in it (`weights_only=True`, with the few types a
    checkpoint holds allow-listed). Used for every load: resume, `aime evaluate`, dump replay, sweeps, the worker.
    A missing file is FileNotFoundError; anything that is not such a checkpoint is CheckpointError, never run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_safe_types()):
            warnings.simplefilter(
                "ignore"
            )  # "pickle protocol 4" notes about plain pickles: the error says it
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        why = (
            f"refused to load it: it refers to {found.group(1)}, which a checkpoint never holds (nothing ran)"
            if found
            else f"torch cannot read it ({detail.group(1).strip() if detail else type(exc).__name__})"
        )
        raise CheckpointError(f"{path} is not an AIME checkpoint: {why}") from None
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        KeyError,
        AttributeError,
    ) as exc:  # not a zip, truncated
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty"
        raise CheckpointError(
            f"{path} is not an AIME checkpoint: torch cannot read it ({type(exc).__name__}: {text})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not an AIME checkpoint (it holds a {type(state).__name__}, not a dict)"
        )
    return state


def eval_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """The weights a checkpoint is evaluated with: the moving average where the run kept one, else the model's."""
    return {**state["model"], **state.get("ema", {})}


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
    # A checkpoint from before ema_decay was set starts the average from its weights.
    if getattr(trainer, "ema", None) is not None:
        source = state.get("ema") or state["model"]
        for name, value in trainer.ema.items():
            value.copy_(source[name])
    set_rng_state(state["rng"])
