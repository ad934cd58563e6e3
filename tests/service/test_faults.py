"""Fault drills (issue #10) that need no `aime up`: a child of `aime worker --gpus 0,1` killed, the database gone
for seconds under a running run, concurrent ingest on Postgres, the HTTP sink's refusals and spool, and the
broker reconciled with the database. Each asserts the counts: 0 points lost, 0 jobs lost, the right state."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis
from faults import (
    DEBUG_TRAIN,
    alive,
    children,
    jsonl_points,
    run,
    started_count,
    status_is,
    stored_points,
    wait_for,
)

from worker.api import ApiClient
from worker.http_sink import HttpSink, resend_spools

pytestmark = pytest.mark.redis
FAST = {"video_clips": 0, "eval_clips": 4}  # no videos, a short evaluation: these drills are about processes


def _launch(url: str, token: str, body: dict):
    resp = httpx.post(f"{url}/api/runs", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert resp.status_code == 201, resp.text
    return resp.json()


# ---------------------------------------------------------------------------------------------------------------
# Processes


@pytest.mark.slow
def test_sigkill_one_child_of_aime_worker_gpus_stops_only_its_run(live, tmp_path):
    token = live.env["AIME_API_TOKEN"]
    env = {k: v for k, v in live.env.items() if k not in ("AIME_DATABASE_URL", "AIME_DATABASE_SCHEMA")}
    cmd = [sys.executable, "-m", "worker.cli", "worker", "--queues", "synthetic,train", "--gpus", "0,1"]
    cmd += ["--api", live.url, "--token", token, "--broker", env["AIME_REDIS_URL"]]
    log = (tmp_path / "worker-gpus.log").open("ab")
    sup = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    live.workers.append(sup)
    try:
        runs = _launch(
            live.url, token, {**DEBUG_TRAIN, "seeds": [0, 1], "overrides": {**FAST, "num_epochs": 2}}
        )
        a, b = (r["id"] for r in runs)

        def both_running():
            ra, rb = run(live.url, a), run(live.url, b)
            ok = ra["status"] == rb["status"] == "running" and ra["worker_pid"] != rb["worker_pid"]
            return (ra, rb) if ok and ra["latest"].get("loss") else None

        ra, rb = wait_for(both_running, 240, "a run on each GPU process", live.logs)
        kids = children(sup.pid)
        assert set(kids) == {ra["worker_pid"], rb["worker_pid"]}
        os.kill(ra["worker_pid"], signal.SIGKILL)
        lost = wait_for(status_is(live.url, a, "lost", "failed", "succeeded"), 20, "run a lost", live.logs)
        assert lost["status"] == "lost" and "SIGKILL" in lost["error"], lost["error"]
        assert sup.poll() is None and alive(rb["worker_pid"])  # the supervisor and the other GPU carry on
        wait_for(lambda: len(children(sup.pid)) == 2, 30, "the killed GPU process restarted", live.logs)
        done = wait_for(status_is(live.url, b, "succeeded", "failed", "lost"), 300, "run b", live.logs)
        assert done["status"] == "succeeded", done["error"]
        expected = jsonl_points(Path(done["config"]["checkpoint_dir"]) / "metrics.jsonl")
        assert expected and expected == stored_points(live.url, b)
        print(
            f"DRILL gpus child SIGKILL: run {a} {lost['error']}; run {b} {done['status']}, {len(expected)} points"
        )
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(90)
    assert not any(alive(p) for p in kids), "GPU processes outlived their supervisor"


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("db_env", ["postgres"], indirect=True)
def test_database_gone_for_seconds_loses_no_point(db_env, service_env, tmp_path):
    """The database vanishes (its schema renamed) for 15 s under a running run: the API answers 500 meanwhile,
    the sink spools and re-sends, the run ends `succeeded` with every point stored once."""
    from conftest import Live
    from sqlalchemy import create_engine, text

    stack = Live(service_env, tmp_path)
    stack.env["AIME_HEARTBEAT_TIMEOUT"] = "60"
    stack.start_api()
    engine = create_engine("postgresql+psycopg://" + db_env["AIME_DATABASE_URL"].split("://", 1)[1])
    schema, hidden = db_env["AIME_DATABASE_SCHEMA"], db_env["AIME_DATABASE_SCHEMA"] + "_away"
    try:
        stack.start_worker()
        rid = _launch(
            stack.url, stack.env["AIME_API_TOKEN"], {**DEBUG_TRAIN, "overrides": {**FAST, "num_epochs": 1}}
        )["id"]
        wait_for(lambda: run(stack.url, rid)["latest"].get("loss"), 240, "the first points", stack.logs)
        with engine.begin() as conn:
            conn.execute(text(f"ALTER SCHEMA {schema} RENAME TO {hidden}"))
        try:
            assert httpx.get(f"{stack.url}/api/runs/{rid}", timeout=30).status_code == 500
            time.sleep(15)  # the outage itself (the trainer goes on; the sink holds its batches)
        finally:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER SCHEMA {hidden} RENAME TO {schema}"))
        done = wait_for(status_is(stack.url, rid, "succeeded", "failed", "lost"), 300, "the run", stack.logs)
        assert done["status"] == "succeeded", done["error"]
        expected = jsonl_points(Path(done["config"]["checkpoint_dir"]) / "metrics.jsonl")
        stored = stored_points(stack.url, rid)
        assert expected and expected == stored, sorted(expected ^ stored)[:10]
        print(
            f"DRILL database gone 15 s: run {done['status']}, points {len(expected)} logged, {len(stored)} stored"
        )
    finally:
        stack.close()
        engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("db_env", ["postgres"], indirect=True)
def test_a_run_whose_points_cannot_be_delivered_does_not_end_succeeded(db_env, service_env, tmp_path):
    """The metric table is gone while a run ends: the worker waits AIME_SINK_CLOSE_TIMEOUT, then ends the run
    `failed`, saying how many points are spooled and where; once the table is back they arrive, all of them."""
    from conftest import Live
    from sqlalchemy import create_engine, text

    stack = Live(service_env, tmp_path)
    stack.env |= {"AIME_HEARTBEAT_TIMEOUT": "60", "AIME_SINK_CLOSE_TIMEOUT": "3"}
    stack.start_api()
    engine = create_engine("postgresql+psycopg://" + db_env["AIME_DATABASE_URL"].split("://", 1)[1])
    table = f"{db_env['AIME_DATABASE_SCHEMA']}.metricpoint"
    try:
        stack.start_worker()
        body = {**DEBUG_TRAIN, "overrides": {**FAST, "num_epochs": 1}}
        rid = _launch(stack.url, stack.env["AIME_API_TOKEN"], body)["id"]
        wait_for(lambda: run(stack.url, rid)["latest"].get("loss"), 240, "the first points", stack.logs)
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {table} RENAME TO metricpoint_away"))
        try:
            done = wait_for(
                status_is(stack.url, rid, "succeeded", "failed", "lost"), 240, "the run", stack.logs
            )
        finally:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        f"ALTER TABLE {db_env['AIME_DATABASE_SCHEMA']}.metricpoint_away RENAME TO metricpoint"
                    )
                )
        spool = Path(service_env["AIME_DATA_DIR"]).resolve() / "spool" / f"run-{rid}.jsonl"
        assert done["status"] == "failed", done
        n = done["result"]["spooled_points"]
        assert n > 0 and done["result"]["spool"] == str(spool)
        assert f"{n} metric points were not delivered" in done["error"] and str(spool) in done["error"]
        expected = jsonl_points(Path(done["config"]["checkpoint_dir"]) / "metrics.jsonl")
        wait_for(lambda: not spool.exists(), 120, "the spool re-sent", stack.logs)
        stored = stored_points(stack.url, rid)
        assert expected and expected == stored, sorted(expected ^ stored)[:10]
        print(
            f"DRILL points undeliverable at the end: {done['status']}, {n} spooled, all {len(stored)} arrived later"
        )
    finally:
        stack.close()
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("db_env", ["postgres"], indirect=True)
def test_concurrent_batches_to_one_run_in_different_key_orders_do_not_deadlock(client):
    from sqlmodel import Session

    from backend import metrics
    from backend.core.db import get_engine
    from backend.core.pubsub import Publisher
    from backend.core.settings import get_settings
    from backend.models import PointIn, Run

    rid = client.post(
        "/api/runs",
        json={"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True},
        headers=client.h,
    ).json()["id"]
    keys = [f"k{i}" for i in range(8)]
    errors, barrier = [], threading.Barrier(20)

    def batch(seed: int) -> None:
        rng = random.Random(seed)
        order = keys[:]
        rng.shuffle(order)
        points = [PointIn(key=k, step=s, value=float(seed)) for s in range(1, 61) for k in order]
        rng.shuffle(points)
        try:
            barrier.wait(10)
            with Session(get_engine()) as session:
                metrics.ingest(session, Publisher(get_settings()), session.get(Run, rid), points)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=batch, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    counts = {k["key"]: k["count"] for k in client.get(f"/api/runs/{rid}/metrics").json()}
    assert counts == {k: 60 for k in keys}
    print(f"DRILL concurrent ingest: 20 of 20 batches stored, {sum(counts.values())} points, 0 errors")


# ---------------------------------------------------------------------------------------------------------------
# The HTTP sink


def test_sink_drops_only_the_refused_points_and_says_so(live, tmp_path):
    token = live.env["AIME_API_TOKEN"]
    rid = _launch(live.url, token, {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True})["id"]
    sink = HttpSink(ApiClient(live.url, token), rid, tmp_path / "spool", flush_s=0.05)
    with sink._lock:  # a point the API can never take (422) among good ones in one batch
        sink._points += [
            {"key": "loss", "step": s, "value": 1.0 / s, "time": time.time()} for s in range(1, 40)
        ]
        sink._points.append({"key": "loss", "step": 40, "value": "not a number", "time": time.time()})
    assert sink.close(timeout=30) == 0
    assert sink.dropped_points == 1
    assert stored_points(live.url, rid) == {("loss", s) for s in range(1, 40)}
    alerts = httpx.get(f"{live.url}/api/runs/{rid}/alerts").json()
    assert [(a["kind"], "refused 1 metric points" in a["message"]) for a in alerts] == [("delivery", True)]


def test_sink_close_is_bounded_and_the_spool_is_resent_later(live, tmp_path):
    token = live.env["AIME_API_TOKEN"]
    rid = _launch(live.url, token, {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True})["id"]
    api = ApiClient(live.url, token, timeout=2)
    sink = HttpSink(api, rid, tmp_path / "spool", flush_s=0.05)
    live.stop_api()
    for s in range(1, 101):
        sink.metrics(s, {"loss": 1.0 / s, "grad_norm": math.inf if s == 50 else float(s)})
    t0 = time.monotonic()
    unsent = sink.close(timeout=1.5)
    assert time.monotonic() - t0 < 10 and unsent == 200  # bounded; nothing claimed as sent
    assert sink.spool.is_file() and sink.backlog.points() == 200
    live.start_api()
    assert resend_spools(api, tmp_path / "spool") == {}  # what the next worker start does
    assert not sink.spool.exists()
    assert stored_points(live.url, rid) == {(k, s) for s in range(1, 101) for k in ("loss", "grad_norm")}
    log = httpx.get(f"{live.url}/api/runs/{rid}/log").json()["text"]
    assert "200 spooled metric points delivered late" in log


# ---------------------------------------------------------------------------------------------------------------
# The queue: the database is the truth, the broker is reconciled with it


def test_reconcile_resends_queued_runs_the_broker_lost_exactly_once(client, monkeypatch):
    from sqlmodel import Session

    from backend import reconcile
    from backend.core.db import get_engine
    from backend.core.settings import get_settings

    settings = get_settings()
    body = {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True, "seeds": [0, 1, 2]}
    ids = [r["id"] for r in client.post("/api/runs", json=body, headers=client.h).json()]
    assert reconcile.broker_run_ids(settings) == set(ids)
    assert client.post(f"/api/runs/{ids[0]}/retry", headers=client.h).status_code == 409  # still queued

    r = redis.Redis.from_url(settings.redis_url)
    for key in r.scan_iter(f"{settings.redis_prefix}*"):
        if r.type(key) == b"list":
            r.delete(key)  # the broker lost its messages (a Redis without its append-only file)
    assert reconcile.broker_run_ids(settings) == set()
    monkeypatch.setattr(reconcile, "GRACE_S", 0.0)
    rec = reconcile.Reconciler(settings)
    assert sorted(rec.tick(lambda: Session(get_engine()))) == ids  # first contact: reconciled
    assert reconcile.broker_run_ids(settings) == set(ids)
    assert rec.tick(lambda: Session(get_engine())) == []  # nothing twice
    rec.server_id = "an earlier Redis"  # the broker restarted: reconcile again, still nothing to send
    assert rec.tick(lambda: Session(get_engine())) == []
    assert len(r.lrange(f"{settings.redis_prefix}synthetic", 0, -1)) == 3
    log = client.get(f"/api/runs/{ids[0]}/log").json()["text"]
    assert "queued again" in log


def test_a_duplicate_message_runs_once_the_worker_claims_through_the_api(live):
    """Reconciliation may send a run twice (a message in a worker's hands is in no Redis key for an instant): the
    worker claims the run with `POST /start`, which succeeds once; every other copy is skipped."""
    from backend.core import celery_client

    worker = live.start_worker()
    body = {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True}
    rid = _launch(live.url, live.env["AIME_API_TOKEN"], body)["id"]
    for _ in range(2):
        celery_client.send_run("collect", rid, "synthetic")
    done = wait_for(status_is(live.url, rid, "succeeded", "failed"), 120, "the collection", live.logs)
    assert done["status"] == "succeeded", done["error"]
    log = Path(live.tmp / "worker-0.log")
    wait_for(
        lambda: log.read_text().count(f"run {rid}: not started") == 2, 60, "both copies skipped", live.logs
    )
    assert started_count(live.url, rid) == 1 and worker.poll() is None


def test_queue_page_says_broker_unreachable_instead_of_500(client, monkeypatch):
    from backend.api.routes import queue

    body = {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True}
    rid = client.post("/api/runs", json=body, headers=client.h).json()["id"]

    def down(_settings):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(queue, "broker_jobs", down)
    resp = client.get("/api/queue")
    assert resp.status_code == 200
    body = resp.json()
    assert body["broker"]["reachable"] is False and "broker unreachable" in body["broker"]["error"]
    assert [w["run_id"] for q in body["queues"].values() for w in q["waiting"]] == [rid]
