"""How the run page copes with a metric of a million points, against the same page with a thousand.

Starts the real stack (`aime up` on a temporary data directory), makes two cancelled (never started) runs and
ingests `loss` into them through the API: 1,000 points into the baseline, --points (default 1,000,000) into the
big one, with a NaN every 100,000 steps. Then, in headless Debian chromium at 1280 px, it times: the server's
downsampled answer, the page until the loss chart is drawn, a zoom re-fetch, and a redraw. The chart holds at
most ~1,500 buckets (min/max/last per bucket) whatever the size, so the ratio should stay near 1.

    .venv/bin/python benchmarks/dashboard_million_points.py [--points 1000000]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOSS_LEN = "() => ((document.getElementById('chart-losses')?.data || []).find((t) => t.name === 'loss')?.x || []).length"


def start_stack(data_dir: Path) -> tuple[subprocess.Popen, str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIME_")}
    aime = Path(sys.executable).with_name("aime")
    proc = subprocess.Popen(
        [str(aime), "up", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return proc, url, (data_dir / "api_token").read_text().strip()
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("aime up did not come up")


def make_run(http: httpx.Client, seed: int, points: int) -> tuple[int, float]:
    """A queued-then-cancelled run (no worker touches it) with `points` loss values; returns (id, ingest s)."""
    run = http.post(
        "/api/runs",
        json={
            "kind": "train",
            "tier": 1,
            "preset": "debug",
            "seed": seed,
            "overrides": {"data_path": "/nonexistent/bench.hdf5"},
        },
    )
    assert run.status_code == 201, run.text
    rid = run.json()["id"]
    http.post(f"/api/runs/{rid}/cancel").raise_for_status()
    t0 = time.perf_counter()
    batch = 50_000
    for start in range(1, points + 1, batch):
        pts = [
            {
                "key": "loss",
                "step": s,
                "value": "nan" if s % 100_000 == 0 else 1.0 / (1 + s * 1e-4) + (s % 7) * 1e-3,
            }
            for s in range(start, min(points, start + batch - 1) + 1)
        ]
        http.post(f"/api/runs/{rid}/metrics", json={"points": pts}).raise_for_status()
    return rid, time.perf_counter() - t0


def time_page(page, url: str, rid: int, points: int) -> dict[str, float]:
    out = {}
    t0 = time.perf_counter()
    r = httpx.get(f"{url}/api/runs/{rid}/metrics/loss", params={"buckets": 1500}, timeout=120)
    out["downsample_s"] = time.perf_counter() - t0
    out["buckets"] = r.json()["buckets"]
    t0 = time.perf_counter()
    page.goto(f"{url}/runs/{rid}")
    page.wait_for_function(f"({LOSS_LEN})() > 0", timeout=120_000)
    out["page_to_chart_s"] = time.perf_counter() - t0
    lo, hi = points // 2, points // 2 + points // 100
    t0 = time.perf_counter()
    page.evaluate(f"Plotly.relayout('chart-losses', {{'xaxis.range[0]': {lo}, 'xaxis.range[1]': {hi}}})")
    page.wait_for_function(
        f"(document.getElementById('chart-losses').data.find((t) => t.name === 'loss')?.x || [0])[0] >= {lo}",
        timeout=120_000,
    )
    out["zoom_refetch_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    page.evaluate("document.getElementById('logy').click()")
    page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    out["log_toggle_redraw_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--baseline-points", type=int, default=1_000)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        proc, url, token = start_stack(Path(tmp))
        try:
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300)
            small, small_ingest = make_run(http, 0, args.baseline_points)
            big, big_ingest = make_run(http, 1, args.points)
            print(
                f"ingest: {args.baseline_points:,} points in {small_ingest:.2f} s; {args.points:,} points in "
                f"{big_ingest:.1f} s ({args.points / big_ingest:,.0f} points/s)"
            )
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors = []
                page.on("console", lambda m: m.type == "error" and errors.append(m.text))
                time_page(page, url, small, args.baseline_points)  # warm-up: plotly.js into the cache
                base = time_page(page, url, small, args.baseline_points)
                heavy = time_page(page, url, big, args.points)
                browser.close()
            print(f"{'':22}{args.baseline_points:>14,}{args.points:>14,}   ratio")
            for k in ("downsample_s", "page_to_chart_s", "zoom_refetch_s", "log_toggle_redraw_s"):
                print(f"{k:22}{base[k]:>14.3f}{heavy[k]:>14.3f}   {heavy[k] / max(base[k], 1e-9):.2f}x")
            print(f"buckets drawn: {base['buckets']} vs {heavy['buckets']}; console errors: {len(errors)}")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)


if __name__ == "__main__":
    main()
