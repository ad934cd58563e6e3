"""The training loop on the debug preset and the synthetic dataset: loss, resume, NaN guard, accumulation."""

import json
import math
from pathlib import Path

import pytest
import torch

from aime_core.config import resolve_train
from aime_core.model import AIME
from aime_core.sinks import Sink, read_jsonl
from aime_core.train import train
from aime_core.trainer import Trainer
from aime_core.video import read_frame


class Collect(Sink):
    def __init__(self):
        self.metrics_log, self.events, self.artifacts = [], [], []

    def metrics(self, step, values, epoch=None):
        self.metrics_log.append((step, dict(values)))

    def event(self, kind, payload):
        self.events.append((kind, dict(payload)))

    def artifact(self, kind, path, step=None, meta=None):
        self.artifacts.append((kind, path, dict(meta or {})))


def cfg_for(data, run_dir, **overrides):
    base = {"data_path": data, "synthetic": True, "checkpoint_dir": str(run_dir), "device": "cpu"}
    return resolve_train(1, "debug", overrides={**base, **overrides}, env={})


def losses(sink):
    return [v["loss"] for _, v in sink.metrics_log if "loss" in v]


def test_loss_falls_and_run_dir_is_complete(synthetic_dataset, tmp_path):
    sink = Collect()
    result = train(cfg_for(synthetic_dataset, tmp_path, num_epochs=6, eval_every=6, save_every=3), sink)
    assert result.status == "succeeded" and result.epochs_done == 6 and result.steps == 30  # 20 clips / 4
    trace = losses(sink)
    assert len(trace) == 30 and all(math.isfinite(x) for x in trace)
    assert sum(trace[-5:]) / 5 < 0.8 * sum(trace[:5]) / 5  # falls within a few dozen steps
    keys = set().union(*(v for _, v in sink.metrics_log))
    for key in (
        "loss/recon",
        "loss/kl_z",
        "loss/kl_sticks",
        "loss/kl_alpha",
        "loss/context_pred",
        "beta",
        "lr",
        "grad_norm",
        "grad_norm/encoder",
        "grad_norm/context",
        "grad_norm/posterior",
        "grad_norm/prior",
        "grad_norm/dynamics",
        "grad_norm/decoder",
        "dpgmm/effective_components",
        "dpgmm/pi_entropy",
        "dpgmm/alpha",
        "perf/step_time",
        "perf/clips_per_s",
        "nan_skips",
        "val/loss",
        "perf/epoch_time",
        "eval/rollout_mse",
        "eval/baseline_mse",
        "eval/ssim",
    ):
        assert key in keys, key
    for name in (
        "metrics.jsonl",
        "config.json",
        "last.pt",
        "best.pt",
        "ckpt_epoch_0003.pt",
        "ckpt_epoch_0006.pt",
    ):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "config.json").read_text())["latent_dim"] == 4
    ev = next(p for k, p in sink.events if k == "eval")
    assert ev["horizon"] == [1, 2, 3] and len(ev["rollout_mse"]) == 3 and len(ev["baseline_mse"]) == 3
    assert 0 <= ev["ssim"] <= 1 and ev["recon_mse"] < 0.05
    # The video: 1 clip row of ground truth | prediction | error, each 32 px + 2 px border, scaled x2.
    frame = read_frame(ev["video"], 0)  # rows of clips, each (32 + 2 border) px x 2, three panels wide
    assert frame.shape[1] == 3 * 34 * 2 and frame.shape[0] % (34 * 2) == 0 and frame.shape[0] >= 68
    assert any(k == "video" for k, _, _ in sink.artifacts)
    assert {m["tag"] for k, _, m in sink.artifacts if k == "checkpoint"} >= {"last", "best", "epoch_0003"}
    assert any(r.get("type") == "metrics" for r in read_jsonl(tmp_path / "metrics.jsonl"))


