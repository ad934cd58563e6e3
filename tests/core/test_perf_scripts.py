"""benchmarks/epoch_table.py (the seed's epoch-time table from run directories) and gpu_check.py's verdicts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aime_core.sinks import JsonlSink

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import epoch_table  # noqa: E402
import gpu_check  # noqa: E402


def write_run(d: Path, cfg: dict, processes: list[tuple[str, list[float], bool]]) -> None:
    """A run directory as train() leaves it: config.json and metrics.jsonl, one segment per training process."""
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg))
    sink = JsonlSink(d / "metrics.jsonl")
    step = 0
    for device, times, resumed in processes:
        sink.event("status", {"status": "running", "message": f"training on {device}"})
        if resumed:
            sink.event("log", {"level": "info", "message": "resumed from x/last.pt at epoch 2, step 10"})
        for t in times:
            step += 5
            sink.metrics(step, {"loss": 1.0})
            sink.metrics(step, {"epoch": 1, "perf/epoch_time": t, "val/loss": 1.0})
        sink.event("status", {"status": "succeeded", "message": ""})
    sink.close()


def test_epoch_table_from_run_directories(tmp_path, capsys):
    cart = {"domain": "cartpole", "task": "swingup", "tier": 1, "preset": None}
    # First epoch (warm-up) dropped: median of 2, 3, 4 = 3 s.
    write_run(tmp_path / "a", cart, [("cuda:0", [9.0, 2.0, 3.0, 4.0], False)])
    # Interrupted after 1 epoch, resumed for 3: the resumed process's first (partial) epoch is dropped too;
    # the first process's single epoch counts (it is whole) -> runs 5 s and median(1.0, 1.0) = 1 s.
    write_run(tmp_path / "b", cart, [("cuda:0", [5.0], False), ("cuda:0", [0.2, 1.0, 1.0], True)])
    write_run(tmp_path / "c", {**cart, "tier": 2}, [("cpu", [100.0, 90.0], False)])
    # A resumed process with one epoch only is never counted.
    write_run(tmp_path / "d", {**cart, "tier": 3}, [("cuda:0", [7.0], True)])
    rows = epoch_table.table(epoch_table.runs_from_dirs([tmp_path], "NVIDIA H200"))
    by_hw = {r["hardware"]: r for r in rows}
    gpu, cpu = by_hw["NVIDIA H200"], by_hw["CPU"]
    assert gpu["environment"] == "cartpole-swingup"
    t1 = gpu["tiers"][1]
    assert t1["runs"] == 3 and t1["measured_s"] == 3.0 and t1["seed_3090_s"] == 5
    assert abs(t1["ratio_3090_over_measured"] - 5 / 3) < 1e-9
    assert gpu["tiers"][3]["measured_s"] is None and gpu["tiers"][3]["runs"] == 0
    assert (
        cpu["tiers"][2]["measured_s"] == 90.0
        and abs(cpu["tiers"][2]["ratio_3090_over_measured"] - 0.5) < 1e-9
    )
    assert epoch_table.main([str(tmp_path), "--gpu_name", "NVIDIA H200"]) == 0
    out = capsys.readouterr().out
    assert (
        "cartpole-swingup" in out
        and "3.00 s n=3 / 5.00 s (1.67x)" in out
        and "90 s n=1 / 45 s (0.50x)" in out
    )


def test_epoch_table_says_when_nothing_is_measured(tmp_path, capsys):
    assert epoch_table.main([str(tmp_path)]) == 0
    assert "No measured epoch yet" in capsys.readouterr().out


def test_gpu_check_targets_met_miss_and_not_run():
    report = {
        "environment": {"cuda_available": True},
        "tier1_training": {"epoch_time_s": 0.8, "nvml": {"gpu_util_busy_median": 65.0}},
        "throughput": {
            "1": {
                "settings": {"eager fp32": {"epoch_time_s": 1.5}},
                "log_cost": {"syncs_per_unlogged_step": 1},
            },
            "2": {"settings": {"eager amp": {"epoch_time_s": 12.0}, "compiled amp": {"epoch_time_s": 8.0}}},
        },
        "cpu_log_cost": {"ratio_1_over_100": 1.3},
    }
    t = gpu_check.targets(report, dry=False)
    assert t["tier1_epoch_le_1s"]["status"] == "MET" and t["tier1_epoch_le_1s"]["value_s"] == 0.8  # measured
    assert t["tier2_epoch_le_9s"]["status"] == "MET" and "compiled amp" in t["tier2_epoch_le_9s"]["how"]
    assert t["tier3_epoch_le_36s"]["status"] == "not run"
    assert t["gpu_util_ge_80pct_tier1_training"]["status"] == "MISS"
    assert t["syncs_per_unlogged_step_le_1"]["status"] == "MET"
    assert t["cpu_log_every_100_faster_than_1"]["status"] == "MET"
    dry = gpu_check.targets(report | {"environment": {"cuda_available": False}}, dry=True)
    assert {k: v["status"] for k, v in dry.items() if k != "cpu_log_every_100_faster_than_1"} == {
        k: "not run" for k in dry if k != "cpu_log_every_100_faster_than_1"
    }


def test_gpu_check_text_report_with_failed_and_missing_phases():
    report = {
        "dry_run": True,
        "started": "now",
        "wall_s": 12.0,
        "environment": {"python": "3.12", "torch": "2.11.0", "cuda": None, "cuda_available": False},
        "cuda_tests": {
            "rc": 0,
            "wall_s": 3,
            "summary": {"skipped": 1},
            "tests": {"t": "skipped: needs a CUDA GPU"},
        },
        "tier1_training": {"rc": "timeout", "nvml": {}},
        "throughput": {"1": {"settings": {"eager fp32": {"error": "out of memory: x"}}}},
        "skipped_throughput": {"tier 3 compiled": "not run: budget spent"},
        "cpu_log_cost": {"error": "timeout"},
    }
    report["targets"] = gpu_check.targets(report, dry=True)
    text = gpu_check.text_report(report)
    assert "DRY RUN" in text and "tier-1 training: not run / failed (rc timeout)" in text
    assert "out of memory: x" in text and "tier 3 compiled: not run: budget spent" in text
    assert "CPU log_every 1 vs 100: not measured" in text and "not run  tier1_epoch_le_1s" in text


def test_train_throughput_log_cost_on_the_debug_preset():
    import torch
    import train_throughput

    from aime_core.config import resolve_train

    cfg = resolve_train(
        1, "debug", overrides={"device": "cpu", "checkpoint_dir": "/tmp/aime-tt-test"}, env={}
    )
    lc = train_throughput.log_cost(cfg, torch.device("cpu"), steps=3, warmup=1)
    assert lc["steps"] == 3 and "syncs_per_unlogged_step" not in lc  # counted on CUDA only
    t1, t100, tu = lc["step_time_log_every_1_s"], lc["step_time_log_every_100_s"], lc["step_time_unlogged_s"]
    assert t1 > 0 and tu > 0 and abs(t100 - (99 * tu + t1) / 100) < 1e-12
    assert abs(lc["ratio_1_over_100"] - t1 / t100) < 1e-12
    r = train_throughput.measure(cfg, torch.device("cpu"), steps=2, warmup=1)
    assert r["clips_per_s"] > 0 and abs(r["step_time_s"] * r["clips_per_s"] - cfg.batch_size) < 1e-6
