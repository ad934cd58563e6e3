"""Metric ingest and read speed of the service, on SQLite and Postgres, through a real API process.

Prints: points/s ingested over HTTP in batches (ratio against one point per request, measured in the same run),
read time of a 10k-point series (exact) and of a 1M-point series (downsampled to 1000 buckets), and the live
latency from an HttpSink.metrics() call to the point's arrival on an SSE stream (p50/p95).

    AIME_TEST_REDIS_URL=redis://127.0.0.1:6379/15 AIME_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python benchmarks/ingest.py [--points 200000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("API did not start")


def new_run(http: httpx.Client) -> int:
    body = {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True}
    return http.post("/api/runs", json=body).raise_for_status().json()["id"]


def bench_ingest(http: httpx.Client, n: int, batch: int) -> tuple[float, float]:
    run = new_run(http)
    single = 300
    t0 = time.perf_counter()
    for s in range(single):
        http.post(f"/api/runs/{run}/metrics", json={"points": [{"key": "one", "step": s, "value": s * 0.5}]})
    single_rate = single / (time.perf_counter() - t0)
    keys = [f"k{i}" for i in range(10)]
    t0 = time.perf_counter()
    pts = [{"key": keys[i % 10], "step": i // 10, "value": i * 1e-3} for i in range(n)]
    for i in range(0, n, batch):
        http.post(f"/api/runs/{run}/metrics", json={"points": pts[i : i + batch]}).raise_for_status()
    return n / (time.perf_counter() - t0), single_rate


def fill_direct(db_url: str, schema: str, run: int, key: str, n: int) -> None:
    """A long series written straight into the table (only the read is measured)."""
    url = (
        db_url
        if not db_url.startswith("postgresql://")
        else "postgresql+psycopg://" + db_url.split("://", 1)[1]
    )
    args = {"options": f"-csearch_path={schema}"} if schema else {}
    engine = create_engine(url, connect_args=args)
    rows = [{"r": run, "k": key, "s": s, "v": (s % 997) * 1e-3, "w": 0.0} for s in range(n)]
    rows[n // 2]["v"] = None  # one NaN in the middle: it must show up in the downsampled answer
    with engine.begin() as conn:
        for i in range(0, n, 50000):
            conn.execute(
                text(
                    "INSERT INTO metricpoint (run_id, key, step, value, wall_time) VALUES (:r, :k, :s, :v, :w)"
                ),
                rows[i : i + 50000],
            )
    engine.dispose()


def timed_get(http: httpx.Client, path: str, params: dict, repeat: int = 5) -> tuple[float, dict]:
    times, body = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        body = http.get(path, params=params).raise_for_status().json()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), body


def bench_latency(url: str, http: httpx.Client, samples: int) -> list[float]:
    from worker.api import ApiClient
    from worker.http_sink import HttpSink

    run = new_run(http)
    arrived: dict[int, float] = {}
    ready = threading.Event()

    def listen():
        with httpx.stream("GET", f"{url}/api/runs/{run}/events", timeout=None) as resp:
            for line in resp.iter_lines():
                ready.set()
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    for p in ev.get("points", []):
                        arrived.setdefault(p["step"], time.perf_counter())
                if len(arrived) >= samples:
                    return

    threading.Thread(target=listen, daemon=True).start()
    ready.wait(10)
    sink = HttpSink(ApiClient(url, TOKEN), run, tempfile.mkdtemp())
    sent = {}
    for step in range(samples):
        sent[step] = time.perf_counter()
        sink.metrics(step, {"latency/probe": float(step)})
        time.sleep(0.05)
    sink.close()
    deadline = time.time() + 10
    while len(arrived) < samples and time.time() < deadline:
        time.sleep(0.05)
    return sorted(arrived[s] - sent[s] for s in sent if s in arrived)


def run_backend(name: str, db_env: dict, args) -> None:
    redis_url = os.environ.get("AIME_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    prefix = f"aimebench-{uuid.uuid4().hex[:6]}:"
    data = tempfile.mkdtemp()
    env = {**db_env, "AIME_DATA_DIR": data, "AIME_REDIS_URL": redis_url, "AIME_REDIS_PREFIX": prefix}
    env |= {"AIME_API_TOKEN": TOKEN}
    os.environ.update(env)
    from backend.core import celery_client, db, pubsub, settings

    for cache in (settings.get_settings, db.get_engine, celery_client.get_celery, pubsub.sync_redis):
        cache.cache_clear()
    db.migrate()
    proc, url = start_api(env)
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    try:
        rate, single = bench_ingest(http, args.points, args.batch)
        print(
            f"[{name}] ingest: {rate:,.0f} points/s in batches of {args.batch} "
            f"({single:,.0f} points/s one per request; x{rate / single:.0f})"
        )
        run = new_run(http)
        fill_direct(db_env["AIME_DATABASE_URL"], db_env.get("AIME_DATABASE_SCHEMA", ""), run, "small", 10_000)
        fill_direct(
            db_env["AIME_DATABASE_URL"], db_env.get("AIME_DATABASE_SCHEMA", ""), run, "big", 1_000_000
        )
        t_exact, body = timed_get(http, f"/api/runs/{run}/metrics/small", {"exact": True, "limit": 10000})
        assert len(body["steps"]) == 10_000
        t_down, body = timed_get(http, f"/api/runs/{run}/metrics/big", {"buckets": 1000}, repeat=3)
        assert body["buckets"] == 1000 and body["nonfinite"]["steps"] == [500_000]
        print(
            f"[{name}] read: 10k points exact {t_exact * 1e3:.0f} ms; 1M points downsampled to 1000 buckets "
            f"{t_down * 1e3:.0f} ms ({t_down / t_exact:.1f}x the 10k exact read)"
        )
        lat = bench_latency(url, http, args.samples)
        p50, p95 = lat[len(lat) // 2], lat[int(len(lat) * 0.95) - 1]
        print(
            f"[{name}] live latency sink -> SSE over {len(lat)} points: p50 {p50 * 1e3:.0f} ms, "
            f"p95 {p95 * 1e3:.0f} ms (HttpSink flushes every 200 ms)"
        )
    finally:
        http.close()
        proc.terminate()
        proc.wait(20)
        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(f"{prefix}*"))
        if keys:
            r.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    run_backend("sqlite", {"AIME_DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/bench.db"}, args)
    pg = os.environ.get("AIME_TEST_POSTGRES_URL")
    if not pg:
        print("[postgres] skipped: AIME_TEST_POSTGRES_URL not set")
        return
    schema = f"aime_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine("postgresql+psycopg://" + pg.split("://", 1)[1])
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        run_backend("postgres", {"AIME_DATABASE_URL": pg, "AIME_DATABASE_SCHEMA": schema}, args)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


if __name__ == "__main__":
    main()
