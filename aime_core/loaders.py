"""Feeding clips to the trainer: device-resident uint8 frames when they fit, else a DataLoader with workers."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from aime_core.data import ClipDataset, EpisodeStore, GpuClipSampler


class ClipFeeder:
    """Deterministic batches for one epoch: the order depends only on (seed, epoch), so resume can replay it."""

    def __init__(
        self,
        store: EpisodeStore,
        video_length: int,
        device: torch.device,
        mode: str,
        workers: int,
        stride: int | None = None,
        past: int = 0,
    ):
        """stride: frames between clip starts (default video_length: disjoint clips; 1: every position).
        past: frames after each clip served with it, and a third item valid [B,T] (overshoot_past_clip)."""
        self.device = device
        on_device = mode == "always" or (
            mode == "auto" and (device.type == "cpu" or GpuClipSampler.fits(store, device))
        )
        # On the CPU the frames are in RAM either way: cutting clips by index beats DataLoader workers.
        self.kind = "device" if on_device else "dataloader"
        if on_device:
            self.sampler = GpuClipSampler(store, video_length, device, stride, past)
            self.num_clips = len(self.sampler)
        else:
            self.dataset = ClipDataset(store, video_length, stride, past)
            self.workers = workers
            self.num_clips = len(self.dataset)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.num_clips // batch_size)

    @property
    def has_states(self) -> bool:
        return self.kind == "device" and self.sampler.states is not None

    def batches(
        self, batch_size: int, seed: int, epoch: int, shuffle=True, drop_last=True, with_states=False
    ) -> Iterator:
        """(frames uint8 [B,T,3,H,W], actions [B,T,A]) on the device; full batches only with drop_last.
        with_states (device-held data only) adds the physics states [B,T,S]; a feeder with `past` frames adds
        valid [B,T] instead."""
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        drop_last = drop_last and self.num_clips >= batch_size
        if self.kind == "device":
            yield from self.sampler.batches(batch_size, shuffle, gen, drop_last, with_states)
            return
        assert not with_states, "states are only served from device-held data"
        # The same permutation as the device path (and the same on resume): an explicit index order.
        n = len(self.dataset)
        order = (torch.randperm(n, generator=gen) if shuffle else torch.arange(n)).tolist()
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=batch_size,
            sampler=order,
            drop_last=drop_last,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for batch in loader:
            yield tuple(t.to(self.device, non_blocking=True) for t in batch)


def first_clips(feeder: ClipFeeder, n: int, batch_size: int, with_states: bool = False) -> Iterator:
    """Batches covering at most n clips, drawn across episodes, the same clips at every evaluation."""
    seen = 0
    batches = feeder.batches(
        batch_size, seed=7, epoch=0, shuffle=True, drop_last=False, with_states=with_states
    )
    for batch in batches:
        take = min(len(batch[0]), n - seen)
        if take <= 0:
            return
        yield tuple(t[:take] for t in batch)
        seen += take
