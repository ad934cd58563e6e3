"""The dataset file format (DESIGN §4): writing episodes, validating a file, summarising it. Torch-free.

Layout of one file:

    root attrs   format_version, domain, task, seed, img_size, camera_id, action_shape, action_minimum,
                 action_maximum, num_episodes, frames, created_at, collector_version, fast_render,
                 render_backend, tier, preset, max_steps, action_repeat, compression, synthetic
    episode_{i}/ observations      uint8   [T,H,W,3]  frame rendered after actions[t]
                 actions           float32 [T,A]
                 rewards           float32 [T]       reward of the step that applied actions[t]
                 dones             bool    [T]       true at the last step only
                 first_observation uint8   [H,W,3]   frame rendered at reset, before the first action
                 states            float32 [T,S]     physics state after actions[t] (format 2; absent in 1)
                 attrs: length, seed, complete (written last: a group without it is an unfinished episode)
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT_VERSION = 2  # 2 added episode_{i}/states; version-1 files still read (without states)
COLLECTOR_VERSION = "aime-collect 1.0"

REQUIRED_ATTRS = (
    "format_version",
    "domain",
    "task",
    "seed",
    "img_size",
    "camera_id",
    "action_shape",
    "action_minimum",
    "action_maximum",
    "num_episodes",
    "frames",
    "created_at",
    "collector_version",
    "fast_render",
    "tier",
    "max_steps",
    "action_repeat",
)
# (name, dtype, shape after T with H/W/A as placeholders)
EPISODE_DATASETS = (
    ("observations", np.uint8, ("T", "H", "W", 3)),
    ("actions", np.float32, ("T", "A")),
    ("rewards", np.float32, ("T",)),
    ("dones", np.bool_, ("T",)),
    ("first_observation", np.uint8, ("H", "W", 3)),
)
# Settings that change the arrays: a .part file is only resumed when all of them agree with the command.
RESUME_KEYS = (
    "domain",
    "task",
    "seed",
    "img_size",
    "camera_id",
    "max_steps",
    "action_repeat",
    "fast_render",
    "compression",
    "synthetic",
)


class DataError(Exception):
    """A dataset file is missing, unreadable or not in the expected layout; the message names file and part."""


@dataclass
class Episode:
    """One collected episode, aligned as in the file layout."""

    index: int
    seed: int
    first_observation: np.ndarray  # uint8 [H,W,3]
    observations: np.ndarray  # uint8 [T,H,W,3]
    actions: np.ndarray  # float32 [T,A]
    rewards: np.ndarray  # float32 [T]
    states: np.ndarray | None = None  # float32 [T,S], the physics state after each step

    @property
    def length(self) -> int:
        return len(self.observations)


def episode_name(i: int) -> str:
    return f"episode_{i}"


def root_attrs(cfg: Any, action_shape, action_minimum, action_maximum) -> dict[str, Any]:
    """Root attributes for a CollectConfig and its environment's action spec (num_episodes/frames set later)."""
    return {
        "format_version": FORMAT_VERSION,
        "domain": cfg.domain,
        "task": cfg.task,
        "seed": int(cfg.seed),
        "img_size": int(cfg.img_size),
        "camera_id": int(cfg.camera_id),
        "action_shape": np.asarray(action_shape, dtype=np.int64),
        "action_minimum": np.asarray(action_minimum, dtype=np.float32),
        "action_maximum": np.asarray(action_maximum, dtype=np.float32),
        "num_episodes": 0,
        "frames": 0,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "collector_version": COLLECTOR_VERSION,
        "fast_render": bool(cfg.fast_render),
        "render_backend": "none" if cfg.synthetic else os.environ.get("MUJOCO_GL", ""),
        "tier": int(cfg.tier),
        "preset": cfg.preset or "",
        "max_steps": int(cfg.max_steps),
        "action_repeat": int(cfg.action_repeat),
        "compression": cfg.compression,
        "synthetic": bool(cfg.synthetic),
    }


def write_episode(f: h5py.File, ep: Episode, compression: str = "lzf") -> None:
    """Write one episode group; `complete` is set last so a crash mid-write leaves a detectably partial group."""
    T, H, W, _ = ep.observations.shape
    assert ep.observations.dtype == np.uint8 and ep.first_observation.shape == (H, W, 3)
    assert ep.actions.shape[0] == T and ep.rewards.shape == (T,), (ep.actions.shape, ep.rewards.shape)
    name = episode_name(ep.index)
    if name in f:  # an unfinished group from a killed run
        del f[name]
    g = f.create_group(name)
    opts = {"compression": compression}
    if compression == "gzip":
        opts["compression_opts"] = 4
    g.create_dataset("observations", data=ep.observations, chunks=(1, H, W, 3), **opts)  # chunked per frame
    g.create_dataset("actions", data=ep.actions.astype(np.float32))
    g.create_dataset("rewards", data=ep.rewards.astype(np.float32))
    dones = np.zeros(T, dtype=np.bool_)
    dones[-1] = True
    g.create_dataset("dones", data=dones)
    g.create_dataset("first_observation", data=ep.first_observation)
    if ep.states is not None:
        assert ep.states.shape[0] == T, (ep.states.shape, T)
        g.create_dataset("states", data=ep.states.astype(np.float32))
    g.attrs["length"] = T
    g.attrs["seed"] = ep.seed
    g.attrs["complete"] = True


