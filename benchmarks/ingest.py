"""Metric ingest and read speed of the service, on SQLite and Postgres, through a real API process.

Prints: points/s ingested over HTTP in batches and one point per request, read time of a 10k-point series (exact)
and of a 1M-point series (downsampled to 1000 buckets, and a zoom on 100k of its steps), the live latency from an
HttpSink.metrics() call to the point's arrival on an SSE stream (p50/p95), and the API's memory and the run's Redis
stream size after the ingest.

Each figure comes with its ratio against the previous implementation measured in the same run (`--before`, a git
revision, by default the one before issue #15): its tree is exported with `git archive` and served by a second API
process (on uvicorn's pure-Python h11 and asyncio loop, as it ran), the servers taking turns; the old downsampled
query runs in-process on the same database as the new one and must give the same answer.

    AIME_TEST_REDIS_URL=redis://127.0.0.1:6379/15 AIME_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python benchmarks/ingest.py [--points 200000] [--batch 2000] [--before REV|none]
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


BEFORE = "9671a08^"  # the tree before issue #15 (metric tiles, byte-capped streams, lighter ingest)


def export_tree(rev: str) -> Path:
    """The repository at `rev` in a temporary directory (git archive: the working tree is not touched)."""
    out = Path(tempfile.mkdtemp(prefix="aime-before-"))
    tar = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=tar, check=True)
    return out


def start_api(env: dict, root: Path = ROOT, old_stack: bool = False) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(port), "--log-level", "warning"]
    cmd += ["--http", "h11", "--loop", "asyncio"] if old_stack else []
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=root, stderr=subprocess.DEVNULL)
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
    for s in range(20):  # warm-up (first requests import and connect)
        http.post(f"/api/runs/{run}/metrics", json={"points": [{"key": "warm", "step": s, "value": 1.0}]})
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
    """A long series written straight into the table, then its tiles (only the read is measured)."""
    from backend import metrics

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
        metrics.rebuild_tiles(conn, run)
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE metricpoint"))
            conn.execute(text("ANALYZE metrictile"))
    engine.dispose()


def in_process_reads(before_root: Path | None, run: int) -> list[tuple[str, float, float | None]]:
    """(name, new s, old s) of the 1M-point chart read, a zoom and a short metric's read, in-process on the API's database, both
    implementations on the same data; the answers must match."""
    import importlib.util

    from sqlmodel import Session

    from backend import metrics
    from backend.core.db import get_engine

    old = None
    if before_root is not None:
        spec = importlib.util.spec_from_file_location(
            "metrics_before", before_root / "backend" / "metrics.py"
        )
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    out = []
    cases = [("1M points, 1000 buckets", "big", None, None), ("zoom 100k steps", "big", 400_000, 499_999)]
    cases.append(("10k points, 1000 buckets", "small", None, None))  # a short metric: no slower
    for name, key, lo, hi in cases:
        t_new = t_old = None
        for impl in ("new", "old", "new", "old", "new", "old"):
            if impl == "old" and old is None:
                continue
            with Session(get_engine()) as session:
                t0 = time.perf_counter()
                body = (metrics if impl == "new" else old).downsample(session, run, key, 1000, lo, hi)
                dt = time.perf_counter() - t0
            if impl == "new":
                t_new, new_body = min(t_new or dt, dt), body
            else:
                t_old, old_body = min(t_old or dt, dt), body
        if old is not None:
            assert new_body == old_body, f"{name}: the tiled read differs from the old query"
        out.append((name, t_new, t_old))
    return out


def api_rss_mib(proc: subprocess.Popen) -> float:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def redis_mib(url: str, prefix: str) -> float:
    r = redis.Redis.from_url(url)
    return sum(r.memory_usage(k, samples=0) or 0 for k in r.scan_iter(f"{prefix}*")) / 2**20  # exact


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


def ratio(new: float, old: float | None, higher_is_better: bool) -> str:
    if old is None:
        return ""
    x = new / old if higher_is_better else old / new
    return f" (before: {old:,.3g}; x{x:.1f} {'faster' if x >= 1 else 'slower'})"


def run_backend(name: str, db_env: dict, args, before_root: Path | None) -> None:
    redis_url = os.environ.get("AIME_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    servers = {}
    procs = []
    try:
        for impl, root in (("new", ROOT), ("old", before_root)):
            if root is None:
                continue
            prefix = f"aimebench-{uuid.uuid4().hex[:6]}:"
            env = {**db_env, "AIME_DATA_DIR": tempfile.mkdtemp(), "AIME_REDIS_URL": redis_url}
            env |= {"AIME_REDIS_PREFIX": prefix, "AIME_API_TOKEN": TOKEN}
            if impl == "old" and db_env.get("AIME_DATABASE_SCHEMA"):
                env["AIME_DATABASE_SCHEMA"] = db_env["AIME_DATABASE_SCHEMA"] + "_old"
            if impl == "old" and not db_env.get("AIME_DATABASE_SCHEMA"):
                env["AIME_DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/bench-old.db"
            if impl == "old":  # migrate with the old tree's migrations
                subprocess.run(
                    [sys.executable, "-c", "from backend.core.db import migrate; migrate()"],
                    cwd=root,
                    env={**os.environ, **env},
                    check=True,
                )
            proc, url = start_api(env, root, old_stack=impl == "old")
            procs.append(proc)
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300)
            servers[impl] = {"env": env, "proc": proc, "url": url, "http": http, "prefix": prefix}
        os.environ.update(servers["new"]["env"])
        from backend.core import celery_client, db, pubsub, settings

        for cache in (settings.get_settings, db.get_engine, celery_client.get_celery, pubsub.sync_redis):
            cache.cache_clear()
        db.migrate()
        res: dict[str, dict] = {k: {"rate": [], "single": []} for k in servers}
        for _ in range(args.rounds):  # the servers take turns: the load of the machine falls on both alike
            for impl, srv in servers.items():
                rate, single = bench_ingest(srv["http"], args.points, args.batch)
                res[impl]["rate"].append(rate)
                res[impl]["single"].append(single)
        for impl, srv in servers.items():
            res[impl]["rss"] = api_rss_mib(srv["proc"])
            res[impl]["redis"] = redis_mib(redis_url, srv["prefix"])
        med = {k: {m: statistics.median(v[m]) for m in ("rate", "single")} for k, v in res.items()}
        old = med.get("old", {})
        new = med["new"]
        print(
            f"[{name}] ingest in batches of {args.batch}: {new['rate']:,.0f} points/s"
            f"{ratio(new['rate'], old.get('rate'), True)}"
        )
        print(
            f"[{name}] ingest one point per request: {new['single']:,.0f} points/s"
            f"{ratio(new['single'], old.get('single'), True)}"
        )
        o = res.get("old")
        print(
            f"[{name}] after {args.rounds} x {args.points:,} points: API {res['new']['rss']:.0f} MiB RSS, "
            f"Redis keys {res['new']['redis']:.1f} MiB"
            + (f" (before: API {o['rss']:.0f} MiB, Redis keys {o['redis']:.1f} MiB)" if o else "")
        )
        http = servers["new"]["http"]
        run = new_run(http)
        fill_direct(db_env["AIME_DATABASE_URL"], db_env.get("AIME_DATABASE_SCHEMA", ""), run, "small", 10_000)
        fill_direct(
            db_env["AIME_DATABASE_URL"], db_env.get("AIME_DATABASE_SCHEMA", ""), run, "big", 1_000_000
        )
        t_exact, body = timed_get(http, f"/api/runs/{run}/metrics/small", {"exact": True, "limit": 10000})
        assert len(body["steps"]) == 10_000
        t_small, body = timed_get(http, f"/api/runs/{run}/metrics/small", {"buckets": 1000})
        t_down, body = timed_get(http, f"/api/runs/{run}/metrics/big", {"buckets": 1000}, repeat=3)
        assert body["buckets"] == 1000 and body["nonfinite"]["steps"] == [500_000]
        zoom = {"buckets": 1000, "step_min": 400_000, "step_max": 499_999}
        t_zoom, body = timed_get(http, f"/api/runs/{run}/metrics/big", zoom, repeat=3)
        print(
            f"[{name}] read over HTTP: 10k points exact {t_exact * 1e3:.0f} ms, 10k points in 1000 buckets "
            f"{t_small * 1e3:.0f} ms; 1M points in 1000 buckets {t_down * 1e3:.0f} ms, zoom on 100k of them "
            f"{t_zoom * 1e3:.0f} ms"
        )
        for what, t_new, t_old in in_process_reads(before_root, run):
            print(
                f"[{name}] read in-process, {what}: {t_new * 1e3:.0f} ms{ratio(t_new, t_old, False)}"
                + (" [same answer]" if t_old is not None else "")
            )
        lat = bench_latency(servers["new"]["url"], http, args.samples)
        p50, p95 = lat[len(lat) // 2], lat[int(len(lat) * 0.95) - 1]
        print(
            f"[{name}] live latency sink -> SSE over {len(lat)} points: p50 {p50 * 1e3:.0f} ms, "
            f"p95 {p95 * 1e3:.0f} ms (HttpSink flushes every 200 ms)"
        )
    finally:
        for srv in servers.values():
            srv["http"].close()
        for proc in procs:
            proc.terminate()
            proc.wait(20)
        r = redis.Redis.from_url(redis_url)
        for srv in servers.values():
            keys = list(r.scan_iter(f"{srv['prefix']}*"))
            if keys:
                r.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="ingest rounds per server (median)")
    parser.add_argument("--before", default=BEFORE, help="git revision to compare with, or 'none'")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    before_root = None if args.before == "none" else export_tree(args.before)
    run_backend(
        "sqlite", {"AIME_DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/bench.db"}, args, before_root
    )
    pg = os.environ.get("AIME_TEST_POSTGRES_URL")
    if not pg:
        print("[postgres] skipped: AIME_TEST_POSTGRES_URL not set")
        return
    schema = f"aime_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine("postgresql+psycopg://" + pg.split("://", 1)[1])
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
        conn.execute(text(f"CREATE SCHEMA {schema}_old"))
    try:
        run_backend("postgres", {"AIME_DATABASE_URL": pg, "AIME_DATABASE_SCHEMA": schema}, args, before_root)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            conn.execute(text(f"DROP SCHEMA {schema}_old CASCADE"))


if __name__ == "__main__":
    main()
