"""Metric ingest (#15): the lean route keeps every guarantee: concurrent batches of one run keep each other's latest
values, bad bodies get a 422 naming the field (or 404, 401), a re-send of an older step leaves the latest value, the
live event is written as json.dumps would, one NaN/Inf alert per key, and the body is documented in the schema."""

from __future__ import annotations

import json
import math
import threading

import pytest


def _run(client) -> int:
    body = {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True}
    return client.post("/api/runs", json=body, headers=client.h).json()["id"]


def _latest(rid: int) -> dict:
    from sqlmodel import Session

    from backend.core.db import get_engine
    from backend.models import Run

    with Session(get_engine()) as session:
        return dict(session.get(Run, rid).latest)


def test_concurrent_batches_keep_every_latest_key(client):
    """Batches of one run with different keys written at once: the run's latest-value map holds every key (a read
    in Python and a write back lost the keys of the batch that committed in between)."""
    from sqlmodel import Session

    from backend import metrics
    from backend.core.db import get_engine
    from backend.core.pubsub import Publisher
    from backend.core.settings import get_settings
    from backend.models import PointIn, Run

    rid = _run(client)
    threads_n = 12
    for round_ in range(3):
        errors: list[BaseException] = []
        barrier = threading.Barrier(threads_n)

        def batch(i: int, round_: int = round_, barrier=barrier, errors=errors) -> None:
            points = [PointIn(key=f"r{round_}/k{i}", step=s, value=float(i + s)) for s in range(50)]
            try:
                barrier.wait(10)
                with Session(get_engine()) as session:
                    metrics.ingest(session, Publisher(get_settings()), session.get(Run, rid), points)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=batch, args=(i,)) for i in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        latest = _latest(rid)
        for r in range(round_ + 1):
            for i in range(threads_n):
                assert latest[f"r{r}/k{i}"] == [49, float(i + 49)], (r, i)
    keys = client.get(f"/api/runs/{rid}/metrics").json()
    assert len(keys) == 3 * threads_n and all(k["count"] == 50 for k in keys)


def test_latest_keeps_the_newest_step_and_last_value(client):
    rid = _run(client)
    url = f"/api/runs/{rid}/metrics"

    def send(points):
        r = client.post(url, json={"points": points}, headers=client.h)
        assert r.status_code == 200, r.text
        return r.json()

    send([{"key": "a", "step": 10, "value": 1.0}, {"key": "b", "step": 3, "value": 2}])
    send([{"key": "a", "step": 5, "value": 9.0}])  # an older step (a late re-send): stored, not the latest
    assert _latest(rid) == {"a": [10, 1.0], "b": [3, 2.0]}
    # In one batch a re-sent step's last copy wins, and the same step re-sent later replaces the value.
    send([{"key": "a", "step": 10, "value": 2.0}, {"key": "a", "step": 10, "value": 3.0}])
    assert _latest(rid)["a"] == [10, 3.0]
    exact = client.get(f"{url}/a", params={"exact": True}).json()
    assert exact["steps"] == [5, 10] and exact["values"] == [9.0, 3.0] and exact["total"] == 2
    assert send([]) == {"points": 0, "alerts": 0}  # an empty batch is fine
    assert _latest(rid) == {"a": [10, 3.0], "b": [3, 2.0]}


def test_bad_bodies_are_refused_with_the_field(client):
    rid = _run(client)
    url = f"/api/runs/{rid}/metrics"
    ok = {"points": [{"key": "x", "step": 1, "value": 1.0}]}
    assert client.post(url, json=ok).status_code == 401  # no token
    r = client.post("/api/runs/999999/metrics", json=ok, headers=client.h)
    assert r.status_code == 404 and r.json()["detail"] == "no run 999999"
    # The run id is read from the path by the route itself: the same 422s as FastAPI gives every other route.
    for bad, words in (("abc", "valid integer"), ("-1", "greater than or equal to 0"), ("1.5", "valid integer"),
                       (str(2**63), "less than or equal to 9223372036854775807")):  # fmt: skip
        r = client.post(f"/api/runs/{bad}/metrics", json=ok, headers=client.h)
        assert r.status_code == 422 and r.json()["detail"]["field"] == "run_id", (bad, r.text)
        assert words in r.json()["detail"]["message"], (bad, r.text)
        same = client.get(f"/api/runs/{bad}/metrics")  # a route whose run_id FastAPI resolves
        assert same.status_code == 422 and same.json()["detail"] == r.json()["detail"], (bad, same.text)
    cases = [
        (b"", "application/json", "body", "required"),
        (b"{not json", "application/json", "body", "JSON"),
        (b'{"points": 3}', "application/json", "points", "array"),
        (b'{"pts": []}', "application/json", "points", "required"),
        (json.dumps(ok).encode(), "text/plain", "body", "application/json"),
        (
            b'{"points": [{"key": "", "step": 1, "value": 1}]}',
            "application/json",
            "points.0.key",
            "at least 1",
        ),
        (
            b'{"points": [{"key": "x", "step": -1, "value": 1}]}',
            "application/json",
            "points.0.step",
            "greater",
        ),
        (b'{"points": [{"key": "x", "step": 1}]}', "application/json", "points.0.value", "required"),
        (
            b'{"points": [{"key": "x", "step": 1, "value": [1]}]}',
            "application/json",
            "points.0.value",
            "valid",
        ),
        (
            b'{"points": [{"key": "x", "step": 1, "value": 1, "time": -5}]}',
            "application/json",
            "points.0.time",
            "",
        ),
    ]
    for body, ctype, field, words in cases:
        r = client.post(url, content=body, headers={**client.h, "Content-Type": ctype})
        assert r.status_code == 422, (body, r.text)
        detail = r.json()["detail"]
        assert detail["field"].startswith(field) and words in detail["message"], (body, detail)
    r = client.post(url, json={"points": [{"key": "x", "step": 1, "value": "lots"}]}, headers=client.h)
    assert r.status_code == 422 and "bad metric value" in r.text and '"nan"' in r.json()["detail"]
    assert client.get(f"{url}").json() == []  # nothing of the refused batches was stored


