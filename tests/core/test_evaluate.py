"""`aime evaluate`: a checkpoint scored on its run's held-out episodes, at the training horizon and past it."""

from __future__ import annotations

import pytest
import torch

from aime_core.checkpoint_eval import evaluate_checkpoint
from aime_core.cli import main
from aime_core.config import resolve_train
from aime_core.sinks import Sink
from aime_core.train import train


class Evals(Sink):
    def __init__(self):
        self.evals = []

    def event(self, kind, payload):
        if kind == "eval":
            self.evals.append(dict(payload))


def _cfg(data, run_dir, **overrides):
    base = {"data_path": data, "synthetic": True, "checkpoint_dir": str(run_dir), "device": "cpu"}
    return resolve_train(1, "debug", overrides=base | overrides, env={})


@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = _cfg(synthetic_dataset, run_dir, num_epochs=2, video_clips=0)
    sink = Evals()
    assert train(cfg, sink).status == "succeeded"
    return run_dir, sink.evals[-1]


def test_at_the_training_horizon_it_reproduces_the_runs_own_last_evaluation(trained):
    run_dir, last_eval = trained
    res = evaluate_checkpoint(run_dir / "last.pt", device="cpu")
    assert res["epoch"] == 2 and res["context_frames"] == last_eval["context_frames"] == 3
    assert res["horizon"] == last_eval["horizon"] == [1, 2, 3]
    assert res["clips"] == last_eval["clips"]
    for key in ("rollout_mse", "baseline_mse"):
        torch.testing.assert_close(torch.tensor(res[key]), torch.tensor(last_eval[key]), rtol=1e-5, atol=1e-8)
    assert res["recon_mse"] == pytest.approx(last_eval["recon_mse"], rel=1e-5)


def test_past_the_training_length_with_a_video(trained, tmp_path, capsys):
    run_dir, _ = trained
    video = tmp_path / "long.mp4"
    rc = main(["evaluate", str(run_dir / "best.pt"), "--horizon", "12", "--context", "4", "--device", "cpu",
               "--video", str(video)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [ln.split() for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == [str(h) if 4 + h <= 6 else f"{h}*" for h in range(1, 13)]
    assert all(float(r[1]) >= 0 and float(r[2]) >= 0 for r in rows)
    assert "open loop after 4 observed frames (training clips: 6 frames" in out
    # h, model, copy-last, mean frame, ratio, moving ratio, state ratio (the synthetic ball has states)
    assert all(len(r) == 7 and float(r[3]) > 0 for r in rows)
    assert "model better than both baselines at" in out and f"video: {video}" in out
    assert video.stat().st_size > 1000


def test_samples_average_sampled_rollouts_reproducibly(trained, capsys):
    run_dir, _ = trained
    # 32 clips: the property holds for any sample of clips, and 256 clips x 4 rollouts x 3 calls took a minute
    one = evaluate_checkpoint(run_dir / "last.pt", device="cpu", clips=32)
    avg = evaluate_checkpoint(run_dir / "last.pt", device="cpu", samples=4, clips=32)
    again = evaluate_checkpoint(run_dir / "last.pt", device="cpu", samples=4, clips=32)
    assert one["rollout_samples"] == 1 and avg["rollout_samples"] == 4
    assert avg["rollout_mse"] == again["rollout_mse"]  # a fixed random stream: the same score every time
    assert avg["rollout_mse"] != one["rollout_mse"]
    assert avg["recon_mse"] == pytest.approx(one["recon_mse"], rel=1e-6)  # observed frames: unchanged
    assert avg["copy_last_mse"] == one["copy_last_mse"]
    assert main(["evaluate", str(run_dir / "last.pt"), "--samples", "-2", "--device", "cpu"]) == 1
    assert (
        "samples must be 0 (the run's rollout_samples) or a positive count, got -2" in capsys.readouterr().err
    )


def test_bad_requests_say_what_is_allowed(trained, tmp_path, capsys):
    run_dir, _ = trained
    assert main(["evaluate", str(run_dir / "last.pt"), "--horizon", "30", "--device", "cpu"]) == 1
    assert "context 3 + horizon 30 = 33 frames" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    assert main(["evaluate", str(foreign), "--device", "cpu"]) == 1
    assert "is not an AIME checkpoint" in capsys.readouterr().err
    text = tmp_path / "notes.pt"
    text.write_text("# not a checkpoint\n")
    assert main(["evaluate", str(text), "--device", "cpu"]) == 1
    assert f"{text} is not an AIME checkpoint: torch cannot read it" in capsys.readouterr().err


def test_training_scores_past_the_clip_length_with_eval_horizon(synthetic_dataset, tmp_path):
    cfg = _cfg(synthetic_dataset, tmp_path, num_epochs=1, eval_horizon=10)
    sink = Evals()
    assert train(cfg, sink).status == "succeeded"
    ev = sink.evals[-1]
    assert ev["context_frames"] == 3 and ev["horizon"] == list(range(1, 11)) and len(ev["rollout_mse"]) == 10
    assert evaluate_checkpoint(tmp_path / "last.pt", device="cpu")["rollout_mse"] == pytest.approx(
        ev["rollout_mse"], rel=1e-5
    )  # the checkpoint remembers its run's horizon

    too_far = _cfg(synthetic_dataset, tmp_path / "b", eval_horizon=30)
    result = train(too_far, Evals())
    assert result.status == "failed"
    assert "eval_horizon 30 after 3 observed frames needs clips of 33 frames" in result.error
    assert "allowed: eval_horizon <= 21" in result.error
