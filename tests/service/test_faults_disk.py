"""Disk-full and unwritable-path drills (issue #10) on small tmpfs mounts (root and `mount -t tmpfs` needed;
skipped with the reason elsewhere). Each asserts the final state and its reason (the path and the cause), that
no `.tmp` is left and the previous checkpoint is kept, and that every point the trainer logged reached the API."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from faults import DEBUG_TRAIN, jsonl_points, run, status_is, stored_points, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]
FAST = {"video_clips": 0, "eval_clips": 4}  # no videos, a short evaluation: these drills are about processes


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system of `disk` until `leave` bytes are free (or nothing is)."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        chunk = b"\0" * 2**20
        while True:
            free = shutil.disk_usage(disk).free
            if free <= leave:
                break
            try:
                f.write(chunk[: max(1, min(len(chunk), free - leave))])
                f.flush()
            except OSError:
                break
    return filler


def _stack(live_cls, env: dict, tmp_path: Path, data_dir: Path):
    """The API and a worker with the database, data directory and spool on `data_dir`."""
    from backend.core.db import migrate
    from backend.core.settings import Settings

    env = {**env, "AIME_DATA_DIR": str(data_dir), "AIME_DATABASE_URL": f"sqlite:///{data_dir / 'aime.db'}"}
    migrate(Settings(data_dir=data_dir, database_url=env["AIME_DATABASE_URL"]))
    stack = live_cls(env, tmp_path)
    stack.env["AIME_HEARTBEAT_TIMEOUT"] = "5"  # a run wrongly judged dead would show at once
    return stack


def _launch(stack, body: dict) -> dict:
    h = {"Authorization": f"Bearer {stack.env['AIME_API_TOKEN']}"}
    resp = httpx.post(f"{stack.url}/api/runs", json=body, headers=h, timeout=60)
    assert resp.status_code == 201, resp.text
    return resp.json()


def _with_checkpoint(stack, rid: int):
    def check():
        r = run(stack.url, rid)
        d = r["config"].get("checkpoint_dir")
        return r if r["status"] == "running" and d and (Path(d) / "last.pt").is_file() else None

    return check


def test_data_directory_on_a_full_disk(sqlite_service_env, tmp_path):
    from conftest import Live

    from aime_core.checkpoint import load

    with tmpfs(tmp_path / "disk", "128m") as disk:
        stack = _stack(Live, sqlite_service_env, tmp_path, disk / "data")
        try:
            stack.start_api()
            worker = stack.start_worker()
            rid = _launch(stack, {**DEBUG_TRAIN, "overrides": {**FAST, "num_epochs": 20}})["id"]
            r = wait_for(_with_checkpoint(stack, rid), 240, "a running run with a checkpoint", stack.logs)
            run_dir = Path(r["config"]["checkpoint_dir"])
            filler = fill(disk)
            assert shutil.disk_usage(disk).free < 2**16

            # Reads go on; writes answer 507 naming the place; the run fails on its next write.
            assert httpx.get(f"{stack.url}/api/runs/{rid}").status_code == 200
            assert httpx.get(f"{stack.url}/api/queue").status_code == 200
            h = {"Authorization": f"Bearer {stack.env['AIME_API_TOKEN']}"}
            resp = httpx.post(f"{stack.url}/api/runs", json=DEBUG_TRAIN, headers=h, timeout=60)
            assert resp.status_code == 507 and "no space left on" in resp.json()["detail"], resp.text
            wait_for(lambda: f"run {rid} failed" in stack.logs(), 240, "the trainer to fail", stack.logs)
            assert run(stack.url, rid)["status"] == "running"  # its final state waits for its points
            filler.unlink()  # space again: the sink delivers, then the final state

            done = wait_for(
                status_is(stack.url, rid, "failed", "lost", "succeeded"), 120, "the run", stack.logs
            )
            assert done["status"] == "failed", done
            assert "no space left on" in done["error"] and str(disk) in done["error"], done["error"]
            assert not list(run_dir.glob("*.tmp"))
            assert load(run_dir / "last.pt")["step"] >= 1  # the previous checkpoint is intact
            expected = jsonl_points(run_dir / "metrics.jsonl")
            stored = stored_points(stack.url, rid)
            assert expected and expected <= stored, sorted(expected - stored)[:10]
            assert worker.poll() is None  # the worker lives on for the next run
            print(
                f"DRILL data disk full: {done['status']}: {done['error']}; points {len(expected)} logged, all stored"
            )
        finally:
            stack.close()


def test_run_directory_full_or_read_only_with_the_service_disk_fine(sqlite_service_env, tmp_path):
    from conftest import Live

    from aime_core.checkpoint import load

    data_dir = Path(sqlite_service_env["AIME_DATA_DIR"])
    stack = Live(sqlite_service_env, tmp_path)
    with tmpfs(data_dir / "runs" / "small", "64m") as small, tmpfs(data_dir / "runs" / "ro", "1m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        try:
            stack.start_api()
            stack.start_worker()
            # Read-only: refused at launch, naming the directory (nothing is queued that cannot write).
            h = {"Authorization": f"Bearer {stack.env['AIME_API_TOKEN']}"}
            body = {**DEBUG_TRAIN, "overrides": {**FAST, "checkpoint_dir": str(ro / "run")}}
            resp = httpx.post(f"{stack.url}/api/runs", json=body, headers=h, timeout=60)
            assert resp.status_code == 422 and str(ro) in resp.text and "writable" in resp.text, resp.text

            # Full: after the first checkpoint the disk fills; the next checkpoint fails, the previous stays.
            run_dir = small / "run"
            body = {**DEBUG_TRAIN, "overrides": {**FAST, "num_epochs": 20, "checkpoint_dir": str(run_dir)}}
            rid = _launch(stack, body)["id"]
            wait_for(_with_checkpoint(stack, rid), 240, "a running run with a checkpoint", stack.logs)
            fill(small, leave=256 * 1024)  # room for metrics lines, not for a checkpoint
            done = wait_for(
                status_is(stack.url, rid, "failed", "succeeded", "lost"), 240, "full run", stack.logs
            )
            assert done["status"] == "failed", done
            assert f"no space left on {run_dir}" in done["error"], done["error"]
            assert not list(run_dir.glob("*.tmp"))
            assert load(run_dir / "last.pt")["step"] >= 1
            expected = jsonl_points(run_dir / "metrics.jsonl")
            assert expected and expected <= stored_points(stack.url, rid)
            print(
                f"DRILL run dir full: {done['status']}: {done['error']}; points {len(expected)}, all stored"
            )
        finally:
            stack.close()