def test_resume_continues_exactly(synthetic_dataset, tmp_path):
    full = train(cfg_for(synthetic_dataset, tmp_path / "full", num_epochs=3, eval_every=10, save_every=10))
    part = train(cfg_for(synthetic_dataset, tmp_path / "part", num_epochs=1, eval_every=10, save_every=10))
    assert part.status == "succeeded" and part.steps == 5
    # Stop in the middle of epoch 2 (should_stop), then resume to the end.
    calls = iter(range(100))
    stopped = train(
        cfg_for(
            synthetic_dataset,
            tmp_path / "part",
            num_epochs=3,
            eval_every=10,
            save_every=10,
            resume=str(tmp_path / "part" / "last.pt"),
        ),
        should_stop=lambda: next(calls) >= 2,
    )
    assert stopped.status == "cancelled" and stopped.steps == 7
    done = train(
        cfg_for(
            synthetic_dataset,
            tmp_path / "part",
            num_epochs=3,
            eval_every=10,
            save_every=10,
            resume=str(tmp_path / "part" / "last.pt"),
        )
    )
    assert done.status == "succeeded" and done.steps == full.steps == 15
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=False)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"] == 3


@pytest.mark.parametrize("term", ["kl_z", "recon"])
def test_nan_guard_stop_reports_term_modules_and_step(synthetic_dataset, tmp_path, term):
    sink = Collect()
    cfg = cfg_for(
        synthetic_dataset, tmp_path, num_epochs=3, eval_every=10, inject_nan_step=7, inject_nan_term=term
    )
    result = train(cfg, sink)
    assert result.status == "failed" and term in result.error and "step 7" in result.error
    alert = next(p for k, p in sink.events if k == "alert")
    assert alert["kind"] == "nan" and alert["terms"] == [term] and alert["step"] == 7 and alert["epoch"] == 2
    assert "encoder" in alert["modules"] and "posterior" in alert["modules"]
    # kl_z does not reach the decoder; the reconstruction does.
    assert ("decoder" in alert["modules"]) == (term == "recon")
    dump = torch.load(tmp_path / "nan_dump_step_7.pt", weights_only=False)
    assert dump["report"]["terms"] == [term] and dump["batches"][0][0].dtype == torch.uint8
    last = torch.load(tmp_path / "last.pt", weights_only=False)  # the last good checkpoint is kept
    assert last["step"] == 5 and all(torch.isfinite(v).all() for v in last["model"].values())
    assert any(k == "batch_dump" for k, _, _ in sink.artifacts)


