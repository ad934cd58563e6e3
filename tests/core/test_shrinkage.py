"""Calibrated rollouts (aime_core/shrinkage.py): the per-horizon pull toward the mean training frame is the
least-squares one, never scores worse than either end on the clips it was fitted on, and runs through training,
`aime evaluate` and the videos with the raw rollout scored alongside."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aime_core.checkpoint_eval import evaluate_checkpoint
from aime_core.cli import main
from aime_core.config import resolve_train
from aime_core.data import EpisodeStore, dataset_split, read_info
from aime_core.evaluate import Baselines, evaluate
from aime_core.loaders import ClipFeeder, first_clips
from aime_core.model import AIME
from aime_core.shrinkage import apply_shrinkage, fit_shrinkage
from aime_core.sinks import Sink
from aime_core.train import train
from aime_core.trainer import autocast

K, LENGTH = 2, 8


def no_amp():
    return autocast(torch.device("cpu"), None)


@pytest.fixture(scope="module")
def clips_and_baselines(synthetic_dataset):
    info = read_info(synthetic_dataset)
    train_ids, _ = dataset_split(info, 0.1)
    store = EpisodeStore.load(synthetic_dataset, train_ids)
    mean, std = store.frame_stats()
    clips = list(first_clips(ClipFeeder(store, LENGTH, torch.device("cpu"), "always", 0, stride=1), 24, 8))
    return clips, Baselines.from_stats(mean, std, "cpu")


def model_with_motion() -> AIME:
    """A debug model whose decoder output is scaled up, so its rollouts depart from the mean frame a lot and
    the fitted a_h lands inside (0, 1) at some horizons and on its bounds at others."""
    torch.manual_seed(0)
    model = AIME.from_config(resolve_train(1, "debug", overrides={}, env={}), 2)
    with torch.no_grad():
        model.decoder.out.weight.mul_(30.0)
    return model.eval()


def test_the_fit_is_least_squares_per_horizon_clipped_to_0_1(clips_and_baselines):
    clips, base = clips_and_baselines
    model = model_with_motion()
    alphas = fit_shrinkage(model, iter(clips), K, no_amp, base.mean_frame)
    with torch.no_grad():
        pred = torch.cat([model.generate(f[:, :K], a, K) for f, a in clips]).double().numpy()
    truth = np.concatenate([f.numpy() for f, _ in clips]).astype(np.float64) / 255
    m = base.mean_frame.double().numpy()
    dev, err = pred[:, K:] - m, truth[:, K:] - m  # [N,H,3,h,w]
    direct = (dev * err).sum((0, 2, 3, 4)) / (dev * dev).sum((0, 2, 3, 4))
    assert len(alphas) == LENGTH - K
    np.testing.assert_allclose(alphas, np.clip(direct, 0, 1), rtol=1e-4, atol=1e-6)
    assert all(0.0 <= a <= 1.0 for a in alphas)


def test_on_its_fitting_clips_the_calibrated_rollout_beats_both_ends(clips_and_baselines):
    """The blend is a 1-D least squares over [0, 1]: it can be no worse than a = 1 (the raw rollout) or a = 0
    (the mean frame) on the clips it was fitted to, at every horizon."""
    clips, base = clips_and_baselines
    model = model_with_motion()
    alphas = fit_shrinkage(model, iter(clips), K, no_amp, base.mean_frame)
    res = evaluate(model, iter(clips), K, False, no_amp, base, alphas)
    plain = evaluate(model, iter(clips), K, False, no_amp, base)
    assert res["rollout_raw_mse"] == pytest.approx(plain["rollout_mse"], rel=1e-6)
    assert res["ratio_raw"] == pytest.approx(plain["ratio"], rel=1e-6)
    for cal, raw, mean_frame in zip(
        res["rollout_mse"], res["rollout_raw_mse"], res["mean_frame_mse"], strict=True
    ):
        assert cal <= min(raw, mean_frame) * (1 + 1e-5)
    assert res["shrinkage"] == alphas
    assert any(cal < raw * 0.99 for cal, raw in zip(res["rollout_mse"], res["rollout_raw_mse"], strict=True))


def test_apply_keeps_observed_frames_and_uses_the_last_factor_past_the_fit():
    torch.manual_seed(0)
    frames, mean_frame = torch.rand(2, 7, 3, 4, 4), torch.rand(3, 4, 4)
    out = apply_shrinkage(frames, 3, mean_frame, [1.0, 0.0])  # 4 open-loop steps, 2 factors fitted
    torch.testing.assert_close(out[:, :3], frames[:, :3])
    torch.testing.assert_close(out[:, 3], frames[:, 3])  # a_1 = 1: the rollout
    for t in (4, 5, 6):  # a_2 = 0 and beyond: the mean frame
        torch.testing.assert_close(out[:, t], mean_frame.expand(2, 3, 4, 4))
    half = apply_shrinkage(frames, 3, mean_frame, [0.5])
    torch.testing.assert_close(half[:, 5], 0.5 * (frames[:, 5] + mean_frame))
    with pytest.raises(ValueError, match="pass baselines"):
        evaluate(model_with_motion(), iter([]), 2, False, no_amp, None, [1.0])


class Evals(Sink):
    def __init__(self):
        self.evals, self.values = [], {}

    def event(self, kind, payload):
        if kind == "eval":
            self.evals.append(dict(payload))

    def metrics(self, step, values, epoch=None):
        self.values.update(values)


def test_a_calibrated_run_scores_both_and_aime_evaluate_reproduces_it(synthetic_dataset, tmp_path, capsys):
    over = {"data_path": synthetic_dataset, "synthetic": True, "checkpoint_dir": str(tmp_path), "device": "cpu",
            "num_epochs": 1, "rollout_shrinkage": True, "video_clips": 2}  # fmt: skip
    sink = Evals()
    assert train(resolve_train(1, "debug", overrides=over, env={}), sink).status == "succeeded"
    ev = sink.evals[-1]
    H = len(ev["horizon"])
    assert len(ev["shrinkage"]) == len(ev["ratio_raw"]) == len(ev["rollout_raw_mse"]) == H
    assert all(0 <= a <= 1 for a in ev["shrinkage"]) and ev["video"]
    assert sink.values["eval/rollout_ratio_raw"] == pytest.approx(sum(ev["ratio_raw"]) / H)
    assert sink.values["eval/shrinkage"] == pytest.approx(sum(ev["shrinkage"]) / H)

    again = evaluate_checkpoint(tmp_path / "last.pt", device="cpu")  # the run's setting: calibrated
    for key in ("shrinkage", "rollout_mse", "rollout_raw_mse"):
        np.testing.assert_allclose(again[key], ev[key], rtol=1e-5)
    off = evaluate_checkpoint(tmp_path / "last.pt", device="cpu", shrinkage=False)
    assert "shrinkage" not in off and "ratio_raw" not in off
    np.testing.assert_allclose(off["rollout_mse"], ev["rollout_raw_mse"], rtol=1e-5)

    assert main(["evaluate", str(tmp_path / "last.pt"), "--device", "cpu", "--horizon", "6"]) == 0
    out = capsys.readouterr().out
    rows = [ln.split() for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    # h, model, copy-last, mean frame, ratio, moving ratio, state ratio, raw ratio, a_h
    assert len(rows) == 6 and all(len(r) == 9 and 0 <= float(r[8]) <= 1 for r in rows)
    assert "raw better than both at" in out
    assert main(["evaluate", str(tmp_path / "last.pt"), "--device", "cpu", "--no-shrinkage"]) == 0
    assert "raw ratio" not in capsys.readouterr().out


def test_a_horizon_longer_than_the_training_episodes_is_a_clear_error(synthetic_dataset, tmp_path):
    from aime_core.data import DataError  # noqa: PLC0415
    from aime_core.evaluate import HeldOut  # noqa: PLC0415

    info = read_info(synthetic_dataset)
    train_ids, val_ids = dataset_split(info, 0.1)
    short = EpisodeStore.load(synthetic_dataset, train_ids)
    short.observations = [o[:10] for o in short.observations]  # training episodes of 10 frames
    val = EpisodeStore.load(synthetic_dataset, val_ids)
    stats = short.frame_stats()
    with pytest.raises(DataError, match="context \\+ horizon = 14 frames.*allowed: a shorter horizon"):
        HeldOut(short, val, stats, 4, 10, 8, torch.device("cpu"), shrinkage=True)
    assert HeldOut(short, val, stats, 4, 10, 8, torch.device("cpu")).shrink_clips is None
