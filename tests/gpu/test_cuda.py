"""The CUDA path, on a CUDA GPU only (marker `cuda`; skipped without one): AMP bf16 and fp16 with the grad scaler,
GpuClipSampler, out of memory, torch.compile, resume bit-exactness, and the lean step's single host sync.

Run on a GPU machine: `python -m pytest -m cuda tests/gpu -q` (benchmarks/gpu_check.py does, among the rest).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from aime_core.config import resolve_train
from aime_core.model import AIME
from aime_core.trainer import Trainer, count_syncs

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")


def cfg_for(tmp_path, data=None, **overrides):
    base = {"device": "cuda", "checkpoint_dir": str(tmp_path), "synthetic": True}
    if data:
        base["data_path"] = data
    return resolve_train(1, "debug", overrides={**base, **overrides}, env={})


def trainer_for(cfg, seed=0, stochastic=True):
    torch.manual_seed(seed)
    model = AIME.from_config(cfg, action_dim=2).to(CUDA)
    model.stochastic = stochastic
    return Trainer(model, cfg, CUDA)


def batch(cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    B, T, S = cfg.batch_size, cfg.video_length, cfg.img_size
    frames = torch.randint(0, 256, (B, T, 3, S, S), dtype=torch.uint8, generator=g)
    return frames.to(CUDA), (torch.rand(B, T, 2, generator=g) * 2 - 1).to(CUDA)


def params(model):
    return torch.cat([p.detach().flatten().float() for p in model.parameters()])


@pytest.mark.skipif(
    torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="GPU without bf16"
)
def test_amp_bf16_steps(tmp_path):
    cfg = cfg_for(tmp_path, amp=True)
    t = trainer_for(cfg)
    assert t.dtype == torch.bfloat16 and not t.scaler.is_enabled()
    before = params(t.raw_model)
    frames, actions = batch(cfg)
    results = [t.train_step([(frames, actions)]) for _ in range(3)]
    assert all(r.nonfinite is None and math.isfinite(r.loss) for r in results)
    assert results[-1].values["perf/gpu_mem_gb"] > 0
    assert not torch.equal(before, params(t.raw_model))
    assert all(p.dtype == torch.float32 for p in t.raw_model.parameters())  # master weights stay fp32


def test_amp_fp16_steps_with_the_grad_scaler(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # as on a pre-Ampere GPU
    cfg = cfg_for(tmp_path, amp=True)
    t = trainer_for(cfg)
    assert t.dtype == torch.float16 and t.scaler.is_enabled()
    before = params(t.raw_model)
    frames, actions = batch(cfg)
    results = [t.train_step([(frames, actions)]) for _ in range(10)]  # the first may overflow at scale 2^16
    assert all(r.nonfinite is None for r in results)
    stepped = [r for r in results if not r.overflow]
    assert stepped and all(math.isfinite(r.loss) for r in stepped)  # overflow steps are skipped, not errors
    assert not torch.equal(before, params(t.raw_model))
    assert math.isfinite(t.scaler.get_scale()) and t.scaler.get_scale() > 0


def test_gpu_clip_sampler_on_cuda_gives_the_cpu_batches(synthetic_dataset):
    from aime_core.data import EpisodeStore, GpuClipSampler
    from aime_core.loaders import ClipFeeder

    store = EpisodeStore.load(synthetic_dataset, [0, 1, 2])
    assert GpuClipSampler.fits(store, CUDA)
    gpu = ClipFeeder(store, 6, CUDA, "auto", 0)
    cpu = ClipFeeder(store, 6, torch.device("cpu"), "never", 0)
    assert gpu.kind == "device" and gpu.sampler.frames.is_cuda
    n = 0
    for (fa, aa), (fb, ab) in zip(gpu.batches(4, 3, 1), cpu.batches(4, 3, 1), strict=True):
        assert fa.is_cuda and fa.dtype == torch.uint8 and fa.shape == (4, 6, 3, 32, 32)
        assert torch.equal(fa.cpu(), fb) and torch.equal(aa.cpu(), ab)
        n += 1
    assert n == 3


def test_out_of_memory_ends_with_the_remedy_and_keeps_checkpoints(synthetic_dataset, tmp_path):
    from aime_core.train import train

    first = train(cfg_for(tmp_path, synthetic_dataset, num_epochs=1, eval_every=10, video_clips=0))
    assert first.status == "succeeded"
    last = tmp_path / "last.pt"
    saved = last.read_bytes()
    torch.cuda.empty_cache()
    # Allow this process a sliver of the GPU: the resumed run's first allocations fail with a real CUDA OOM.
    torch.cuda.set_per_process_memory_fraction(1e-6, CUDA)
    try:
        cfg = cfg_for(
            tmp_path, synthetic_dataset, num_epochs=2, eval_every=10, video_clips=0, resume=str(last)
        )
        result = train(cfg)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, CUDA)
        torch.cuda.empty_cache()
    assert result.status == "failed"
    assert "CUDA out of memory at batch_size 4" in result.error
    assert "--batch_size 2 --gradient_accumulation_steps 2" in result.error and "kept" in result.error
    assert last.read_bytes() == saved  # the checkpoint is untouched and still loads
    assert torch.load(last, weights_only=False)["epoch"] == 1


def test_compiled_and_eager_give_the_same_loss_on_cuda():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    from test_compile import compiled_vs_eager

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    eager, compiled, breaks = compiled_vs_eager(CUDA)
    assert breaks == 0
    for x, y in zip(eager, compiled, strict=True):
        assert y == pytest.approx(x, rel=1e-3, abs=1e-3)


def test_resume_is_bit_exact_on_cuda(synthetic_dataset, tmp_path, monkeypatch):
    from aime_core.train import train

    # Deterministic cuDNN kernels: the test is about what resuming restores (parameters, optimiser, scaler,
    # scheduler, RNG states, data order), not about atomics in a convolution's backward.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    kw = dict(eval_every=10, save_every=10, video_clips=0)
    full = train(cfg_for(tmp_path / "full", synthetic_dataset, num_epochs=3, **kw))
    part = train(cfg_for(tmp_path / "part", synthetic_dataset, num_epochs=1, **kw))
    assert full.status == part.status == "succeeded"
    done = train(
        cfg_for(
            tmp_path / "part",
            synthetic_dataset,
            num_epochs=3,
            resume=str(tmp_path / "part" / "last.pt"),
            **kw,
        )
    )
    assert done.status == "succeeded" and done.steps == full.steps == 15
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False, map_location="cpu")
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=False, map_location="cpu")
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} tensors differ after resume, e.g. {differ[:3]}"


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_at_most_one_sync_per_unlogged_step(tmp_path, amp):
    if amp and not torch.cuda.is_bf16_supported():
        pytest.skip("fp16's grad scaler reads its scale (syncs by design)")
    cfg = cfg_for(tmp_path, amp=amp)
    t = trainer_for(cfg)
    frames, actions = batch(cfg)
    for _ in range(3):  # warm-up: allocator, cuBLAS handles, lazy inits
        t.train_step([(frames, actions)], log=False)
    torch.cuda.synchronize()
    counts = [count_syncs(lambda: t.train_step([(frames, actions)], log=False)) for _ in range(5)]
    assert max(counts) <= 1, counts
    logged = count_syncs(lambda: t.train_step([(frames, actions)], log=True))
    assert logged >= 1  # the counter does see syncs (a logged step reads its metrics)
