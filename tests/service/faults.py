"""Helpers of the fault tests (issue #10): real processes, polled with deadlines, points counted exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

DEBUG_TRAIN = {"kind": "train", "tier": 1, "preset": "debug", "synthetic": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, logs=None, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n" + (logs() if logs else ""))


def stored_points(url: str, run_id: int) -> set[tuple[str, int]]:
    """Every (key, step) the API holds for a run."""
    out = set()
    for k in httpx.get(f"{url}/api/runs/{run_id}/metrics", timeout=30).json():
        series = httpx.get(
            f"{url}/api/runs/{run_id}/metrics/{k['key']}", params={"exact": True, "limit": 100000}, timeout=30
        ).json()
        out |= {(k["key"], s) for s in series["steps"]}
    return out


def jsonl_points(path: Path, until: int | None = None) -> set[tuple[str, int]]:
    """Every (key, step) a trainer wrote to its metrics.jsonl (a torn last line is skipped)."""
    out = set()
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("type") == "metrics" and (until is None or rec["step"] <= until):
            out |= {(k, rec["step"]) for k in rec["values"]}
    return out


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run(url: str, rid: int) -> dict:
    return httpx.get(f"{url}/api/runs/{rid}", timeout=30).json()


def status_is(url: str, rid: int, *statuses: str):
    def check():
        try:
            r = run(url, rid)
        except (httpx.HTTPError, ValueError):
            return None
        return r if r["status"] in statuses else None

    return check


def started_count(url: str, rid: int) -> int:
    """How many times a worker started the run (its log lines "started on ...")."""
    lines = httpx.get(f"{url}/api/runs/{rid}/log", params={"tail": 10000}, timeout=30).json()["lines"]
    return sum(1 for ln in lines if ln["message"].startswith("started on"))


def children(pid: int) -> dict[int, str]:
    """Direct children of `pid`: {pid: command line}."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


def procs_with_env(var: str, value: str) -> list[int]:
    """Processes whose environment holds var=value (ours have AIME_DATA_DIR=<their data dir>)."""
    found, needle = [], f"{var}={value}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Up:
    """`aime up` as a user runs it, on its own port and data directory, with its output in a log file."""

    def __init__(self, data_dir: Path, workers: int = 1, extra_env: dict | None = None):
        self.data_dir = data_dir.resolve()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIME_")}
        self.env |= {"MUJOCO_GL": "egl", **(extra_env or {})}
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self.out = self.data_dir.parent / f"up-{self.port}.out"

    def cmd(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "worker.cli",
            "up",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            str(self.workers),
        ]

    def start(self, timeout: float = 120) -> Up:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = self.out.open("ab")
        self.proc = subprocess.Popen(self.cmd(), env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        wait_for(
            lambda: "Ctrl-C" in self.output() or self.proc.poll() is not None, timeout, "aime up", self.logs
        )
        assert self.proc.poll() is None, self.logs()
        self.token = re.search(r"API token: (\S+)", self.output()).group(1)
        return self

    @property
    def h(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def output(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def logs(self) -> str:
        parts = [f"--- aime up\n{self.output()[-3000:]}"]
        for p in sorted((self.data_dir / "logs").glob("*.log")):
            parts.append(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def child(self, needle: str) -> int | None:
        """The pid of the child whose command line contains `needle`."""
        for pid, cmd in children(self.proc.pid).items():
            if needle in cmd and alive(pid):
                return pid
        return None

    def launch(self, body: dict) -> dict | list:
        resp = httpx.post(f"{self.url}/api/runs", json=body, headers=self.h, timeout=60)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
