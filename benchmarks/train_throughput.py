"""Training throughput per tier config: clips/s and epoch time, eager vs torch.compile, fp32 vs AMP; the cost of
logging (step time with log_every 1 vs 100); on CUDA the host syncs per unlogged step, GPU memory and utilisation.

Random uint8 clips of each tier's shape (no dataset needed). On CPU use a small batch and few steps:
    .venv/bin/python benchmarks/train_throughput.py --device cpu --quick
On a GPU run it unchanged with --device cuda (add --compile to include torch.compile); --json PATH keeps the
figures (benchmarks/gpu_check.py does both).

log_every N: the step at which the trainer logs calls train_step(log=True) (every metric read back: loss terms,
gradient norms per module, DPGMM diagnostics, a device sync to time it); the other N-1 call train_step(log=False),
whose only host sync is the NaN/Inf flag. Syncs are counted with torch.cuda.set_sync_debug_mode("warn").
GPU utilisation is NVML's, sampled every 0.2 s by the function the worker's heartbeat uses (worker.heartbeat).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aime_core.config import PRESETS, resolve_train  # noqa: E402
from aime_core.model import AIME, count_parameters  # noqa: E402
from aime_core.trainer import Trainer, count_syncs  # noqa: E402


def gpu_info() -> list[dict]:
    """worker.heartbeat.gpu_info (NVML: name, util_percent, mem_used_mb, mem_total_mb); [] where it can't load."""
    try:
        from worker.heartbeat import gpu_info as info
    except Exception:  # noqa: BLE001 - worker's dependencies (redis, httpx) absent: no NVML figures
        return []
    return info()


class NvmlSampler:
    """Samples gpu_info() every `period` s in a thread; `summary()` gives mean/max utilisation and memory."""

    def __init__(self, period: float = 0.2, index: int = 0):
        self.period, self.index, self.samples = period, index, []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._done.is_set():
            gpus = gpu_info()
            if gpus:
                self.samples.append(gpus[min(self.index, len(gpus) - 1)])
            self._done.wait(self.period)

    def __enter__(self) -> NvmlSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(5)

    def summary(self) -> dict:
        if not self.samples:
            return {"nvml_samples": 0}
        util = [s["util_percent"] for s in self.samples]
        return {
            "nvml_samples": len(util),
            "gpu_util_mean": statistics.fmean(util),
            "gpu_util_max": max(util),
            "nvml_mem_used_mb_max": max(s["mem_used_mb"] for s in self.samples),
            "gpu_name": self.samples[-1]["name"],
        }


