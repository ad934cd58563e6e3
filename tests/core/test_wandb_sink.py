"""The optional W&B mirror (WANDB_PROJECT) in wandb's offline mode: scalars, evaluations and rollout videos.
Skipped when wandb is not installed (it is an optional extra, never a dependency)."""

from __future__ import annotations

import json

import pytest

from aime_core.config import resolve_train
from aime_core.train import train

wandb = pytest.importorskip("wandb")


def test_a_training_run_mirrors_scalars_evaluations_and_videos_to_wandb_offline(
    synthetic_dataset, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = {"data_path": synthetic_dataset, "synthetic": True, "device": "cpu", "num_epochs": 1}
    overrides["checkpoint_dir"] = str(tmp_path / "run")
    cfg = resolve_train(1, "debug", overrides={**overrides, "wandb_project": "aime-test"}, env={})
    logged: list[tuple[int | None, set[str]]] = []  # (step, keys) of every wandb.log call
    real_log = wandb.sdk.wandb_run.Run.log

    def spy(self, data, step=None, **kw):
        logged.append((step, set(data)))
        return real_log(self, data, step=step, **kw)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", spy)
    result = train(cfg)
    assert result.status == "succeeded", result.error
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    files = runs[0] / "files"
    videos = list(files.glob("media/videos/eval/rollout_video_*.mp4"))
    assert videos and videos[0].stat().st_size > 1000  # the rollout video itself
    tables = list(files.glob("media/table/eval/rollout_mse_per_horizon_*.table.json"))
    assert tables, sorted(p.relative_to(files).as_posix() for p in files.rglob("*"))
    table = json.loads(tables[0].read_text())
    cells = {c for row in table["data"] for c in row}
    assert {"model rollout", "copy-last frame"} <= cells, table  # both curves, per horizon step
    keys = set().union(*(k for _, k in logged))
    assert {"loss", "val/loss", "val/loss/recon", "eval/rollout_mse", "eval/rollout_video"} <= keys, keys
    assert {"eval/rollout_mse_per_horizon", "eval/rollout_psnr_per_horizon"} <= keys, keys
    steps = [s for s, _ in logged]
    assert steps == sorted(steps)  # wandb drops a step that goes back