def finished_episodes(f: h5py.File) -> int:
    """Number of complete episodes 0..n-1 at the start of a (partial) file."""
    n = 0
    while episode_name(n) in f and f[episode_name(n)].attrs.get("complete", False):
        n += 1
    return n


def _py(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_checked(path: str | Path) -> h5py.File:
    """Open a dataset file for reading, or raise DataError saying why it cannot be."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not an HDF5 dataset file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(
            f"{path}: not a readable HDF5 file (truncated, corrupt or another format): {exc}"
        ) from exc


def read_info(path: str | Path) -> dict[str, Any]:
    """Validate the layout and return root attributes plus episodes, frames, action_dim, bytes, episode_lengths."""
    path = Path(path)
    with open_checked(path) as f:
        missing = [a for a in REQUIRED_ATTRS if a not in f.attrs]
        if missing:
            raise DataError(
                f"{path}: not an AIME dataset: missing root attribute(s) {', '.join(missing)} "
                "(collect one with `aime collect`)"
            )
        info = {k: _py(v) for k, v in f.attrs.items()}
        if info["format_version"] not in (1, FORMAT_VERSION):
            raise DataError(
                f"{path}: format_version {info['format_version']} is not supported (expected 1 or {FORMAT_VERSION})"
            )
        n, size = int(info["num_episodes"]), int(info["img_size"])
        action_dim = int(np.prod(info["action_shape"]))
        if n <= 0:
            raise DataError(f"{path}: the file holds no episodes (num_episodes={n})")
        lengths, state_dims = [], set()
        for i in range(n):
            name = episode_name(i)
            if name not in f or not isinstance(f[name], h5py.Group):
                raise DataError(f"{path}: missing group {name} (num_episodes says {n})")
            g = f[name]
            if not g.attrs.get("complete", False):
                raise DataError(f"{path}: group {name} is incomplete (the collection was interrupted)")
            T = g["observations"].shape[0] if "observations" in g else None
            want = {"T": T, "H": size, "W": size, "A": action_dim}
            for ds, dtype, shape in EPISODE_DATASETS:
                if ds not in g:
                    raise DataError(f"{path}: {name} has no dataset {ds!r}")
                expect = tuple(want.get(s, s) for s in shape)
                if g[ds].dtype != dtype or g[ds].shape != expect:
                    raise DataError(
                        f"{path}: {name}/{ds} is {g[ds].dtype} {g[ds].shape}, expected "
                        f"{np.dtype(dtype)} {expect}"
                    )
            if "states" in g:
                st = g["states"]
                if st.dtype != np.float32 or st.ndim != 2 or st.shape[0] != T:
                    raise DataError(
                        f"{path}: {name}/states is {st.dtype} {st.shape}, expected float32 [{T}, S]"
                    )
                state_dims.add(int(st.shape[1]))
            else:
                state_dims.add(0)
            lengths.append(int(T))
    if sum(lengths) != int(info["frames"]):
        raise DataError(
            f"{path}: root attribute frames={info['frames']} but the episodes hold {sum(lengths)}"
        )
    info.update(
        path=str(path),
        episodes=n,
        frames=sum(lengths),
        action_dim=action_dim,
        img_size=size,
        bytes=path.stat().st_size,
        raw_bytes=sum(lengths) * size * size * 3,
        episode_lengths=lengths,
        # Size S of the per-frame physics state, 0 when the file has none (format 1, or not in every episode).
        state_dim=0 if 0 in state_dims or len(state_dims) != 1 else state_dims.pop(),
    )
    return info


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def format_info(info: dict[str, Any]) -> str:
    """A human summary of read_info's dict (what `aime data info` and `aime collect` print)."""
    lengths = info["episode_lengths"]
    lo, hi = min(lengths), max(lengths)
    length_text = f"{lo}" if lo == hi else f"{lo}-{hi} (mean {sum(lengths) / len(lengths):.1f})"
    if info.get("synthetic"):
        render = "procedural (no MuJoCo)"
    else:
        render = "fast (no shadows/reflections/MSAA)" if info.get("fast_render") else "standard DMC look"
        render = f"camera {info['camera_id']}, render {render}"
    size = info["img_size"]
    lines = [
        f"dataset      {info['path']}",
        f"environment  {info['domain']}-{info['task']}  (tier {info['tier']}, seed {info['seed']}"
        + (f", preset {info['preset']}" if info.get("preset") else "")
        + ")",
        f"episodes     {info['episodes']}  x  {length_text} steps  =  {info['frames']} frames",
        f"frames       {size}x{size} RGB uint8, {render}"
        + (f", {info['render_backend']}" if info.get("render_backend") not in (None, "", "none") else ""),
        f"actions      dim {info['action_dim']}  in [{', '.join(f'{v:g}' for v in info['action_minimum'])}]"
        f" .. [{', '.join(f'{v:g}' for v in info['action_maximum'])}], action_repeat {info['action_repeat']}",
        f"states       {info['state_dim']}-dim physics state per frame"
        if info.get("state_dim")
        else "states       none (recollect to score predictions in state space)",
        f"size         {_human_bytes(info['bytes'])} on disk, {_human_bytes(info['raw_bytes'])} of frames "
        f"uncompressed ({info.get('compression', '?')})",
        f"created      {info['created_at']} by {info['collector_version']} (format {info['format_version']})",
    ]
    return "\n".join(lines)
