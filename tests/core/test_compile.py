"""`--compile`: torch.compile of the model gives the loss of eager execution (debug preset, CPU).

The forward (encoder, causal Perceiver, the per-time-step LSTM/posterior/context loop, DPGMM prior, decoder)
compiles as one graph with no graph break (asserted); Inductor then builds the forward and backward kernels.
The first test uses the aot_eager backend (graph capture and autograd graphs, no code generation: seconds); the
second, marked `slow` and run only with AIME_TEST_INDUCTOR=1, the default Inductor backend as `--compile` does
(over 5 minutes of C++ kernel builds on a loaded 2-core CPU; tests/gpu runs the same comparison on CUDA):
    AIME_TEST_INDUCTOR=1 .venv/bin/python -m pytest tests/core/test_compile.py -q
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil

import pytest
import torch

from aime_core.config import resolve_train
from aime_core.model import AIME
from aime_core.trainer import Trainer


def _compile_available() -> str | None:
    if not hasattr(torch, "compile"):
        return "torch.compile missing"
    try:
        importlib.import_module("torch._dynamo")
        importlib.import_module("torch._inductor")
    except Exception as exc:  # noqa: BLE001
        return f"torch.compile unavailable: {exc}"
    if shutil.which("g++") is None and shutil.which("c++") is None:
        return "Inductor on CPU needs a C++ compiler"
    return None


pytestmark = pytest.mark.skipif(_compile_available() is not None, reason=str(_compile_available()))


def _trainer(cfg, device, seed=0):
    torch.manual_seed(seed)
    model = AIME.from_config(cfg, action_dim=2).to(device)
    model.stochastic = False  # posterior means: the two runs differ only by compilation
    return Trainer(model, cfg, device)


def _batch(cfg, device):
    g = torch.Generator().manual_seed(1)
    B, T, S = cfg.batch_size, cfg.video_length, cfg.img_size
    frames = torch.randint(0, 256, (B, T, 3, S, S), dtype=torch.uint8, generator=g)
    actions = torch.rand(B, T, 2, generator=g) * 2 - 1
    return frames.to(device), actions.to(device)


def compiled_vs_eager(
    device: torch.device, steps: int = 3, backend: str | None = None
) -> tuple[list[float], list[float], int]:
    """Losses of `steps` train steps, eager and compiled (the Trainer's own torch.compile, with `backend` when
    given), from the same init and batch; and the graph breaks Dynamo met compiling the model's forward."""
    base = {"device": device.type, "checkpoint_dir": "/tmp/aime-compile-test"}
    eager = _trainer(resolve_train(1, "debug", overrides=base | {"compile": False}, env={}), device)
    cfg = resolve_train(1, "debug", overrides=base | {"compile": True}, env={})
    torch._dynamo.reset()
    if backend is None:
        comp = _trainer(cfg, device)
    else:
        original = torch.compile
        torch.compile = functools.partial(original, backend=backend)
        try:
            comp = _trainer(cfg, device)
        finally:
            torch.compile = original
    assert comp.model is not comp.raw_model  # the Trainer compiled it
    frames, actions = _batch(cfg, device)
    counters = torch._dynamo.utils.counters
    counters.clear()
    a = [eager.train_step([(frames, actions)]).loss for _ in range(steps)]
    b = [comp.train_step([(frames, actions)]).loss for _ in range(steps)]
    breaks = sum(counters["graph_break"].values())  # Dynamo counts every break (with its reason) here
    assert counters["stats"]["unique_graphs"] >= 1, dict(counters["stats"])  # it did compile
    return a, b, breaks


def test_compiled_graph_gives_the_eager_loss_on_cpu():
    """Dynamo's capture and AOT autograd's forward/backward graphs (backend aot_eager: no kernel generation, so
    seconds on a CPU): one graph, no break, the same losses as eager over three optimiser steps."""
    eager, compiled, breaks = compiled_vs_eager(torch.device("cpu"), backend="aot_eager")
    assert breaks == 0
    for x, y in zip(eager, compiled, strict=True):
        assert y == pytest.approx(x, rel=1e-5, abs=1e-5)
    assert eager[0] != eager[-1]


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("AIME_TEST_INDUCTOR"),
    reason="minutes of C++ builds on a CPU: set AIME_TEST_INDUCTOR=1",
)
@pytest.mark.timeout(1800)  # over 5 minutes of C++ kernel builds on a loaded 2-core machine the first time
def test_compiled_and_eager_give_the_same_loss_on_cpu():
    """The default backend (Inductor: generated C++ kernels), as `--compile` runs. Several minutes on a loaded
    2-core CPU the first time (kernels are cached in /tmp/torchinductor_$USER afterwards)."""
    eager, compiled, breaks = compiled_vs_eager(torch.device("cpu"))
    assert breaks == 0
    assert len(eager) == len(compiled) == 3
    # Same loss at the first step (same parameters) and after two optimiser steps (same gradients).
    for x, y in zip(eager, compiled, strict=True):
        assert y == pytest.approx(x, rel=1e-4, abs=1e-4)
    assert eager[0] != eager[-1]  # the steps did move the parameters
