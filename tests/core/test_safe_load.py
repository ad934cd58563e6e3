"""Checkpoints load with weights only: a pickle that would run code (here: create a file) never runs, through the
loader itself, `--resume`, `aime evaluate` and the worker's resume backfill; real checkpoints and NaN dumps load."""

from __future__ import annotations

import builtins
import pickle
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aime_core import checkpoint as ckpt
from aime_core.cli import main
from aime_core.config import resolve_train
from aime_core.nan_guard import NonFinite, dump
from aime_core.train import train


class Payload:
    """Unpickling this opens (creates) `marker` for writing: a stand-in for any code an attacker would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def evil_files(tmp_path):
    """The same payload as a torch checkpoint (zip) and as a plain pickle."""
    marker = tmp_path / "PWNED"
    as_torch = tmp_path / "evil.pt"
    torch.save({"model": Payload(marker), "model_hparams": {}, "step": 1}, as_torch)
    as_pickle = tmp_path / "evil.pkl"
    as_pickle.write_bytes(pickle.dumps(Payload(marker)))
    return marker, [as_torch, as_pickle]


def test_the_payload_is_real_when_loaded_unsafely(tmp_path):
    """The probe works: loading it the old way (weights_only=False) does create the file."""
    marker, (as_torch, _) = evil_files(tmp_path)
    torch.load(as_torch, weights_only=False)
    assert marker.exists()


def test_the_loader_refuses_code_and_never_runs_it(tmp_path):
    marker, files = evil_files(tmp_path)
    for path in files:
        with pytest.raises(ckpt.CheckpointError) as err:
            ckpt.load(path)
        assert str(path) in str(err.value) and "is not an AIME checkpoint" in str(err.value)
        assert "weights_only" not in str(err.value)  # never advises the unsafe load
    assert "refers to io.open, which a checkpoint never holds" in str(
        pytest.raises(ckpt.CheckpointError, ckpt.load, files[0]).value
    )
    assert not marker.exists()


def test_files_that_are_not_checkpoints_are_clear_errors(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("# not a checkpoint\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.pt"
    torch.save({"w": torch.zeros(1000)}, tmp_path / "whole.pt")
    truncated.write_bytes((tmp_path / "whole.pt").read_bytes()[:500])
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    for path in (text, empty, truncated, listed):
        with pytest.raises(ckpt.CheckpointError, match="is not an AIME checkpoint"):
            ckpt.load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.load(tmp_path / "nope.pt")


def test_a_real_checkpoint_round_trips_with_its_rng_states(tmp_path):
    """Everything save() writes (model, AdamW, scaler, LambdaLR, numpy/python/torch RNG) passes the allow-list."""
    model = torch.nn.Linear(3, 2)
    model.hparams = {"latent_dim": 4, "use_3d_conv": False, "name": "x"}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    trainer = SimpleNamespace(
        raw_model=model,
        opt=opt,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        sched=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        epoch=2,
        batch_in_epoch=1,
        step=7,
        nan_skips=0,
        best_val_loss=float("inf"),
    )
    np.random.seed(5)
    random.seed(5)
    path = ckpt.save(tmp_path / "last.pt", trainer, {"lr": 1e-3, "checkpoint_dir": None})
    expected = (np.random.rand(), random.random())
    state = ckpt.load(path)
    assert state["step"] == 7 and state["config"] == {"lr": 1e-3, "checkpoint_dir": None}
    assert state["model_hparams"] == model.hparams
    torch.testing.assert_close(state["model"]["weight"], model.weight.detach())
    ckpt.set_rng_state(state["rng"])
    assert (np.random.rand(), random.random()) == expected


def test_a_nan_dump_loads_for_replay(tmp_path):
    model = torch.nn.Linear(2, 2)
    report = NonFinite(step=3, epoch=0, terms={"kl_z": float("nan")}, modules=["decoder"])
    path = dump(tmp_path / "nan_dump_step_3.pt", report, [(torch.zeros(2, 4), torch.ones(2, 4))], model)
    state = ckpt.load(path)
    assert state["report"]["step"] == 3 and state["report"]["terms"] == ["kl_z"]
    assert torch.equal(state["batches"][0][1], torch.ones(2, 4))


def test_resume_from_a_payload_fails_the_run_without_running_it(synthetic_dataset, tmp_path):
    marker, (as_torch, _) = evil_files(tmp_path)
    cfg = resolve_train(
        1,
        "debug",
        overrides={
            "data_path": synthetic_dataset,
            "synthetic": True,
            "checkpoint_dir": str(tmp_path / "run"),
            "device": "cpu",
            "resume": str(as_torch),
        },
        env={},
    )
    result = train(cfg)
    assert result.status == "failed"
    assert result.error.startswith(f"--resume: {as_torch} is not an AIME checkpoint: refused to load it")
    assert not marker.exists()


def test_aime_evaluate_refuses_the_payload(tmp_path, capsys):
    marker, files = evil_files(tmp_path)
    for path in files:
        assert main(["evaluate", str(path), "--device", "cpu"]) == 1
        assert f"{path} is not an AIME checkpoint" in capsys.readouterr().err
    assert not marker.exists()
