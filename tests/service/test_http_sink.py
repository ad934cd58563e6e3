"""The worker's HTTP sink against a real API that goes away: batches spool to disk and are re-sent on recovery."""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest

from worker.api import ApiClient
from worker.http_sink import HttpSink

pytestmark = pytest.mark.redis


def test_spools_while_the_api_is_down_and_resends_idempotently(live, tmp_path):
    auth = {"Authorization": f"Bearer {live.env['AIME_API_TOKEN']}"}
    body = {"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True}
    rid = httpx.post(f"{live.url}/api/runs", json=body, headers=auth).json()["id"]
    sink = HttpSink(ApiClient(live.url, live.env["AIME_API_TOKEN"]), rid, tmp_path / "spool", flush_s=0.05)

    sink.metrics(1, {"loss": 2.0, "grad_norm": math.nan})
    sink.event("log", {"level": "info", "message": "before"})
    deadline = time.monotonic() + 10
    while sink.sent_requests < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.sent_requests == 2 and not sink.spool.exists()

    live.stop_api()
    for step in range(2, 51):
        sink.metrics(step, {"loss": 2.0 / step, "grad_norm": float(step)})
    sink.event("eval", {"step": 50, "epoch": 1, "rollout_mse": [0.1, math.inf]})
    deadline = time.monotonic() + 10
    while sink.spooled_requests < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    spooled = sink.spool.read_text().splitlines()
    assert sink.spooled_requests >= 2 and len(spooled) >= 2  # on disk, in order, while the API is away
    assert json.loads(spooled[0])["path"] == f"/api/runs/{rid}/metrics"

    live.start_api()
    sink.close()  # drains the spool, oldest first
    assert not sink.spool.exists()
    loss = httpx.get(f"{live.url}/api/runs/{rid}/metrics/loss", params={"exact": True}).json()
    assert loss["steps"] == list(range(1, 51)) and loss["values"][49] == pytest.approx(0.04)
    grad = httpx.get(f"{live.url}/api/runs/{rid}/metrics/grad_norm", params={"exact": True}).json()
    assert grad["values"][0] == "nan" and grad["values"][1:] == [float(s) for s in range(2, 51)]
    evals = httpx.get(f"{live.url}/api/runs/{rid}/history", params={"kind": "eval"}).json()
    assert [e["payload"]["rollout_mse"] for e in evals] == [[0.1, "inf"]]

    # The same spooled requests delivered twice (an answer lost on the way back): nothing changes.
    for line in spooled:
        req = json.loads(line)
        assert httpx.post(f"{live.url}{req['path']}", json=req["json"], headers=auth).status_code == 200
    keys = {k["key"]: k["count"] for k in httpx.get(f"{live.url}/api/runs/{rid}/metrics").json()}
    assert keys == {"loss": 50, "grad_norm": 50}
    assert len(httpx.get(f"{live.url}/api/runs/{rid}/history", params={"kind": "eval"}).json()) == 1
    alerts = httpx.get(f"{live.url}/api/runs/{rid}/alerts").json()
    assert [(a["kind"], a["key"], a["step"]) for a in alerts] == [("nan", "grad_norm", 1)]
