"""The seed guide's "Performance Comparison" (seconds per epoch, environment x tier) from measured runs, beside the
seed's RTX 3090 figures with the ratio (3090 time / measured time: above 1 = faster than the seed's 3090).

From run directories (each with metrics.jsonl and config.json; default: everything under checkpoints/):
    .venv/bin/python benchmarks/epoch_table.py [DIR ...] [--json]
From the service (what the compare page shows; token from AIME_API_TOKEN):
    .venv/bin/python benchmarks/epoch_table.py --api http://127.0.0.1:8000

Per run: the median of `perf/epoch_time` over the epochs its own process trained, the first dropped when there
are more (warm-up: allocator, cuDNN autotune, compilation); a resumed process's first epoch is the rest of an
interrupted one and a resumed process with a single epoch is not counted (the rule of frontend/static/perftable.js).
Then the median over runs per cell; rows split by hardware (GPU name, or CPU) and preset.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

# Seed guide, "Approximate epoch times on RTX 3090 (batch_size=32)", seconds.
SEED_3090 = {
    "cartpole-swingup": {1: 5, 2: 45, 3: 180},
    "reacher-easy": {1: 6, 2: 50, 3: 210},
    "cheetah-run": {1: 10, 2: 90, 3: 420},
    "walker-walk": {1: 15, 2: 120, 3: 600},
    "humanoid-walk": {1: 30, 2: 240, 3: 1800},
}
SEED_BY_DOMAIN = {k.split("-")[0]: v for k, v in SEED_3090.items()}


def own_epoch_time(times: list[float], resumed: bool) -> float | None:
    """One process's epoch times -> its epoch time (first dropped when there are more; see the docstring)."""
    times = [t for t in times if isinstance(t, (int, float)) and t == t and t != float("inf")]
    if not times:
        return None
    if len(times) >= 2:
        return statistics.median(times[1:])
    return None if resumed else times[0]


def runs_from_dirs(roots: list[Path], gpu_name: str | None) -> list[dict]:
    """One entry per training process found in the run directories under `roots`."""
    out = []
    for jl in sorted({p for r in roots for p in ([r] if r.is_file() else r.rglob("metrics.jsonl"))}):
        cfg_path = jl.parent / "config.json"
        if not cfg_path.exists():
            continue
        cfg = json.loads(cfg_path.read_text())
        segments: list[dict] = []
        for line in jl.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("type") == "event" and r.get("kind") == "status":
                msg = r.get("payload", {}).get("message", "")
                if (
                    r["payload"].get("status") == "running"
                ):  # a training process starts: "training on <device>"
                    device = msg.rsplit(" ", 1)[-1] if msg.startswith("training on") else "?"
                    segments.append({"device": device, "times": [], "resumed": False})
            elif r.get("type") == "event" and r.get("kind") == "log" and segments:
                if str(r.get("payload", {}).get("message", "")).startswith("resumed from"):
                    segments[-1]["resumed"] = True
            elif r.get("type") == "metrics" and segments:
                t = r.get("values", {}).get("perf/epoch_time")
                if t is not None:
                    segments[-1]["times"].append(float(t))
        for seg in segments:
            t = own_epoch_time(seg["times"], seg["resumed"] or bool(cfg.get("resume")))
            if t is None:
                continue
            hw = "CPU" if seg["device"] == "cpu" else (gpu_name or seg["device"])
            out.append(_entry(cfg.get("domain"), cfg.get("task"), cfg.get("tier"), cfg.get("preset"), hw, t))
    return out


