"""The OpenAPI schema is the contract: a bounded schemathesis run finds no server error and no reply that breaks
its declared schema, status code or media type; and a client written from /openapi.json alone launches a run,
waits for it and reads its exact history."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import TOKEN

pytestmark = pytest.mark.redis

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# The two endless Server-Sent Event streams cannot be fuzzed (a reply never ends); everything else is.
ENDLESS = ("all_events_api_events_get", "run_events_api_runs__run_id__events_get")
# schemathesis's own time budget (--max-time); the whole test stays under ~2 minutes of CI's 20
BUDGET_S = 100


def _seed(url: str) -> dict:
    """Something to find: a run with metrics, events, an alert and a recorded artifact (ids 1 for the fuzzer)."""
    h = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=h, timeout=30) as c:
        run = c.post("/api/runs", json={"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True})
        assert run.status_code == 201, run.text
        rid = run.json()["id"]
        points = [{"key": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(20)]
        points.append({"key": "loss", "step": 20, "value": "nan"})
        assert c.post(f"/api/runs/{rid}/metrics", json={"points": points}).status_code == 200
        events = [{"kind": "log", "payload": {"level": "info", "message": "hello"}, "uid": "u1"}]
        assert c.post(f"/api/runs/{rid}/events", json={"events": events}).status_code == 200
        return {"run": rid}


def test_fuzz_every_operation(live, tmp_path):
    """All operations but the two endless streams: 0 server errors, 0 schema, status or media type violations."""
    if not SCHEMATHESIS.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    _seed(live.url)
    report = tmp_path / "schemathesis.json"
    cmd = [
        str(SCHEMATHESIS),
        "run",
        f"{live.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "all",
        # Not checked: whether a schema-valid request may be refused or a schema-invalid one accepted. The launch
        # and sweep bodies carry config overrides and paths that only the config and the path confinement can
        # judge (a 422 naming the field), and a PATCH on /api/runs/worker-lost is read as /api/runs/{run_id}.
        "--exclude-checks",
        "positive_data_acceptance,negative_data_rejection,unsupported_method",
        *[a for op in ENDLESS for a in ("--exclude-operation-id", op)],
        "--max-examples",
        "12",
        "--max-time",
        str(BUDGET_S),
        "--seed",
        "12",
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--max-failures",
        "500",
        "--no-color",
        "--output-truncate",
        "true",
        "--report-json-path",
        str(report),
    ]
    started = time.monotonic()
    # cwd: schemathesis keeps its example database in ./.schemathesis, which belongs in tmp_path, not the checkout
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=BUDGET_S + 90, cwd=tmp_path)
    took = time.monotonic() - started
    assert report.exists(), out.stdout[-5000:] + out.stderr[-3000:]
    summary = json.loads(report.read_text())
    api_log = (tmp_path / "api.log").read_text() if (tmp_path / "api.log").exists() else ""
    print(
        f"schemathesis: {summary['operations']['tested']} operations, {summary['test_cases']['generated']} "
        f"test cases in {took:.0f} s, failures: {[(f['code'], f['count']) for f in summary['failures']]}"
    )
    assert summary["operations"]["tested"] == summary["operations"]["total"] - len(ENDLESS)
    assert summary["operations"]["errored"] == 0, out.stdout[-8000:]
    assert summary["failures"] == [], out.stdout[-12000:]
    assert "Traceback" not in api_log, api_log[-5000:]


def test_client_from_the_schema_alone(live):
    """A client that knows only /openapi.json: find the launch, the run and the exact-history operations by their
    documented shapes, launch a debug synthetic training, wait for it, and read every point it logged."""
    live.start_worker()
    spec = httpx.get(f"{live.url}/openapi.json", timeout=30).json()
    paths = spec["paths"]
    launch = paths["/api/runs"]["post"]
    body_ref = launch["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    body_schema = spec["components"]["schemas"][body_ref]
    assert set(body_schema["properties"]["kind"]["enum"]) == {"collect", "train"}
    assert "debug" in json.dumps(body_schema["properties"]["preset"])
    assert launch["security"] == [{"HTTPBearer": []}]
    run_schema = spec["components"]["schemas"]["RunPublic"]
    final = set(run_schema["properties"]["status"]["enum"]) - {"queued", "running"}
    series = paths["/api/runs/{run_id}/metrics/{key}"]["get"]
    exact = next(p for p in series["parameters"] if p["name"] == "exact")
    assert exact["schema"]["type"] == "boolean"
    limit = next(p for p in series["parameters"] if p["name"] == "limit")["schema"]["maximum"]

    h = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=live.url, headers=h, timeout=30) as c:
        r = c.post("/api/runs", json={"kind": "train", "tier": 1, "preset": "debug", "synthetic": True})
        assert r.status_code == 201, r.text
        run = r.json()
        assert set(run) == set(run_schema["properties"])
        deadline = time.monotonic() + 240
        while run["status"] not in final and time.monotonic() < deadline:
            time.sleep(1)
            run = c.get(f"/api/runs/{run['id']}").json()
        assert run["status"] == "succeeded", (run["status"], run["error"], live.logs())
        keys = c.get(f"/api/runs/{run['id']}/metrics").json()
        loss = next(k for k in keys if k["key"] == "loss")
        got = c.get(f"/api/runs/{run['id']}/metrics/loss", params={"exact": "true", "limit": limit}).json()
        # Exact: every step the trainer logged, in order, with the last value the run shows.
        assert got["total"] == loss["count"] == len(got["steps"]) == len(got["values"])
        assert got["steps"] == sorted(got["steps"]) and got["steps"][-1] == loss["step_max"]
        assert got["values"][-1] == run["latest"]["loss"][1]
        assert all(isinstance(v, float) or re.fullmatch(r"-?inf|nan", v) for v in got["values"])
        history = c.get(f"/api/runs/{run['id']}/history").json()
        assert any(e["kind"] == "status" for e in history)


def _run_id(client) -> int:
    r = client.post(
        "/api/runs",
        json={"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True},
        headers=client.h,
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_bad_input_is_a_422_naming_it(client):
    """What the fuzzer once found as 500s (or let through) is refused with the field and what is allowed."""
    rid = _run_id(client)
    big = 2**63
    for url in (f"/api/runs/{big}", f"/api/runs/{rid}/history?offset={big}", f"/api/runs?tier={big}"):
        r = client.get(url)
        assert r.status_code == 422 and "less than or equal to" in r.json()["detail"]["message"], (
            url,
            r.text,
        )
    r = client.get(f"/api/runs/{rid}/history?limit=-1")
    assert r.status_code == 422 and r.json()["detail"]["field"] == "limit"
    ingest = f"/api/runs/{rid}/metrics"
    for point, field in (
        ({"key": "x", "step": big, "value": 1.0}, "points.0.step"),
        ({"key": "x", "step": 1, "value": True}, "points.0.value"),
        ({"key": "x\x00y", "step": 1, "value": 1.0}, "points.0.key"),
    ):
        r = client.post(ingest, json={"points": [point]}, headers=client.h)
        assert r.status_code == 422 and r.json()["detail"]["field"].startswith(field), r.text
    for time_value in ("NaN", "Infinity", "-Infinity"):  # Python's JSON reader accepts these literals
        body = '{"points": [{"key": "x", "step": 1, "value": 1.0, "time": TIME}]}'.replace("TIME", time_value)
        r = client.post(ingest, content=body, headers={**client.h, "Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"]["field"] == "points.0.time", r.text
        body = '{"events": [{"kind": "log", "payload": {}, "time": TIME}]}'.replace("TIME", time_value)
        r = client.post(
            f"/api/runs/{rid}/events", content=body, headers={**client.h, "Content-Type": "application/json"}
        )
        assert r.status_code == 422 and r.json()["detail"]["field"] == "events.0.time", r.text
    # A NaN inside an event payload is stored as the string the codec uses, and reads back as JSON.
    body = '{"events": [{"kind": "log", "payload": {"message": "m", "x": NaN}}]}'
    r = client.post(
        f"/api/runs/{rid}/events", content=body, headers={**client.h, "Content-Type": "application/json"}
    )
    assert r.status_code == 200, r.text
    assert client.get(f"/api/runs/{rid}/history").json()[-1]["payload"]["x"] == "nan"
    r = client.post(
        f"/api/runs/{rid}/artifacts", json={"kind": "log", "path": "/tmp/a\x00b"}, headers=client.h
    )
    assert r.status_code == 422 and r.json()["detail"]["field"] == "path"
    # A Conflict anywhere is a 409 in the one error shape.
    client.post(f"/api/runs/{rid}/cancel", headers=client.h)
    r = client.post(f"/api/runs/{rid}/cancel", headers=client.h)
    assert r.status_code == 409 and "already ended" in r.json()["detail"]
    # 405 names every method of the path.
    r = client.put(f"/api/runs/{rid}", headers=client.h)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, PATCH", r.headers


def test_steps_up_to_2_63_are_stored_everywhere(client, service_env):
    """Alerts, artifacts and events hold 64-bit steps like metric points (Postgres included: migration 0003)."""
    rid = _run_id(client)
    step = 2**63 - 1
    path = f"{service_env['AIME_DATA_DIR']}/runs/{rid}/metrics.jsonl"
    r = client.post(
        f"/api/runs/{rid}/artifacts", json={"kind": "log", "path": path, "step": step}, headers=client.h
    )
    assert r.status_code == 200 and r.json()["step"] == step, r.text
    events = [
        {"kind": "alert", "payload": {"kind": "divergence", "key": "loss", "step": step, "message": "m"}},
        {"kind": "eval", "payload": {"step": step, "rollout_mse": [0.1]}},
    ]
    assert (
        client.post(f"/api/runs/{rid}/events", json={"events": events}, headers=client.h).status_code == 200
    )
    assert [a["step"] for a in client.get(f"/api/runs/{rid}/alerts").json()] == [step]
    assert client.get(f"/api/runs/{rid}/history?kind=eval").json()[0]["step"] == step


def test_a_foreign_last_event_id_keeps_the_stream(live):
    with httpx.Client(base_url=live.url, timeout=20) as c:
        for last in ("not-a-number", "12abc", "1-2-3"):
            with c.stream("GET", "/api/events", headers={"Last-Event-ID": last}) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                lines = []
                for line in r.iter_lines():
                    lines.append(line)
                    if line.startswith("event: ready"):
                        break
                assert "event: ready" in lines, lines


def test_the_schema_describes_everything():
    """Every operation: a description, a typed reply, each error in the one shape; every parameter and field
    described; ids bounded; the bearer scheme declared."""
    from backend.main import app

    spec = app.openapi()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op.get("description"), where
            ok = {c: r for c, r in op["responses"].items() if c.startswith("2")}
            assert ok and all(r.get("content") for r in ok.values()), where
            for code, reply in op["responses"].items():
                if code.startswith(("4", "5")) and code != "416":
                    schema = reply["content"]["application/json"]["schema"]
                    assert schema["$ref"].endswith("/ErrorPublic"), (where, code)
            for p in op.get("parameters", []):
                assert p.get("description"), (where, p["name"])
                if p["name"].endswith("_id") and p["in"] == "path" and p["name"] != "group_id":
                    assert p["schema"]["maximum"] == 2**63 - 1 and p["schema"]["minimum"] == 0, (where, p)
            json_reply = next(iter(ok.values()))["content"].get("application/json")
            if json_reply and not path.endswith("/download"):  # a recorded JSON file holds anything
                assert json_reply["schema"] not in ({}, {"type": "object"}), where
    for name, model in spec["components"]["schemas"].items():
        for field, prop in model.get("properties", {}).items():
            assert prop.get("description"), (name, field)
    run = spec["components"]["schemas"]["RunPublic"]["properties"]
    assert set(run["status"]["enum"]) == {"queued", "running", "succeeded", "failed", "cancelled", "lost"}
    assert set(run["kind"]["enum"]) == {"collect", "train"}
    assert "checkpoint" in spec["components"]["schemas"]["ArtifactPublic"]["properties"]["kind"]["enum"]
    assert "nan" in spec["components"]["schemas"]["AlertPublic"]["properties"]["kind"]["enum"]
    assert "cartpole" in str(spec["components"]["schemas"]["RunCreate"]["properties"]["domain"])


def test_a_dataset_report_with_odd_numbers_is_stored_sanely(client):
    rid = _run_id(client)
    odd = {"episodes": "many", "frames": 2**70, "bytes": -5, "seed": 1.5, "img_size": True}
    r = client.post(
        f"/api/runs/{rid}/events", json={"events": [{"kind": "dataset", "payload": odd}]}, headers=client.h
    )
    assert r.status_code == 200, r.text
    ds = client.get("/api/datasets").json()[0]
    assert (ds["episodes"], ds["frames"], ds["bytes"], ds["seed"]) == (0, 0, 0, 0)


def test_nan_literals_in_free_form_objects_are_refused(client):
    rid = _run_id(client)
    json_h = {**client.h, "Content-Type": "application/json"}
    r = client.post("/api/runs", content='{"kind": "train", "overrides": {"lr": NaN}}', headers=json_h)
    assert r.status_code == 422 and r.json()["detail"]["field"] == "overrides", r.text
    assert r.json()["detail"]["message"].startswith("NaN and Infinity are not JSON numbers")
    body = '{"kind": "log", "path": "x", "meta": {"a": [1, Infinity]}}'
    r = client.post(f"/api/runs/{rid}/artifacts", content=body, headers=json_h)
    assert r.status_code == 422 and r.json()["detail"]["field"] == "meta", r.text
