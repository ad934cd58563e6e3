"""`aime up` as a user runs it: embedded Redis, SQLite, generated token, dashboard, a run, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _procs_with_data_dir(data_dir: Path) -> list[int]:
    """Processes whose environment points at this data directory (the children of `aime up`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"AIME_DATA_DIR={data_dir}".encode() in env:
            found.append(int(entry.name))
    return found


def test_aime_up_serves_runs_and_stops_cleanly(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = (tmp_path / "aime-data").resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIME_")}  # nothing given: all defaults
    env["MUJOCO_GL"] = "egl"
    cmd = [sys.executable, "-m", "worker.cli", "up", "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = ""
        deadline = time.monotonic() + 90
        while "Ctrl-C" not in out and time.monotonic() < deadline:
            out += proc.stdout.readline()
        url = re.search(r"is up: (http://\S+)/", out).group(1)
        token = re.search(r"API token: (\S+)", out).group(1)
        assert url == f"http://127.0.0.1:{port}"
        assert (data_dir / "api_token").read_text().strip() == token  # generated once, kept for next time
        assert (data_dir / "aime.db").exists()

        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx.get(f"{url}/static/vendor/plotly.min.js").status_code == 200
        assert httpx.get(f"{url}/api/session").json()["token"] == token
        body = {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True}
        assert httpx.post(f"{url}/api/runs", json=body).status_code == 401
        run = httpx.post(f"{url}/api/runs", json=body, headers={"Authorization": f"Bearer {token}"}).json()
        for _ in range(300):
            run = httpx.get(f"{url}/api/runs/{run['id']}").json()
            if run["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        assert run["status"] == "succeeded", run["error"]
        assert Path(run["config"]["data_path"]).parent == data_dir / "datasets"
        assert len(_procs_with_data_dir(data_dir)) == 5  # redis-server, api, collect, synthetic and train workers

        # A training run in flight when Ctrl-C comes: it checkpoints and ends `cancelled`, resumable.
        body = {
            "kind": "train",
            "tier": 1,
            "preset": "debug",
            "synthetic": True,
            "overrides": {"num_epochs": 50},
        }
        train = httpx.post(f"{url}/api/runs", json=body, headers={"Authorization": f"Bearer {token}"}).json()
        for _ in range(600):
            train = httpx.get(f"{url}/api/runs/{train['id']}").json()
            if train["status"] == "running" and train["latest"].get("loss"):
                break
            time.sleep(0.2)
        assert train["status"] == "running"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0 and "stopped" in rest
    time.sleep(0.5)
    assert _procs_with_data_dir(data_dir) == []
    import sqlite3

    with sqlite3.connect(data_dir / "aime.db") as db:
        status, error, result = db.execute(
            "SELECT status, error, result FROM run WHERE id = ?", (train["id"],)
        ).fetchone()
    assert status == "cancelled" and "resume" in error
    assert Path(json.loads(result)["last_checkpoint"]).is_file()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/api/health", timeout=2)