def runs_from_api(url: str, token: str | None) -> list[dict]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url.rstrip("/") + "/api", headers=headers, timeout=60) as c:
        runs = c.get("/runs", params={"kind": "train", "limit": 1000}).raise_for_status().json()["items"]
        runs = [r for r in runs if (r.get("latest") or {}).get("perf/epoch_time") is not None]
        if not runs:
            return []
        ids = ",".join(str(r["id"]) for r in runs)
        q = {"runs": ids, "key": "perf/epoch_time", "buckets": 20000}
        series = c.get("/metrics", params=q).raise_for_status().json()["runs"]
    out = []
    from datetime import datetime

    for r in runs:
        s = series.get(str(r["id"])) or {}
        if not s.get("count"):
            continue
        start = r.get("started_at")
        start_s = datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp() if start else None
        ys = [
            float(y)
            for y, w in zip(s["last"], s["wall"], strict=False)
            if y is not None and (start_s is None or w is None or w >= start_s)
        ]
        t = own_epoch_time(ys, bool((r.get("config") or {}).get("resume")))
        if t is not None:
            hw = r.get("worker_gpu") or "CPU"
            out.append(_entry(r.get("domain"), r.get("task"), r.get("tier"), r.get("preset"), hw, t))
    return out


def _entry(domain, task, tier, preset, hw, t) -> dict:
    return {
        "env": f"{domain}-{task}",
        "domain": domain,
        "tier": tier,
        "preset": preset,
        "hw": hw,
        "epoch_s": t,
    }


def table(entries: list[dict]) -> list[dict]:
    cells: dict = defaultdict(lambda: defaultdict(list))
    for e in entries:
        row = (e["env"], e["hw"] + (f" · {e['preset']} preset" if e["preset"] else ""))
        cells[row][e["tier"]].append(e["epoch_s"])
    rows = []
    for (env, hw), by_tier in sorted(cells.items()):
        seed = SEED_3090.get(env) or SEED_BY_DOMAIN.get(env.split("-")[0], {})
        row = {"environment": env, "hardware": hw, "tiers": {}}
        for tier in (1, 2, 3):
            ts = by_tier.get(tier)
            m = statistics.median(ts) if ts else None
            s = seed.get(tier)
            row["tiers"][tier] = {
                "measured_s": m,
                "runs": len(ts or []),
                "seed_3090_s": s,
                "ratio_3090_over_measured": (s / m) if (m and s) else None,
            }
        rows.append(row)
    return rows


def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.2f} s" if s < 10 else (f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min")


def render(rows: list[dict]) -> str:
    head = f"{'Environment':24s} {'Hardware':28s}" + "".join(
        f" | {'Tier ' + str(t) + ' measured / 3090 (ratio)':38s}" for t in (1, 2, 3)
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for t in (1, 2, 3):
            c = r["tiers"][t]
            ratio = f"{c['ratio_3090_over_measured']:.2f}x" if c["ratio_3090_over_measured"] else "-"
            n = f" n={c['runs']}" if c["runs"] else ""
            cells.append(
                f" | {fmt_s(c['measured_s']) + n + ' / ' + fmt_s(c['seed_3090_s']) + ' (' + ratio + ')':38s}"
            )
        lines.append(f"{r['environment'][:24]:24s} {r['hardware'][:28]:28s}" + "".join(cells))
    lines.append("ratio = the seed's RTX 3090 time / measured time (above 1: faster than the seed's 3090)")
    return "\n".join(lines)


def local_gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "dirs", nargs="*", help="Run directories or folders holding them (default: checkpoints/)."
    )
    ap.add_argument(
        "--api", help="Read the runs from the service at this URL instead (token: AIME_API_TOKEN)."
    )
    ap.add_argument(
        "--gpu_name", help="Hardware label of CUDA runs read from directories (default: this GPU)."
    )
    ap.add_argument("--json", action="store_true", help="Print the table as JSON.")
    args = ap.parse_args(argv)
    if args.api:
        entries = runs_from_api(args.api, os.environ.get("AIME_API_TOKEN"))
    else:
        roots = [Path(d) for d in (args.dirs or ["checkpoints"])]
        entries = runs_from_dirs(roots, args.gpu_name or local_gpu_name())
    rows = table(entries)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print(
            "No measured epoch yet: every finished training epoch records perf/epoch_time in metrics.jsonl."
        )
    else:
        print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
