"""Reading datasets: summary, by-episode split, CPU clips and GPU-style clips, clear errors on bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aime_core.data import (
    ClipDataset,
    DataError,
    EpisodeStore,
    GpuClipSampler,
    dataset_bytes,
    format_info,
    read_info,
    split_episodes,
)


def test_read_info_summary(synthetic_dataset):
    info = read_info(synthetic_dataset)
    assert (info["episodes"], info["frames"], info["action_dim"], info["img_size"]) == (6, 144, 2, 32)
    assert info["episode_lengths"] == [24] * 6
    assert (info["domain"], info["task"], info["tier"], info["max_steps"]) == (
        "synthetic",
        "bouncing_ball",
        1,
        24,
    )
    assert info["bytes"] > 0 and info["raw_bytes"] == 144 * 32 * 32 * 3
    text = format_info(info)
    assert "6  x  24 steps  =  144 frames" in text and "32x32" in text


def test_data_info_command(synthetic_dataset, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "aime_core.cli", "data", "info", synthetic_dataset],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "synthetic-bouncing_ball" in out.stdout and "144 frames" in out.stdout
    missing = tmp_path / "nope.hdf5"
    out = subprocess.run(
        [sys.executable, "-m", "aime_core.cli", "data", "info", str(missing)], capture_output=True, text=True
    )
    assert out.returncode == 1 and f"{missing}: no such file" in out.stderr


@pytest.mark.parametrize("n", [2, 3, 10, 57])
def test_split_by_episode_is_disjoint_and_deterministic(n):
    train, val = split_episodes(n, 0.1, seed=3)
    assert train and val
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(n))
    assert (train, val) == split_episodes(n, 0.1, seed=3)
    if n == 57:
        assert len(val) == 6
        assert split_episodes(n, 0.1, seed=4) != (train, val)
    assert split_episodes(1, 0.1, 0) == ([0], [])


def test_clip_datasets_split_by_episode_have_no_overlap(synthetic_dataset):
    train_ids, val_ids = split_episodes(6, 0.34, seed=0)
    assert len(val_ids) == 2 and len(train_ids) == 4
    train, val = (
        EpisodeStore.load(synthetic_dataset, train_ids),
        EpisodeStore.load(synthetic_dataset, val_ids),
    )
    # No frame of a validation episode appears among the training clips.
    train_clips = ClipDataset(train, video_length=6)
    val_clips = ClipDataset(val, video_length=6)
    assert len(train_clips) == 4 * 4 and len(val_clips) == 2 * 4
    seen = {bytes(c.numpy()) for clip, _ in train_clips for c in clip}
    assert not any(bytes(c.numpy()) in seen for clip, _ in val_clips for c in clip)

    frames, actions = train_clips[5]  # episode position 1, start 6
    assert frames.dtype == torch.uint8 and frames.shape == (6, 3, 32, 32)
    assert actions.dtype == torch.float32 and actions.shape == (6, 2)
    ep = train_ids[1]
    with h5py.File(synthetic_dataset) as f:
        want = f[f"episode_{ep}/observations"][6:12]
        want_actions = f[f"episode_{ep}/actions"][6:12]
    assert np.array_equal(frames.permute(0, 2, 3, 1).numpy(), want)
    assert np.array_equal(actions.numpy(), want_actions)
    assert dataset_bytes(train) == 4 * 24 * (32 * 32 * 3 + 2 * 4 + 4)


def test_stride_and_short_episodes(synthetic_dataset):
    store = EpisodeStore.load(synthetic_dataset, [0, 1])
    assert len(ClipDataset(store, video_length=10, stride=7)) == 2 * 3  # starts 0, 7, 14
    store.observations[1] = store.observations[1][:5]
    store.actions[1] = store.actions[1][:5]
    with pytest.warns(UserWarning, match="skipping 1 episode"):
        assert len(ClipDataset(store, video_length=10)) == 2
    with pytest.raises(DataError, match="no episode is long enough for a 30-frame clip"):
        ClipDataset(store, video_length=30)
    with pytest.raises(DataError, match="no episodes selected"):
        GpuClipSampler(EpisodeStore.load(synthetic_dataset, []), video_length=4, device="cpu")


def test_gpu_sampler_matches_cpu_clips(synthetic_dataset):
    store = EpisodeStore.load(synthetic_dataset, [0, 2, 4])
    cpu = ClipDataset(store, video_length=8, stride=4)
    gpu = GpuClipSampler(store, video_length=8, device="cpu", stride=4)
    assert len(gpu) == len(cpu) == 3 * 5
    batches = list(gpu.batches(4, shuffle=False))
    assert [b[0].shape[0] for b in batches] == [4, 4, 4, 3]
    frames = torch.cat([b[0] for b in batches])
    actions = torch.cat([b[1] for b in batches])
    assert frames.dtype == torch.uint8 and frames.shape == (15, 8, 3, 32, 32)
    for i in range(len(cpu)):
        assert torch.equal(frames[i], cpu[i][0]) and torch.equal(actions[i], cpu[i][1])
    # Shuffled: a permutation of the same clips, reproducible with a seeded generator.
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = torch.cat([b[0] for b in gpu.batches(4, shuffle=True, generator=g1, drop_last=True)])
    b = torch.cat([b[0] for b in gpu.batches(4, shuffle=True, generator=g2, drop_last=True)])
    assert a.shape[0] == 12 and torch.equal(a, b) and not torch.equal(a, frames[:12])
    assert GpuClipSampler.fits(store, "cpu") is False


def test_truncated_and_garbage_files_are_clear_errors(synthetic_dataset, tmp_path):
    data = Path(synthetic_dataset).read_bytes()
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"truncated\.hdf5: not a readable HDF5 file"):
        read_info(truncated)
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(b"this is not HDF5 at all" * 100)
    with pytest.raises(DataError, match=r"garbage\.hdf5: not a readable HDF5 file"):
        EpisodeStore.load(garbage, [0])
    with pytest.raises(DataError, match="no such file"):
        read_info(tmp_path / "missing.hdf5")


def test_foreign_hdf5_files_name_what_is_missing(synthetic_dataset, tmp_path):
    foreign = tmp_path / "foreign.hdf5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("images", data=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"foreign\.hdf5: not an AIME dataset: missing root attribute\(s\) format_version"
    ):
        read_info(foreign)
    # Our attributes but an episode group gone, then a dataset gone, then a wrong dtype.
    copy = tmp_path / "copy.hdf5"
    copy.write_bytes(Path(synthetic_dataset).read_bytes())
    with h5py.File(copy, "a") as f:
        del f["episode_3"]
    with pytest.raises(DataError, match=r"copy\.hdf5: missing group episode_3 \(num_episodes says 6\)"):
        read_info(copy)
    copy.write_bytes(Path(synthetic_dataset).read_bytes())
    with h5py.File(copy, "a") as f:
        del f["episode_2/dones"]
    with pytest.raises(DataError, match=r"episode_2 has no dataset 'dones'"):
        EpisodeStore.load(copy, [0])
    copy.write_bytes(Path(synthetic_dataset).read_bytes())
    with h5py.File(copy, "a") as f:
        obs = f["episode_1/observations"][()]
        del f["episode_1/observations"]
        f["episode_1/observations"] = obs.astype(np.float32)
    with pytest.raises(
        DataError, match=r"episode_1/observations is float32 \(24, 32, 32, 3\), expected uint8"
    ):
        read_info(copy)
