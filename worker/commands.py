"""`aime up` (the whole service on one machine) and `aime worker` (join a queue from any machine).

They live with the service, not in aime_core: worker/cli.py adds them to the library's subcommands."""

from __future__ import annotations

import argparse
import os
import secrets
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
    w.add_argument(
        "--queues",
        default="collect,train",
        help="Comma-separated queues: collect, synthetic (synthetic datasets), train.",
    )
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
    bad = [q for q in queues if q not in ("collect", "synthetic", "train")]
    if bad:
        print(
            f"aime worker: unknown queue(s) {', '.join(bad)}; allowed: collect, synthetic, train",
            file=sys.stderr,
        )
        return 2
    gpus = [g.strip() for g in (args.gpus or "").split(",") if g.strip()]
    if len(gpus) > 1:  # one process per GPU, each seeing only its own device, supervised
        from worker.supervisor import Child, Supervisor

        cmd = [sys.executable, "-m", "worker.cli", "worker", "--queues", ",".join(queues)]
        children = [
            Child(f"worker gpu {g}", [*cmd, "--gpus", g], os.environ.copy(), None, worker=True) for g in gpus
        ]
        sup = Supervisor(children, os.environ.get("AIME_API_URL"), os.environ.get("AIME_API_TOKEN"))
        sup.install_signals()
        for c in children:
            sup.start(c)
        code = sup.run()
        sup.shutdown()
        return code
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
    from worker.supervisor import watch_parent

    watch_parent()  # under a supervisor: go when it goes
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


def _api_ready(url: str, timeout: float = 60):
    def ready(child) -> bool:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and child.proc is not None and child.proc.poll() is None:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        return False

    return ready


def cmd_up(args: argparse.Namespace) -> int:
    from worker.supervisor import (
        Child,
        DataDirBusy,
        Supervisor,
        lock_data_dir,
        log,
        mark_stale_runs_lost,
        port_taken,
        redis_child,
    )

    data_dir = Path(args.data_dir or os.environ.get("AIME_DATA_DIR") or "aime-data").resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    try:
        lock = lock_data_dir(data_dir)  # noqa: F841 - held until this process ends
    except DataDirBusy as exc:
        print(f"aime up: {exc}", file=sys.stderr)
        return 1
    if port_taken(args.host, args.port):
        print(
            f"aime up: port {args.port} on {args.host} is taken by another program; use --port",
            file=sys.stderr,
        )
        return 1
    token = _token(data_dir)
    os.environ["AIME_DATA_DIR"] = str(data_dir)  # before anything starts: every child (Redis too) carries it
    logs = data_dir / "logs"
    children: list = []
    redis_url = os.environ.get("AIME_REDIS_URL")
    sup = Supervisor(children)
    sup.install_signals()
    if not redis_url:  # a real redis-server, append-only file and unix socket in the data directory
        redis, redis_url = redis_child(data_dir, os.environ.copy(), logs)
        children.append(redis)
        if not sup.start(redis):
            print(f"aime up: the embedded Redis did not start; see {logs / 'redis.log'}", file=sys.stderr)
            sup.shutdown(grace=5)
            return 1
    url_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "127.0.0.1") else args.host
    api_url = f"http://{url_host}:{args.port}"
    env = os.environ | {
        "AIME_DATA_DIR": str(data_dir),
        "AIME_REDIS_URL": redis_url,
        "AIME_API_TOKEN": token,
        "AIME_API_URL": api_url,
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }
    if args.host not in ("127.0.0.1", "localhost", "::1"):  # the names announced below pass the Host check
        import socket

        wild = args.host in ("0.0.0.0", "::")
        names = [socket.getfqdn(), socket.gethostname()] if wild else [args.host]
        extra = [h for h in os.environ.get("AIME_ALLOWED_HOSTS", "").split(",") if h.strip()]
        env["AIME_ALLOWED_HOSTS"] = ",".join(dict.fromkeys([*extra, *names]))
    os.environ.update(env)
    from backend.core.db import migrate
    from backend.core.settings import Settings

    settings = Settings()
    migrate(settings)
    lost = mark_stale_runs_lost(settings)
    if lost:
        log(
            f"run(s) {', '.join(map(str, lost))} were running when an earlier aime up died: now lost (resumable)"
        )
    sup.api_url, sup.token = api_url, token

    py = sys.executable
    api = Child(
        "api",
        [py, "-m", "worker.supervisor", "api", "--host", args.host, "--port", str(args.port)],
        env,
        logs / "api.log",
        ready=_api_ready(api_url),
    )
    children.append(api)
    if not sup.start(api):
        print(f"aime up: the API did not come up; see {logs / 'api.log'}", file=sys.stderr)
        sup.shutdown(grace=5)
        return 1
    worker_env = {k: v for k, v in env.items() if k not in ("AIME_DATABASE_URL", "AIME_DATABASE_SCHEMA")}
    wcmd = [py, "-m", "worker.cli", "worker"]
    workers = [
        Child("collect worker", [*wcmd, "--queues", "collect"], worker_env, logs / "worker-collect.log"),
        # Synthetic datasets take seconds: their own small worker, so they never wait behind a real collection.
        Child(
            "synthetic worker", [*wcmd, "--queues", "synthetic"], worker_env, logs / "worker-synthetic.log"
        ),
    ]
    gpus = _gpu_count()
    n_train = args.workers if args.workers is not None else max(gpus, 1)
    for i in range(n_train):
        extra = ["--gpus", str(i % gpus)] if gpus else []
        cmd = [*wcmd, "--queues", "train", *extra]
        workers.append(Child(f"train worker {i}", cmd, worker_env, logs / f"worker-train-{i}.log"))
    for w in workers:
        w.worker = True
        children.append(w)
        sup.start(w)
    where = f"{gpus} GPU(s)" if gpus else "the CPU"
    if args.host in ("127.0.0.1", "localhost", "::1"):
        remote = "  (this machine only: to open it from another one, start with --host 0.0.0.0)\n"
    else:  # bound beyond loopback: the name others reach this machine by, not 127.0.0.1
        import socket

        name = args.host if args.host not in ("0.0.0.0", "::") else socket.getfqdn()
        remote = f"  (a browser on another machine: open http://{name}:{args.port}/?token={token} once)\n"
    print(
        f"\n  AIME tier runner is up: {api_url}/\n  API token: {token}\n{remote}"
        f"  {n_train} training worker(s) on {where}, 1 collection worker, 1 synthetic-data worker;"
        f" data and logs in {data_dir}\n"
        f"  Ctrl-C stops everything.\n",
        flush=True,
    )
    code = sup.run()
    sup.shutdown()
    print("aime up: stopped", flush=True)
    return code
