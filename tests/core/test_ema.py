"""The moving average of the weights (`ema_decay`): its recursion, evaluation with it, checkpoints and resume."""

from __future__ import annotations

import pytest
import torch

from aime_core import checkpoint as ckpt
from aime_core.checkpoint_eval import evaluate_checkpoint, load_model
from aime_core.cli import main
from aime_core.config import ConfigError, resolve_train
from aime_core.data import EpisodeStore, GpuClipSampler
from aime_core.model import AIME
from aime_core.sinks import Sink
from aime_core.train import train
from aime_core.trainer import Trainer


def cfg_for(data, run_dir, **overrides):
    base = {"data_path": data, "synthetic": True, "checkpoint_dir": str(run_dir), "device": "cpu",
            "eval_every": 10, "save_every": 10}  # fmt: skip
    return resolve_train(1, "debug", overrides={**base, **overrides}, env={})


def test_the_average_follows_its_recursion_and_evaluation_swaps_it_in_and_back(synthetic_dataset, tmp_path):
    store = EpisodeStore.load(synthetic_dataset, [0, 1])
    batch = next(GpuClipSampler(store, 6, "cpu").batches(4, shuffle=False))
    torch.manual_seed(0)
    model = AIME(2, img_size=32, latent_dim=4, hidden_dim=32, context_dim=16, max_components=3)
    trainer = Trainer(model, cfg_for(synthetic_dataset, tmp_path, ema_decay=0.6), torch.device("cpu"))
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(1, 5):
        assert trainer.train_step([batch], log=False).nonfinite is None
        decay = min(0.6, (1 + step) / (10 + step))  # still warming up: 0.18, 0.25, 0.31, 0.36
        for n, p in model.named_parameters():
            expected[n] = decay * expected[n] + (1 - decay) * p.detach()
    for n, v in trainer.ema.items():
        torch.testing.assert_close(v, expected[n], rtol=1e-5, atol=1e-7)
    raw = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert any(not torch.equal(raw[n], trainer.ema[n]) for n in raw)
    with trainer.eval_weights():
        for n, p in model.named_parameters():
            assert torch.equal(p, trainer.ema[n]), n
    for n, p in model.named_parameters():
        assert torch.equal(p, raw[n]), n  # the raw weights come back bit for bit
    with pytest.raises(ConfigError, match="ema_decay"):
        cfg_for(synthetic_dataset, tmp_path, ema_decay=1.0)


class Evals(Sink):
    def __init__(self):
        self.evals = []

    def event(self, kind, payload):
        if kind == "eval":
            self.evals.append(dict(payload))


def test_a_run_evaluates_saves_and_resumes_with_its_average(synthetic_dataset, tmp_path, capsys):
    sink = Evals()
    full = train(cfg_for(synthetic_dataset, tmp_path / "full", num_epochs=3, ema_decay=0.9), sink)
    assert full.status == "succeeded"
    state = ckpt.load(tmp_path / "full" / "last.pt")
    assert set(state["ema"]) == {n for n, _ in AIME(**state["model_hparams"]).named_parameters()}
    # `aime evaluate` scores the average, and reproduces the run's own last evaluation with it.
    res = evaluate_checkpoint(tmp_path / "full" / "last.pt", device="cpu")
    assert res["weights"] == "ema"
    torch.testing.assert_close(torch.tensor(res["rollout_mse"]), torch.tensor(sink.evals[-1]["rollout_mse"]),
                               rtol=1e-5, atol=1e-8)  # fmt: skip
    model, _, _ = load_model(tmp_path / "full" / "last.pt", torch.device("cpu"))
    name, value = next(iter(state["ema"].items()))
    assert torch.equal(model.state_dict()[name], value) and not torch.equal(value, state["model"][name])
    raw, _, where = load_model(tmp_path / "full" / "last.pt", torch.device("cpu"), raw_weights=True)
    assert where["weights"] == "raw" and torch.equal(raw.state_dict()[name], state["model"][name])
    assert main(["evaluate", str(tmp_path / "full" / "last.pt"), "--device", "cpu", "--raw-weights"]) == 0
    assert "moving-average weights" not in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "full" / "last.pt"), "--device", "cpu"]) == 0
    assert "step 15, moving-average weights)" in capsys.readouterr().out

    # Stopped after one epoch and resumed: the average continues exactly where it was.
    assert (
        train(cfg_for(synthetic_dataset, tmp_path / "part", num_epochs=1, ema_decay=0.9)).status
        == "succeeded"
    )
    resumed = train(cfg_for(synthetic_dataset, tmp_path / "part", num_epochs=3, ema_decay=0.9,
                            resume=str(tmp_path / "part" / "last.pt")))  # fmt: skip
    assert resumed.status == "succeeded" and resumed.steps == full.steps
    other = ckpt.load(tmp_path / "part" / "last.pt")
    for n, v in state["ema"].items():
        assert torch.equal(v, other["ema"][n]), n