def test_values_alerts_and_the_live_event(client, service_env):
    """An integer beyond the float range is Inf (as the JSON number 1e999 is); one alert per key and batch; the live
    event carries every point once, in (key, step) order, written as json.dumps writes it."""
    import redis

    rid = _run(client)
    points = [
        {"key": "loss", "step": 2, "value": "nan"},
        {"key": "loss", "step": 1, "value": 0.25},
        {"key": "loss", "step": 3, "value": None},
        {"key": "big", "step": 1, "value": 10**400},
        {"key": "big", "step": 2, "value": -(10**400)},
        {"key": "ok", "step": 7, "value": 3},
        {"key": "ok", "step": 8, "value": "1.5e308"},  # finite, but above 1e308: an "inf" alert, as before
        {"key": "k/é", "step": 1, "value": "-Infinity"},
    ]
    r = client.post(f"/api/runs/{rid}/metrics", json={"points": points}, headers=client.h)
    assert r.json() == {"points": 8, "alerts": 4}
    alerts = client.get(f"/api/runs/{rid}/alerts").json()
    assert sorted((a["key"], a["kind"], a["step"]) for a in alerts) == [
        ("big", "inf", 1),
        ("k/é", "inf", 1),
        ("loss", "nan", 2),
        ("ok", "inf", 8),
    ]
    exact = client.get(f"/api/runs/{rid}/metrics/big", params={"exact": True}).json()
    assert exact["values"] == ["inf", "-inf"]
    assert _latest(rid) == {"big": [2, "-inf"], "k/é": [1, "-inf"], "loss": [3, "nan"], "ok": [8, 1.5e308]}

    from backend.core import pubsub

    assert pubsub.flush(5.0)  # a metric batch's live event follows its answer (it never waits for Redis)
    r = redis.Redis.from_url(service_env["AIME_REDIS_URL"])
    entries = r.xrange(f"{service_env['AIME_REDIS_PREFIX']}events:run:{rid}")
    bodies = [e[b"d"].decode() for _, e in entries]
    live = [b for b in bodies if json.loads(b)["type"] == "metrics"]
    assert len(live) == 1
    want = [
        {"key": "big", "step": 1, "value": "inf"},
        {"key": "big", "step": 2, "value": "-inf"},
        {"key": "k/é", "step": 1, "value": "-inf"},
        {"key": "loss", "step": 1, "value": 0.25},
        {"key": "loss", "step": 2, "value": "nan"},
        {"key": "loss", "step": 3, "value": "nan"},
        {"key": "ok", "step": 7, "value": 3.0},
        {"key": "ok", "step": 8, "value": 1.5e308},
    ]
    assert live[0] == json.dumps({"type": "metrics", "run_id": rid, "points": want})
    assert not any(
        isinstance(p["value"], float) and math.isnan(p["value"]) for p in json.loads(live[0])["points"]
    )


@pytest.mark.parametrize("db_env", ["sqlite"], indirect=True)
def test_the_ingest_body_is_documented(client):
    """The route reads its body itself (no model object per point); the schema still documents it in full."""
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/runs/{run_id}/metrics"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert op["requestBody"]["required"] is True and "$defs" not in json.dumps(schema)
    point = schema["properties"]["points"]["items"]
    assert set(point["required"]) == {"key", "step", "value"} and "time" in point["properties"]
    assert point["properties"]["key"]["maxLength"] == 200 and point["properties"]["step"]["minimum"] == 0
    assert op["security"] == [{"HTTPBearer": []}]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/IngestedPublic")