def test_nan_guard_skip_counts_and_continues(synthetic_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("AIME_INJECT_NAN_STEP", "3")  # the documented env hook
    sink = Collect()
    result = train(cfg_for(synthetic_dataset, tmp_path, num_epochs=2, eval_every=10, nan_policy="skip"), sink)
    assert result.status == "succeeded" and result.steps == 10
    skips = [v["nan_skips"] for _, v in sink.metrics_log if "nan_skips" in v]
    assert skips[-1] == 1 and all(math.isfinite(v["loss"]) for _, v in sink.metrics_log if "loss" in v)


def test_gradient_accumulation_matches_large_batch(synthetic_dataset, tmp_path):
    from aime_core.data import EpisodeStore, GpuClipSampler

    store = EpisodeStore.load(synthetic_dataset, [0, 1])
    frames, actions = next(GpuClipSampler(store, 6, "cpu").batches(4, shuffle=False))
    grads = []
    for groups in ([(frames, actions)], [(frames[:2], actions[:2]), (frames[2:], actions[2:])]):
        torch.manual_seed(0)
        model = AIME(2, img_size=32, latent_dim=4, hidden_dim=32, context_dim=16, max_components=3)
        model.stochastic = False  # the same z either way: accumulation is then exact up to float error
        cfg = cfg_for(synthetic_dataset, tmp_path, grad_clip=0.0, gradient_accumulation_steps=len(groups))
        trainer = Trainer(model, cfg, torch.device("cpu"))
        assert trainer.train_step(groups).nonfinite is None
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    # kl_alpha is divided by the micro-batch's B*T, so compare everything but the alpha parameters.
    rel = (grads[0] - grads[1]).norm() / grads[0].norm()
    assert rel < 1e-4, rel


@pytest.mark.parametrize("tier", [1, 2, 3])
def test_each_tier_preset_builds_and_steps(tier):
    cfg = resolve_train(tier, overrides={"batch_size": 1, "device": "cpu", "amp": False}, env={})
    torch.manual_seed(0)
    model = AIME.from_config(cfg, action_dim=2)
    trainer = Trainer(model, cfg, torch.device("cpu"))
    frames = torch.randint(0, 256, (1, cfg.video_length, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8)
    res = trainer.train_step([(frames, torch.zeros(1, cfg.video_length, 2))])
    assert res.nonfinite is None and math.isfinite(res.loss) and trainer.step == 1


def test_missing_dataset_names_the_collect_command(tmp_path):
    cfg = resolve_train(
        1, overrides={"data_path": str(tmp_path / "none.hdf5"), "checkpoint_dir": str(tmp_path)}, env={}
    )
    result = train(cfg)
    assert result.status == "failed"
    assert (
        "does not exist" in result.error
        and "aime collect --tier 1 --domain cartpole --task swingup" in result.error
    )
    assert str(Path(tmp_path / "none.hdf5")) in result.error


def test_dataloader_path_gives_the_same_batches_as_device_resident_clips(synthetic_dataset):
    from aime_core.data import EpisodeStore
    from aime_core.loaders import ClipFeeder

    store = EpisodeStore.load(synthetic_dataset, [0, 1, 2])
    on_device = ClipFeeder(store, 6, torch.device("cpu"), "always", 0)
    loader = ClipFeeder(store, 6, torch.device("cpu"), "never", 0)
    assert (on_device.kind, loader.kind) == ("device", "dataloader") and on_device.num_clips == 12
    for (fa, aa), (fb, ab) in zip(on_device.batches(4, 3, 1), loader.batches(4, 3, 1), strict=True):
        assert fa.dtype == fb.dtype == torch.uint8 and fa.shape == (4, 6, 3, 32, 32)
        assert torch.equal(fa, fb) and torch.equal(aa, ab)


def test_debug_mode_anomaly_detection_still_reports_the_nan(synthetic_dataset, tmp_path):
    sink = Collect()
    cfg = cfg_for(synthetic_dataset, tmp_path, num_epochs=1, debug=True, inject_nan_step=2)
    result = train(cfg, sink)
    assert result.status == "failed" and "step 2" in result.error
    assert [p["kind"] for k, p in sink.events if k == "alert"] == ["nan"]
    assert not torch.is_anomaly_enabled()  # switched off again after the run


def test_lr_schedule_warms_up_then_decays_to_the_final_ratio():
    from aime_core.trainer import lr_factor

    constant = lr_factor(20, 1000, 1.0)
    assert constant(0) == pytest.approx(0.1) and constant(20) == constant(999) == 1.0
    cosine = lr_factor(20, 1000, 0.05)
    assert cosine(0) == pytest.approx(0.1) and cosine(20) == pytest.approx(1.0)
    # Halfway through the decay the factor is halfway between 1 and the final ratio; it ends on the ratio.
    assert cosine(510) == pytest.approx((1.0 + 0.05) / 2)
    assert cosine(1000) == pytest.approx(0.05) and cosine(5000) == pytest.approx(0.05)
    decay = [cosine(s) for s in range(20, 1001)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert lr_factor(20, None, 0.05)(999) == 1.0  # no known total: constant after the warm-up


def test_lr_final_ratio_is_reached_at_the_last_step_of_a_run(synthetic_dataset, tmp_path):
    sink = Collect()
    cfg = cfg_for(
        synthetic_dataset, tmp_path / "run", num_epochs=10, lr_final_ratio=0.1, log_every=1, eval_every=20
    )
    res = train(cfg, sink)
    lrs = [v["lr"] for _, v in sink.metrics_log if "lr" in v]
    assert res.status == "succeeded" and len(lrs) == res.steps == 50
    # The logged lr is the one the step used: the last step runs at the schedule's value for step 49 of 50.
    from aime_core.trainer import lr_factor

    assert lrs[-1] == pytest.approx(cfg.lr * lr_factor(20, 50, 0.1)(49))
    assert lrs[-1] < 0.15 * cfg.lr and max(lrs) <= cfg.lr
