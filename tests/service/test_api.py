"""The REST API through a real database (SQLite and Postgres) and Redis; no worker runs here."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from fastapi.testclient import TestClient


def _collect_run(client) -> dict:
    r = client.post(
        "/api/runs",
        json={"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True},
        headers=client.h,
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_auth_validation_and_launch(client):
    body = {"kind": "train", "tier": 1, "preset": "debug", "synthetic": True}
    assert client.post("/api/runs", json=body).status_code == 401
    assert client.post("/api/runs", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/api/runs/1/metrics", json={"points": []}).status_code == 401

    bad = client.post(
        "/api/runs", json={"kind": "train", "tier": 1, "domain": "cartpole", "task": "fly"}, headers=client.h
    )
    assert bad.status_code == 422
    assert bad.json()["detail"]["field"] == "task" and "swingup" in bad.json()["detail"]["message"]
    bad = client.post("/api/runs", json={"kind": "train", "tier": 4}, headers=client.h)
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "tier"
    bad = client.post("/api/runs", json={"kind": "train", "overrides": {"lr": "fast"}}, headers=client.h)
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "lr"
    bad = client.post("/api/runs", json={"kind": "train", "overrides": {"nope": 1}}, headers=client.h)
    assert bad.status_code == 422 and "allowed" in bad.json()["detail"]["message"]
    assert client.post("/api/runs", json={"kind": "evaluate"}, headers=client.h).status_code == 422

    resolved = client.post("/api/runs/resolve", json={**body, "seeds": [0, 1]}).json()
    assert [r["config"]["seed"] for r in resolved["runs"]] == [0, 1]
    assert resolved["runs"][0]["config"]["hidden_dim"] == 32  # the debug preset on top of tier 1
    assert client.get("/api/runs").json()["total"] == 0  # resolving creates nothing

    runs = client.post(
        "/api/runs", json={**body, "seeds": [0, 1, 2], "tags": ["sweep"]}, headers=client.h
    ).json()
    assert [r["seed"] for r in runs] == [0, 1, 2]
    collect_id = runs[0]["waits_for_id"]
    assert collect_id is not None and all(
        r["waits_for_id"] == collect_id for r in runs
    )  # one shared collection
    listing = client.get("/api/runs", params={"kind": "collect"}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == collect_id
    assert client.get("/api/runs", params={"tag": "sweep", "kind": "train"}).json()["total"] == 3
    assert client.get("/api/runs", params={"text": "seed2"}).json()["total"] == 1
    queue = client.get("/api/queue").json()
    # A synthetic collection has its own queue (never behind a real collection).
    assert [w["run_id"] for w in queue["queues"]["synthetic"]["waiting"]] == [collect_id]
    assert sorted(w["run_id"] for w in queue["queues"]["train"]["waiting_for_data"]) == [
        r["id"] for r in runs
    ]

    # The collection succeeds -> the waiting training runs are sent to the train queue, with the dataset.
    start = client.post(f"/api/runs/{collect_id}/start", json={"host": "h", "pid": 1}, headers=client.h)
    assert start.status_code == 200 and start.json()["config"]["num_episodes"] == 6
    info = {"path": runs[0]["config"]["data_path"], "episodes": 6, "frames": 144, "bytes": 1000}
    client.post(
        f"/api/runs/{collect_id}/finish", json={"status": "succeeded", "result": info}, headers=client.h
    )
    datasets = client.get("/api/datasets").json()
    assert len(datasets) == 1 and datasets[0]["frames"] == 144 and datasets[0]["run_id"] == collect_id
    for r in runs:
        run = client.get(f"/api/runs/{r['id']}").json()
        assert (
            run["waits_for_id"] is None and run["dataset_id"] == datasets[0]["id"] and run["celery_task_id"]
        )
    queue = client.get("/api/queue").json()
    assert [w["position"] for w in queue["queues"]["train"]["waiting"]] == [1, 2, 3]

    tiers = client.get("/api/tiers").json()
    fields = {f["name"]: f for f in tiers["fields"]["train"]}
    assert fields["lr"]["default"] == 3e-4 and fields["lr"]["help"]
    assert tiers["tiers"]["2"]["train"]["domain"] == "reacher" and "swingup" in tiers["domains"]["cartpole"]


def test_reads_and_session_token_only_for_localhost(client):
    from backend.main import app

    assert client.get("/api/session").json()["token"] == client.token
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/runs/{run_id}/metrics/{key}" in paths and client.get("/docs").status_code == 200
    assert client.get("/runs/5").headers["content-type"].startswith("text/html")  # the page routes
    with TestClient(app, base_url="http://127.0.0.1:8000", client=("10.1.2.3", 4000)) as remote:
        assert remote.get("/api/session").status_code == 403
        assert remote.get("/api/runs").status_code == 401
        assert remote.get("/api/runs", headers=client.h).status_code == 200
        assert remote.get("/api/runs", params={"token": client.token}).status_code == 200  # EventSource way
        assert (
            remote.post("/api/runs", params={"token": client.token}, json={"kind": "train"}).status_code
            == 401
        )


def test_metrics_ingest_downsample_and_alerts(client):
    run = _collect_run(client)
    rid = run["id"]
    points = [{"key": "loss/kl_z", "step": s, "value": 1.0 / s} for s in range(1, 1001)]
    points[499]["value"] = "nan"  # step 500
    points[699]["value"] = "inf"  # step 700
    points[799]["value"] = None  # step 800: null also means NaN
    for _ in range(2):  # the second send is a retry of the same batch: nothing changes
        r = client.post(f"/api/runs/{rid}/metrics", json={"points": points}, headers=client.h)
        assert r.status_code == 200 and r.json()["points"] == 1000
    keys = client.get(f"/api/runs/{rid}/metrics").json()
    assert keys == [{"key": "loss/kl_z", "count": 1000, "step_min": 1, "step_max": 1000, "last": 0.001}]

    ds = client.get(f"/api/runs/{rid}/metrics/loss/kl_z", params={"buckets": 10}).json()
    assert ds["count"] == 1000 and ds["buckets"] == 10 and ds["n"] == [100] * 10
    assert len(ds["wall"]) == 10 and all(w > 1.6e9 for w in ds["wall"])  # wall time (s) of each bucket
    assert ds["max"][0] == 1.0 and math.isclose(ds["min"][0], 1 / 100)
    assert ds["last_step"][4] == 500 and ds["last"][4] == "nan"  # the bucket's last value is the NaN
    assert math.isclose(ds["max"][4], 1 / 401)  # min/max use the finite values only
    assert ds["nonfinite"] == {"steps": [500, 700, 800], "values": ["nan", "inf", "nan"]}
    zoom = client.get(
        f"/api/runs/{rid}/metrics/loss/kl_z", params={"buckets": 5, "step_min": 691, "step_max": 710}
    ).json()
    assert zoom["count"] == 20 and zoom["nonfinite"]["steps"] == [700] and zoom["first_step"][0] == 691

    exact = client.get(
        f"/api/runs/{rid}/metrics/loss/kl_z", params={"exact": True, "offset": 695, "limit": 10}
    ).json()
    assert exact["total"] == 1000 and exact["steps"] == list(range(696, 706))
    assert exact["values"][4] == "inf" and math.isclose(exact["values"][0], 1 / 696)
    compare = client.get("/api/metrics", params={"runs": f"{rid}", "key": "loss/kl_z", "buckets": 4}).json()
    assert compare["runs"][str(rid)]["buckets"] == 4

    alerts = client.get(f"/api/runs/{rid}/alerts").json()
    assert [(a["kind"], a["key"], a["step"]) for a in alerts] == [("nan", "loss/kl_z", 500)]  # one per key
    assert client.get("/api/runs").json()["items"][0]["open_alerts"] == 1
    assert client.get(f"/api/runs/{rid}").json()["open_alerts"] == 1
    assert client.post(f"/api/alerts/{alerts[0]['id']}/ack").status_code == 401
    assert client.post(f"/api/alerts/{alerts[0]['id']}/ack", headers=client.h).json()["acknowledged"] is True
    client.post(
        f"/api/runs/{rid}/metrics",
        json={"points": [{"key": "loss/kl_z", "step": 1001, "value": "-inf"}]},
        headers=client.h,
    )
    alerts = client.get(f"/api/runs/{rid}/alerts").json()
    assert [(a["kind"], a["step"], a["acknowledged"]) for a in alerts] == [
        ("nan", 500, True),
        ("inf", 1001, False),
    ]
    assert client.get(f"/api/runs/{rid}").json()["latest"]["loss/kl_z"] == [1001, "-inf"]
    bad = client.post(
        f"/api/runs/{rid}/metrics",
        json={"points": [{"key": "x", "step": 1, "value": "lots"}]},
        headers=client.h,
    )
    assert bad.status_code == 422 and "nan" in bad.text

    prom = client.get("/metrics").text
    # a synthetic collection waits on its own queue, never behind a real collection
    assert 'aime_runs{status="queued"} 1' in prom and 'aime_queue_length{queue="synthetic"} 1' in prom


def test_artifacts_range_download_and_traversal(client, service_env):
    rid = _collect_run(client)["id"]
    data = bytes(range(256)) * 40  # 10240 bytes
    up = client.post(
        f"/api/runs/{rid}/artifacts/upload",
        params={"kind": "video", "name": "../../../evil.mp4", "step": 7},
        content=data,
        headers=client.h,
    )
    assert up.status_code == 200
    art = up.json()
    root = Path(service_env["AIME_DATA_DIR"]).resolve()
    assert Path(art["path"]).parent == root / "uploads" / str(rid) and art["bytes"] == len(data)
    full = client.get(f"/api/artifacts/{art['id']}/download")
    assert full.status_code == 200 and full.content == data and full.headers["content-type"] == "video/mp4"
    part = client.get(f"/api/artifacts/{art['id']}/download", headers={"Range": "bytes=1000-1099"})
    assert part.status_code == 206 and part.content == data[1000:1100]
    assert part.headers["content-range"] == f"bytes 1000-1099/{len(data)}"

    for path in ("/etc/hostname", str(root / ".." / "outside.pt"), str(root / "aime.db")):
        rec = client.post(
            f"/api/runs/{rid}/artifacts",
            json={"kind": "checkpoint", "path": path, "step": 1},
            headers=client.h,
        )
        assert rec.status_code == 422 and rec.json()["detail"]["field"] == "path"  # tests/service/test_security.py
    kinds = [a["kind"] for a in client.get(f"/api/runs/{rid}/artifacts").json()]
    assert sorted(kinds) == ["video"]


def test_cancel_lost_resume_delete(client, service_env):
    from sqlmodel import Session

    from backend import crud
    from backend.core.db import get_engine
    from backend.core.pubsub import Publisher

    queued = _collect_run(client)
    assert client.post(f"/api/runs/{queued['id']}/cancel", headers=client.h).json()["status"] == "cancelled"
    start = client.post(f"/api/runs/{queued['id']}/start", json={"host": "h"}, headers=client.h)
    assert start.status_code == 409  # a cancelled queued run never starts

    given = Path(service_env["AIME_DATA_DIR"]) / "datasets" / "given.hdf5"
    given.parent.mkdir(parents=True, exist_ok=True)
    given.write_bytes(b"")  # an existing dataset: no collection is queued
    body = {
        "kind": "train",
        "tier": 1,
        "preset": "debug",
        "synthetic": True,
        "overrides": {"data_path": str(given)},
    }
    run = client.post("/api/runs", json=body, headers=client.h).json()
    rid = run["id"]
    assert run["waits_for_id"] is None
    assert (
        client.post(f"/api/runs/{rid}/start", json={"host": "h", "pid": 9}, headers=client.h).status_code
        == 200
    )
    pts = [{"key": "loss", "step": s, "value": float(s)} for s in range(1, 21)]
    client.post(f"/api/runs/{rid}/metrics", json={"points": pts}, headers=client.h)
    run_dir = Path(run["config"]["checkpoint_dir"])
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"ckpt")
    client.post(
        f"/api/runs/{rid}/artifacts",
        json={"kind": "checkpoint", "path": str(run_dir / "last.pt"), "step": 12, "meta": {"tag": "last"}},
        headers=client.h,
    )
    assert client.post(f"/api/runs/{rid}/heartbeat", headers=client.h).json()["stop"] is False

    with Session(get_engine()) as session:  # what the API's reaper does once the heartbeat is 60 s old
        assert crud.mark_lost(session, Publisher(), timeout_s=0.0) == [rid]
    lost = client.get(f"/api/runs/{rid}").json()
    assert lost["status"] == "lost" and "no heartbeat" in lost["error"]
    assert [a["kind"] for a in client.get(f"/api/runs/{rid}/alerts").json()] == ["lost"]
    assert (
        client.post(f"/api/runs/{rid}/finish", json={"status": "succeeded"}, headers=client.h).status_code
        == 409
    )

    child = client.post(f"/api/runs/{rid}/resume", headers=client.h)
    assert child.status_code == 201
    child = child.json()
    assert child["parent_id"] == rid and child["config"]["resume"] == str(run_dir / "last.pt")
    assert child["config"]["checkpoint_dir"] != run["config"]["checkpoint_dir"]
    steps = client.get(f"/api/runs/{child['id']}/metrics/loss", params={"exact": True}).json()["steps"]
    assert steps == list(
        range(1, 13)
    )  # history up to the checkpoint comes along; the trainer logs 13.. itself

    log = client.get(f"/api/runs/{rid}/log", params={"tail": 5}).json()
    assert "started on h" in log["text"]
    gone = client.delete(f"/api/runs/{rid}", headers=client.h).json()
    assert str(run_dir) in gone["removed"] and not run_dir.exists()
    assert client.get(f"/api/runs/{rid}").status_code == 404
    assert client.get(f"/api/runs/{child['id']}").json()["parent_id"] is None


def test_sse_replays_after_last_event_id(client, service_env):
    from backend.core.pubsub import sse_stream
    from backend.core.settings import get_settings

    rid = _collect_run(client)["id"]
    for s in range(1, 4):
        client.post(
            f"/api/runs/{rid}/metrics",
            json={"points": [{"key": "loss", "step": s, "value": s}]},
            headers=client.h,
        )

    async def frames(last_id, n):
        out = []
        gen = sse_stream(get_settings(), rid, last_id)
        async for chunk in gen:
            if chunk.startswith("id:"):
                out.append(chunk)
            if len(out) == n:
                break
        await gen.aclose()
        return out

    import redis

    from backend.core import pubsub

    assert pubsub.flush(5.0)  # a metric batch's live event follows its answer (it never waits for Redis)
    r = redis.Redis.from_url(service_env["AIME_REDIS_URL"])
    ids = [i.decode() for i, _ in r.xrange(f"{service_env['AIME_REDIS_PREFIX']}events:run:{rid}")]
    assert len(ids) == 4  # queued status + three metric batches
    got = asyncio.run(frames(ids[1], 2))  # reconnect after the first batch: the next two come, in order
    assert [g.split("\n")[0] for g in got] == [f"id: {ids[2]}", f"id: {ids[3]}"]
    assert '"step": 2' in got[0] and "event: metrics" in got[0]


def test_sse_says_ready_once_subscribed_after_the_replay(client, service_env):
    """`ready` comes after the replayed events and before live ones: pages refetch on it and miss nothing."""
    from backend.core.pubsub import Publisher, sse_stream
    from backend.core.settings import get_settings

    rid = _collect_run(client)["id"]  # publishes its `queued` status (stream id 1)

    async def first_frames():
        gen = sse_stream(get_settings(), rid, "0-0")
        out = [await gen.__anext__() for _ in range(3)]  # retry hint, the replayed status, ready
        Publisher(get_settings()).publish("log", rid, {"payload": {"message": "live"}})
        out.append(await gen.__anext__())
        await gen.aclose()
        return out

    import threading

    result: list = []
    t = threading.Thread(target=lambda: result.extend(asyncio.run(first_frames())))
    t.start()
    t.join(30)
    retry, replayed, ready, live = result
    assert retry.startswith("retry:")
    assert replayed.startswith("id: ") and "event: status" in replayed
    assert ready.startswith("event: ready") and "id:" not in ready
    assert "event: log" in live and '"live"' in live