def _setup(cfg, device):
    torch.manual_seed(0)
    model = AIME.from_config(cfg, action_dim=2).to(device)
    trainer = Trainer(model, cfg, device)
    B, T, S = cfg.batch_size, cfg.video_length, cfg.img_size
    frames = torch.randint(0, 256, (B, T, 3, S, S), dtype=torch.uint8, device=device)
    actions = torch.rand(B, T, 2, device=device) * 2 - 1
    return trainer, [(frames, actions)] * cfg.gradient_accumulation_steps


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg, device, steps: int, warmup: int, log_every: int = 100) -> dict:
    """Full training steps (forward, backward, optimiser) after `warmup`; logging as the trainer does at
    `log_every`. -> clips_per_s, step_time, and on CUDA the peak memory and NVML utilisation."""
    trainer, group = _setup(cfg, device)
    for i in range(warmup):
        trainer.train_step(group, log=i == 0)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with NvmlSampler() if device.type == "cuda" else _Null() as sampler:
        t0 = time.perf_counter()
        for i in range(steps):
            trainer.train_step(group, log=i % log_every == 0)
        _sync(device)
        dt = time.perf_counter() - t0
    out = {
        "clips_per_s": steps * cfg.batch_size * cfg.gradient_accumulation_steps / dt,
        "step_time_s": dt / steps,
    }
    if device.type == "cuda":
        out["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        out |= sampler.summary()
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def summary(self) -> dict:
        return {}


def log_cost(cfg, device, steps: int, warmup: int) -> dict:
    """Step time with log_every 1 (every step logged) vs 100 (1 of 100), on the same trainer; on CUDA the syncs of
    one unlogged and one logged step.

    CPU: logged and unlogged steps alternate one by one and the medians are compared, so drift in the machine's
    load hits both alike (a CPU step is synchronous, timing each one changes nothing); the process's CPU time per
    step is compared too (on a shared, overloaded machine wall time varies 2-4x from step to step). CUDA: blocks of steps timed
    end to end (a sync per step would hide exactly what unlogged steps save), the two kinds of block interleaved.
    log_every 100 = 99 unlogged steps and one logged: (99 t_unlogged + t_logged) / 100.
    """
    trainer, group = _setup(cfg, device)
    for i in range(warmup):
        trainer.train_step(group, log=i == 0)
    _sync(device)
    logged: list[float] = []
    unlogged: list[float] = []
    cpu_time: dict[bool, list[float]] = {True: [], False: []}
    if device.type == "cpu":
        for i in range(2 * steps):
            log = i % 2 == 0
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.train_step(group, log=log)
            (logged if log else unlogged).append(time.perf_counter() - t0)
            cpu_time[log].append(time.process_time() - c0)
        t1, tu = statistics.median(logged), statistics.median(unlogged)
    else:
        block = max(1, steps // 4)
        done = 0
        while done < steps:
            n = min(block, steps - done)
            for log, acc in ((True, logged), (False, unlogged)):
                t0 = time.perf_counter()
                for _ in range(n):
                    trainer.train_step(group, log=log)
                _sync(device)
                acc.append((time.perf_counter() - t0) / n)
            done += n
        t1, tu = statistics.fmean(logged), statistics.fmean(unlogged)
    t100 = (99 * tu + t1) / 100
    out = {
        "steps": steps,
        "step_time_log_every_1_s": t1,
        "step_time_log_every_100_s": t100,
        "step_time_unlogged_s": tu,
        "logging_cost_per_logged_step_s": t1 - tu,
        "ratio_1_over_100": t1 / t100,
        "spread_logged_s": [min(logged), max(logged)],
        "spread_unlogged_s": [min(unlogged), max(unlogged)],
    }
    if device.type == "cpu":
        # Process CPU time (all threads): the work a step does, much less noisy than wall time on a shared machine.
        c1, cu = statistics.median(cpu_time[True]), statistics.median(cpu_time[False])
        out |= {
            "cpu_time_log_every_1_s": c1,
            "cpu_time_log_every_100_s": (99 * cu + c1) / 100,
            "cpu_time_ratio_1_over_100": c1 / ((99 * cu + c1) / 100),
        }
    if device.type == "cuda":
        unlogged_syncs = [count_syncs(lambda: trainer.train_step(group, log=False)) for _ in range(5)]
        out["syncs_per_unlogged_step"] = max(unlogged_syncs)
        out["syncs_per_unlogged_step_all"] = unlogged_syncs
        out["syncs_per_logged_step"] = count_syncs(lambda: trainer.train_step(group, log=True))
    return out


def clips_per_epoch(tier: int, video_length: int) -> int:
    p = PRESETS[f"tier{tier}"]
    return round(p["num_episodes"] * 0.9) * (p["max_steps"] // video_length)


def run(
    device: torch.device,
    tiers: list[int],
    steps: int,
    warmup: int,
    batch_size: int | None,
    compile_: bool,
    amp_settings=(False, True),
    log_compare_tiers=(1,),
    log_steps: int | None = None,
    echo=print,
    compiled_only: bool = False,
) -> dict:
    """Every figure of this benchmark as a dict (also printed through `echo`)."""
    report: dict = {"device": str(device), "steps": steps, "warmup": warmup, "tiers": {}}
    echo(f"device {device}; {steps} timed steps after {warmup} warm-up; clips/s of full train steps")
    for tier in tiers:
        over = {"device": device.type} | ({"batch_size": batch_size} if batch_size else {})
        base = resolve_train(tier, overrides=over, env={})
        per_epoch = clips_per_epoch(tier, base.video_length)
        n_params = count_parameters(AIME.from_config(base, 2))
        echo(
            f"tier {tier}: {base.video_length} x {base.img_size} px, batch {base.batch_size} x accum "
            f"{base.gradient_accumulation_steps}, {n_params / 1e6:.1f} M params, {per_epoch} clips/epoch"
        )
        entry: dict = {
            "batch_size": base.batch_size,
            "accum": base.gradient_accumulation_steps,
            "clips_per_epoch": per_epoch,
            "params_m": n_params / 1e6,
            "settings": {},
        }
        for comp in (True,) if compiled_only else (False, True) if compile_ else (False,):
            for amp in amp_settings:
                mode = os.environ.get("AIME_COMPILE_MODE")  # the Trainer's torch.compile mode, when set
                kind = (f"compiled[{mode}]" if mode else "compiled") if comp else "eager"
                name = f"{kind} {'amp' if amp else 'fp32'}"
                cfg = resolve_train(tier, overrides=over | {"amp": amp, "compile": comp}, env={})
                try:
                    r = measure(cfg, device, steps, warmup)
                except torch.OutOfMemoryError as exc:
                    r = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
                except Exception as exc:  # noqa: BLE001 - one failing setting must not lose the others
                    r = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                if "clips_per_s" in r:
                    r["epoch_time_s"] = per_epoch / r["clips_per_s"]
                    extra = (
                        f"  mem {r['gpu_mem_gb']:.2f} GB  util {r.get('gpu_util_mean', float('nan')):.0f} %"
                        if "gpu_mem_gb" in r
                        else ""
                    )
                    echo(
                        f"  {name:14s} {r['clips_per_s']:8.2f} clips/s   epoch {r['epoch_time_s']:9.1f} s{extra}"
                    )
                else:
                    echo(f"  {name:14s} {r['error']}")
                entry["settings"][name] = r
        rates = {k: v["clips_per_s"] for k, v in entry["settings"].items() if "clips_per_s" in v}
        if "eager fp32" in rates:
            ref = rates["eager fp32"]
            echo("  ratios vs eager fp32: " + ", ".join(f"{k} {v / ref:.2f}x" for k, v in rates.items()))
        if tier in log_compare_tiers:
            cfg = resolve_train(tier, overrides=over | {"amp": device.type == "cuda"}, env={})
            lc = log_cost(cfg, device, log_steps or max(8, steps), warmup)
            entry["log_cost"] = lc
            syncs = (
                f"; syncs per unlogged step {lc['syncs_per_unlogged_step']} (logged step "
                f"{lc['syncs_per_logged_step']})"
                if "syncs_per_unlogged_step" in lc
                else ""
            )
            echo(
                f"  log_every 1: {lc['step_time_log_every_1_s'] * 1e3:.1f} ms/step, log_every 100: "
                f"{lc['step_time_log_every_100_s'] * 1e3:.1f} ms/step, ratio {lc['ratio_1_over_100']:.3f} "
                f"(a logged step costs {lc['logging_cost_per_logged_step_s'] * 1e3:+.1f} ms){syncs}"
            )
        report["tiers"][str(tier)] = entry
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiers", default="1,2,3")
    ap.add_argument("--steps", type=int, default=20, help="Timed steps per setting.")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch_size", type=int, default=None, help="Override the tier's batch size.")
    ap.add_argument("--quick", action="store_true", help="CPU smoke: batch 2, 2 timed steps, 1 warm-up.")
    ap.add_argument("--compile", action="store_true", help="Also time torch.compile (slow to start).")
    ap.add_argument("--log_steps", type=int, default=None, help="Steps of the log_every 1 vs 100 comparison.")
    ap.add_argument("--json", default=None, help="Also write every figure to this JSON file.")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup, args.batch_size = 2, 1, args.batch_size or 2
    tiers = [int(t) for t in args.tiers.split(",")]
    report = run(
        torch.device(args.device),
        tiers,
        args.steps,
        args.warmup,
        args.batch_size,
        args.compile,
        log_steps=args.log_steps or (8 if args.quick else None),
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
