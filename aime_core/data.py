"""Reading datasets for training: validated summaries, a by-episode split, and fixed-length clips.

Two ways to cut clips from the same clip grid (episode e, start s = 0, stride, 2*stride, ... while s+T <= len):
`ClipDataset` on the CPU for a DataLoader, and `GpuClipSampler`, which holds every frame on the device as uint8
and gathers clips there, so a training step copies nothing from the host.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from aime_core.h5io import DataError, format_info, open_checked, read_info

__all__ = [
    "DataError",
    "read_info",
    "format_info",
    "split_episodes",
    "dataset_split",
    "EpisodeStore",
    "ClipDataset",
    "GpuClipSampler",
    "dataset_bytes",
]


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic disjoint train/validation episode indices; both non-empty when num_episodes >= 2."""
    if num_episodes < 1:
        raise ValueError(f"need at least one episode to split, got {num_episodes}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.RandomState(seed).permutation(num_episodes)
    n_val = 0 if num_episodes < 2 else min(num_episodes - 1, max(1, round(num_episodes * val_fraction)))
    val = sorted(int(i) for i in order[:n_val])
    train = sorted(int(i) for i in order[n_val:])
    return train, val


def dataset_split(info: dict, val_fraction: float) -> tuple[list[int], list[int]]:
    """The train/validation episodes of a dataset: fixed by the dataset (its own seed), not by the training
    seed, so every seed of a group is scored on the same held-out episodes."""
    return split_episodes(int(info["episodes"]), val_fraction, int(info.get("seed", 0)))


class EpisodeStore:
    """The chosen episodes of one file, in memory as numpy arrays."""

    def __init__(self, path, episodes, observations, actions, rewards, info, states=None):
        self.path = str(path)
        self.episodes = list(episodes)
        self.observations: list[np.ndarray] = observations  # uint8 [T,H,W,3] per episode
        self.actions: list[np.ndarray] = actions  # float32 [T,A]
        self.rewards: list[np.ndarray] = rewards  # float32 [T]
        self.states: list[np.ndarray] | None = (
            states  # float32 [T,S] per episode, None when the file has none
        )
        self.info = info

    @classmethod
    def load(cls, path, episodes: list[int]) -> EpisodeStore:
        info = read_info(path)  # validates the layout first, so errors name what is missing
        bad = [e for e in episodes if not 0 <= e < info["episodes"]]
        if bad:
            raise DataError(f"{path}: episodes {bad} do not exist (the file has {info['episodes']})")
        obs, act, rew, states = [], [], [], []
        with open_checked(path) as f:
            for e in episodes:
                g = f[f"episode_{e}"]
                try:
                    obs.append(g["observations"][()])
                    act.append(g["actions"][()])
                    rew.append(g["rewards"][()])
                    if info["state_dim"]:
                        states.append(g["states"][()])
                except OSError as exc:  # a chunk that does not decompress: a damaged file
                    raise DataError(f"{path}: cannot read episode_{e} (damaged data): {exc}") from exc
        return cls(path, episodes, obs, act, rew, info, states if info["state_dim"] else None)

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def frames(self) -> int:
        return sum(len(o) for o in self.observations)

    def subset(self, n: int) -> EpisodeStore:
        """The first n episodes (a view of the same arrays)."""
        pick = slice(0, n)
        states = self.states[pick] if self.states is not None else None
        return EpisodeStore(
            self.path,
            self.episodes[pick],
            self.observations[pick],
            self.actions[pick],
            self.rewards[pick],
            self.info,
            states,
        )

    def frame_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel mean and std of every frame, float32 [H,W,3] in [0, 1]."""
        return frame_stats(self.observations)


def frame_stats(episodes) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and std over episodes of uint8 frames [T,H,W,3] (any iterable: arrays in memory, or read one
    by one from a file), accumulated per episode in float64 without a concatenated copy; float32 [H,W,3] each."""
    total = sq = None
    n = 0
    for obs in episodes:
        x = obs.astype(np.float64) / 255
        s1, s2 = x.sum(0), (x * x).sum(0)
        total, sq = (s1, s2) if total is None else (total + s1, sq + s2)
        n += len(obs)
    if total is None:
        raise DataError("no frames to compute pixel statistics from")
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def file_frame_stats(path, episodes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """frame_stats of some episodes of a file, read one episode at a time (memory: one episode)."""
    with open_checked(path) as f:
        return frame_stats(f[f"episode_{e}"]["observations"][()] for e in episodes)


def dataset_bytes(store: EpisodeStore) -> int:
    """Bytes the store's arrays take in memory (frames as uint8, actions and rewards as float32)."""
    return sum(
        o.nbytes + a.nbytes + r.nbytes
        for o, a, r in zip(store.observations, store.actions, store.rewards, strict=True)
    )


def _clip_grid(store: EpisodeStore, video_length: int, stride: int | None) -> list[tuple[int, int]]:
    """(position in store, start frame) of every clip; warns about episodes too short for one clip."""
    if video_length < 1:
        raise ValueError(f"video_length must be >= 1, got {video_length}")
    stride = video_length if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not store.observations:
        raise DataError(f"{store.path}: no episodes selected (a split with too few episodes?)")
    grid, short = [], []
    for k, obs in enumerate(store.observations):
        if len(obs) < video_length:
            short.append(store.episodes[k])
            continue
        grid += [(k, s) for s in range(0, len(obs) - video_length + 1, stride)]
    if not grid:
        longest = max((len(o) for o in store.observations), default=0)
        raise DataError(
            f"{store.path}: no episode is long enough for a {video_length}-frame clip "
            f"(longest has {longest} frames); collect longer episodes (--max-steps) or lower video_length"
        )
    if short:
        warnings.warn(
            f"{store.path}: skipping {len(short)} episode(s) shorter than {video_length} frames: {short[:10]}",
            stacklevel=3,
        )
    return grid


def _past_clip_frames(
    start: int, length: int, past: int, episode_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices in the episode of a clip and the `past` frames after it, clamped to the episode's last frame,
    and which of them exist (valid)."""
    steps = start + np.arange(length + past)
    return np.minimum(steps, episode_length - 1), steps < episode_length


class ClipDataset(torch.utils.data.Dataset):
    """Fixed-length clips on the CPU: (frames uint8 [T,3,H,W], actions float32 [T,A]); with `past` > 0 each clip
    runs on for `past` frames of its episode (targets for overshoot_past_clip) and a third item, valid bool [T],
    marks those that exist (False past the episode's end, where the last frame is repeated)."""

    def __init__(self, store: EpisodeStore, video_length: int, stride: int | None = None, past: int = 0):
        self.store = store
        self.video_length = video_length
        self.past = past
        self.grid = _clip_grid(store, video_length, stride)

    def __len__(self) -> int:
        return len(self.grid)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        k, s = self.grid[i]
        T = self.video_length
        if self.past:
            idx, valid = _past_clip_frames(s, T, self.past, len(self.store.observations[k]))
            frames = torch.from_numpy(self.store.observations[k][idx])  # fancy indexing copies: contiguous
            actions = torch.from_numpy(self.store.actions[k][idx])
            return frames.permute(0, 3, 1, 2).contiguous(), actions, torch.from_numpy(valid)
        frames = torch.from_numpy(np.ascontiguousarray(self.store.observations[k][s : s + T]))  # [T,H,W,3]
        actions = torch.from_numpy(np.ascontiguousarray(self.store.actions[k][s : s + T]))  # [T,A]
        return frames.permute(0, 3, 1, 2).contiguous(), actions


class GpuClipSampler:
    """Every frame on `device` as uint8 [N,3,H,W]; batches are gathered on the device by index arithmetic.
    With `past` > 0 each clip runs on for `past` frames of its episode, as in ClipDataset."""

    def __init__(
        self, store: EpisodeStore, video_length: int, device, stride: int | None = None, past: int = 0
    ):
        self.device = torch.device(device)
        self.video_length = video_length
        self.past = past
        grid = _clip_grid(store, video_length, stride)
        offsets = np.cumsum([0] + [len(o) for o in store.observations])  # episode k starts at offsets[k]
        frames = np.concatenate(store.observations)  # [N,H,W,3]
        self.frames = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).contiguous()  # [N,3,H,W]
        self.actions = torch.from_numpy(np.concatenate(store.actions)).to(self.device)  # [N,A]
        self.starts = torch.tensor([offsets[k] + s for k, s in grid], dtype=torch.long, device=self.device)
        # The last frame of each clip's episode: frames past it are clamped there and marked invalid.
        self.ends = torch.tensor([offsets[k + 1] - 1 for k, _ in grid], dtype=torch.long, device=self.device)
        # Physics states [N,S] aligned with the frames, when the file has them (for state-space scoring).
        self.states = (
            torch.from_numpy(np.concatenate(store.states)).to(self.device)
            if store.states is not None
            else None
        )
        self._steps = torch.arange(video_length + past, device=self.device)  # [T]

    def __len__(self) -> int:
        return len(self.starts)

    def batches(
        self,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        with_states: bool = False,
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches of (frames uint8 [B,T,3,H,W], actions float32 [B,T,A]), all on the device; with_states adds
        the physics states float32 [B,T,S]; with `past` frames, a third item valid bool [B,T] instead."""
        if with_states and self.states is None:
            raise DataError("this dataset has no physics states (collected before they were stored)")
        assert not (with_states and self.past), "states are served for plain clips only"
        n = len(self.starts)
        # The permutation is drawn on the CPU so a CPU generator gives the same order on every device.
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            if drop_last and len(idx) < batch_size:
                break
            rows = self.starts[idx][:, None] + self._steps[None, :]  # [B,T] global frame indices
            if self.past:
                ends = self.ends[idx][:, None]
                clamped = rows.minimum(ends)  # past the episode's end: its last frame, marked invalid
                yield self.frames[clamped], self.actions[clamped], rows <= ends
            elif with_states:
                yield self.frames[rows], self.actions[rows], self.states[rows]
            else:
                yield self.frames[rows], self.actions[rows]

    @staticmethod
    def fits(store: EpisodeStore, device, fraction: float = 0.5) -> bool:
        """True when the dataset takes less than `fraction` of the free memory of a CUDA device."""
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            return False
        free, _ = torch.cuda.mem_get_info(device)
        return dataset_bytes(store) < fraction * free


def load_split(path: str | Path, val_fraction: float, seed: int) -> tuple[EpisodeStore, EpisodeStore]:
    """Train and validation stores of a file, split by episode."""
    info = read_info(path)
    train, val = split_episodes(info["episodes"], val_fraction, seed)
    return EpisodeStore.load(path, train), EpisodeStore.load(path, val)
