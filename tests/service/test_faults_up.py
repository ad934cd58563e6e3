"""Fault drills against `aime up` (issue #10): real children SIGKILLed; each asserts the final state and reason,
0 points lost (the API holds every point the trainer wrote to its metrics.jsonl) and 0 jobs lost."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from faults import (
    DEBUG_TRAIN,
    Up,
    alive,
    free_port,
    healthy,
    jsonl_points,
    procs_with_env,
    run,
    started_count,
    status_is,
    stored_points,
    wait_for,
)

pytestmark = pytest.mark.slow
FAST = {"video_clips": 0, "eval_clips": 4}  # no videos, a short evaluation: these drills are about processes


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    stack = Up(tmp_path_factory.mktemp("up") / "aime-data", workers=1).start()
    yield stack
    stack.stop()
    assert procs_with_env("AIME_DATA_DIR", str(stack.data_dir)) == [], "children outlived aime up"


def _running_with_checkpoint(up: Up, rid: int):
    def check():
        r = run(up.url, rid)
        if r["status"] != "running" or not r["latest"].get("loss"):
            return None
        arts = httpx.get(f"{up.url}/api/runs/{rid}/artifacts", params={"kind": "checkpoint"}).json()
        return r if arts else None

    return check


def test_sigkill_train_worker_marks_its_run_lost_now_and_the_rest_keeps_running(up):
    rid = up.launch({**DEBUG_TRAIN, "overrides": {**FAST, "num_epochs": 2}})["id"]
    wait_for(_running_with_checkpoint(up, rid), 240, "a running run with a checkpoint", up.logs)
    before = {n: up.child(n) for n in ("redis-server", "worker.supervisor api", "--queues collect")}
    worker = run(up.url, rid)["worker_pid"]
    assert worker == up.child("--queues train")
    os.kill(worker, signal.SIGKILL)
    t0 = time.monotonic()
    lost = wait_for(status_is(up.url, rid, "lost", "succeeded", "failed"), 20, "the run to be lost", up.logs)
    lost_after = time.monotonic() - t0
    assert lost["status"] == "lost" and "SIGKILL" in lost["error"], lost["error"]
    assert lost_after < 10  # at once, not after the 60 s heartbeat timeout
    assert {n: up.child(n) for n in before} == before and all(map(alive, before.values()))  # untouched
    wait_for(
        lambda: up.child("--queues train") not in (None, worker), 30, "the train worker restarted", up.logs
    )
    assert "train worker 0 (pid" in up.output() and "restarting it in" in up.output()

    resp = httpx.post(f"{up.url}/api/runs/{rid}/resume", headers=up.h)
    assert resp.status_code == 201, resp.text
    child = resp.json()
    print(f"DRILL train worker SIGKILL: run {rid} lost after {lost_after:.1f} s: {lost['error']}")

    # The API SIGKILLed while the resumed run trains: restarted alone; the run goes on and loses nothing.
    wait_for(lambda: run(up.url, child["id"])["latest"].get("loss"), 240, "the resumed run's points", up.logs)
    api, redis_pid = up.child("worker.supervisor api"), up.child("redis-server")
    os.kill(api, signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: up.child("worker.supervisor api") not in (None, api), 30, "a new API process", up.logs)
    wait_for(lambda: healthy(up.url), 60, "the API answering again", up.logs)
    api_back = time.monotonic() - t0
    assert up.child("redis-server") == redis_pid
    done = wait_for(status_is(up.url, child["id"], "succeeded", "failed", "lost"), 300, "the resume", up.logs)
    assert done["status"] == "succeeded", done["error"]
    # 0 points lost: the resumed run holds its parent's history up to the checkpoint and its own after it.
    parent_dir = Path(lost["config"]["checkpoint_dir"])
    step = done["result"]["steps"]
    expected = jsonl_points(Path(done["config"]["checkpoint_dir"]) / "metrics.jsonl")
    ckpt_step = min(s for _, s in expected) - 1
    expected |= jsonl_points(parent_dir / "metrics.jsonl", until=ckpt_step)
    stored = stored_points(up.url, child["id"])
    assert expected and expected <= stored, sorted(expected - stored)[:10]
    assert {s for k, s in stored if k == "loss"} == set(range(1, step + 1))
    assert started_count(up.url, rid) == 1 and started_count(up.url, child["id"]) == 1
    print(
        f"DRILL API SIGKILL: API back in {api_back:.1f} s; resumed run {child['id']} {done['status']}; "
        f"points expected {len(expected)}, stored {len(stored & expected)}, lost {len(expected - stored)}"
    )


def test_sigkill_embedded_redis_loses_no_queued_run(up):
    assert (up.data_dir / "redis.sock").exists() and (up.data_dir / "appendonly.aof").exists()
    runs = up.launch({**DEBUG_TRAIN, "seeds": [0, 1, 2, 3], "overrides": {**FAST, "num_epochs": 1}})
    ids = [r["id"] for r in runs]
    wait_for(lambda: any(run(up.url, i)["status"] == "running" for i in ids), 120, "one run running", up.logs)
    queued = [i for i in ids if run(up.url, i)["status"] == "queued"]
    assert len(queued) >= 2
    redis_pid = up.child("redis-server")
    os.kill(redis_pid, signal.SIGKILL)
    answers = set()
    deadline = time.monotonic() + 3
    while (
        time.monotonic() < deadline
    ):  # the queue page answers throughout: the broker's state, or "unreachable"
        resp = httpx.get(f"{up.url}/api/queue", timeout=30)
        answers.add(resp.status_code)
        time.sleep(0.1)
    assert answers == {200}
    wait_for(lambda: up.child("redis-server") not in (None, redis_pid), 30, "Redis restarted", up.logs)
    for i in ids:
        done = wait_for(
            status_is(up.url, i, "succeeded", "failed", "lost", "cancelled"), 400, f"run {i}", up.logs
        )
        assert done["status"] == "succeeded", done["error"]
        assert started_count(up.url, i) == 1  # each run ran exactly once
    queue = httpx.get(f"{up.url}/api/queue").json()
    assert queue["broker"]["reachable"] and queue["queues"]["train"]["waiting"] == []
    print(
        f"DRILL Redis SIGKILL: 1 running + {len(queued)} queued -> {len(ids)} of {len(ids)} succeeded, /api/queue {answers}"
    )


def test_sigkill_aime_up_leaves_no_orphans_and_a_second_up_refuses(up, tmp_path):
    # long enough that it is still running when aime up is killed, also on an idle machine
    rid = up.launch({**DEBUG_TRAIN, "overrides": {**FAST, "num_epochs": 400}})["id"]
    wait_for(_running_with_checkpoint(up, rid), 240, "a running run with a checkpoint", up.logs)
    cmd = up.cmd()
    cmd[cmd.index("--port") + 1] = str(free_port())
    second = subprocess.run(
        cmd,
        env=up.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1 and "is in use by another `aime up`" in second.stderr, second.stderr
    ours = procs_with_env("AIME_DATA_DIR", str(up.data_dir))
    assert len(ours) >= 5  # redis, api, collect, synthetic and train workers
    up.proc.kill()  # SIGKILL: no chance to clean up
    up.proc.wait()
    wait_for(
        lambda: procs_with_env("AIME_DATA_DIR", str(up.data_dir)) == [], 10, "the children to die", up.logs
    )

    up.start()  # same data directory, same port: nothing left holds them
    r = wait_for(status_is(up.url, rid, "lost"), 30, "the orphaned run marked lost", up.logs)
    assert "gone when aime up started" in r["error"]
    print(f"DRILL aime up SIGKILL: children gone, second up refused; run {rid}: {r['error']}")
    assert httpx.post(f"{up.url}/api/runs/{rid}/resume", headers=up.h).status_code == 201
