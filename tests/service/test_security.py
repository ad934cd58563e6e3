"""Issue #11 probes, written as they were run from outside: a token that stays home (Host, Origin, proxy-header
spoofing), no files or code from API input (confined paths, a pickle that never runs), bounded requests (body
limits with the API process's memory measured under 200 MB bodies, string limits), headers, and errors."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

TOKEN = "test-token-123"  # conftest.TOKEN, the service fixtures' token


AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]


def _app():
    from backend.main import app

    return app


def as_client(host: str = "127.0.0.1:8000", peer: str = "127.0.0.1") -> TestClient:
    """A client that connects from `peer` and names `host` in its Host header (no lifespan: no reaper)."""
    return TestClient(_app(), base_url=f"http://{host}", client=(peer, 50000))


def set_env(monkeypatch, **values) -> None:
    from backend.core.settings import get_settings

    for k, v in values.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()


@pytest.fixture
def api(sqlite_service_env):
    with TestClient(_app(), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000)) as c:
        yield c


@pytest.fixture
def data_dir(sqlite_service_env) -> Path:
    root = Path(sqlite_service_env["AIME_DATA_DIR"]).resolve()
    for sub in ("datasets", "runs", "uploads"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def _train(api, **overrides):
    body = {"kind": "train", "tier": 1, "preset": "debug", "synthetic": True, "overrides": overrides}
    return api.post("/api/runs", json=body, headers=AUTH)


def _collect_run(api) -> dict:
    r = api.post(
        "/api/runs", json={"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    return r.json()


# ---------------------------------------------------------------------------------------------------------------
# 3. The token stays home: Host allow-list, /api/session, Origin, proxy headers


def test_foreign_host_is_refused_on_every_route(api, monkeypatch):
    evil = as_client("evil.example:8000")
    for method, path in [
        ("GET", "/api/session"),
        ("GET", "/api/runs"),
        ("GET", "/"),
        ("GET", "/static/app.js"),
        ("GET", "/docs"),
        ("PATCH", "/api/runs/1"),
        ("POST", "/api/runs"),
    ]:
        r = evil.request(method, path, headers={**AUTH, "Origin": "http://evil.example:8000"}, json={})
        assert r.status_code == 400, (method, path, r.status_code)
        detail = r.json()["detail"]
        assert "evil.example:8000" in detail and "localhost, 127.0.0.1, ::1" in detail
        assert "AIME_ALLOWED_HOSTS" in detail
        assert r.headers["x-frame-options"] == "DENY"
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST", "127.0.0.5:9"):
        assert as_client(host).get("/api/health").status_code == 200, host
    # The operator adds the server's real names; the token is still not handed to them.
    set_env(monkeypatch, AIME_ALLOWED_HOSTS="gpu-box.lab, *.corp.example")
    for host in ("gpu-box.lab:8000", "api.corp.example"):
        c = as_client(host)
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/session").status_code == 403
    assert as_client("evil.example").get("/api/health").status_code == 400
    assert as_client("corp.example.evil.example").get("/api/health").status_code == 400


def test_session_only_for_a_loopback_client_with_loopback_host_and_same_origin(api):
    local = as_client("127.0.0.1:8000")
    assert local.get("/api/session").json()["token"] == TOKEN
    assert as_client("localhost:8000").get("/api/session").json()["token"] == TOKEN
    assert as_client(peer="::ffff:127.0.0.1").get("/api/session").status_code == 200  # dual-stack loopback
    assert as_client(peer="::ffff:10.0.0.7").get("/api/session").status_code == 403
    ok = local.get(
        "/api/session", headers={"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}
    )
    assert ok.status_code == 200
    refused = {
        "foreign Origin": {"Origin": "http://evil.example:8000"},
        "other port": {"Origin": "http://127.0.0.1:9999"},
        "null Origin": {"Origin": "null"},
        "cross-site fetch": {"Sec-Fetch-Site": "cross-site"},
        "X-Real-IP": {"X-Real-IP": "203.0.113.9"},
        "Forwarded": {"Forwarded": "for=203.0.113.9"},
        "X-Forwarded-For": {"X-Forwarded-For": "203.0.113.9"},
    }
    for why, headers in refused.items():
        r = local.get("/api/session", headers=headers)
        assert r.status_code == 403, why
        assert "token" not in r.json() and TOKEN not in r.text, why
    # A remote client cannot pass as local with any proxy header (they only ever make a request less local).
    remote = as_client("127.0.0.1:8000", peer="203.0.113.9")
    for headers in (
        {"X-Real-IP": "127.0.0.1"},
        {"Forwarded": "for=127.0.0.1"},
        {"X-Forwarded-For": "127.0.0.1"},
    ):
        assert remote.get("/api/session", headers=headers).status_code == 403
        assert remote.get("/api/runs", headers=headers).status_code == 401  # reads are not open to it
    # A local client behind a proxy header is not local either: reads need the token.
    assert local.get("/api/runs", headers={"X-Real-IP": "203.0.113.9"}).status_code == 401
    assert local.get("/api/runs", headers={"X-Real-IP": "203.0.113.9", **AUTH}).status_code == 200


def test_mutating_requests_with_a_foreign_origin_are_refused_even_with_the_token(api):
    run = _collect_run(api)
    path = f"/api/runs/{run['id']}"
    for origin in ("http://evil.example:8000", "null", "http://127.0.0.1:9999", "http://localhost:8000"):
        r = api.patch(path, json={"notes": "pwned"}, headers={**AUTH, "Origin": origin})
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"], origin
    assert api.get(path).json()["notes"] == ""
    same = api.patch(path, json={"notes": "mine"}, headers={**AUTH, "Origin": "http://127.0.0.1:8000"})
    assert same.status_code == 200 and same.json()["notes"] == "mine"
    assert api.patch(path, json={"notes": "no origin (curl, workers)"}, headers=AUTH).status_code == 200


def test_dns_rebinding_cannot_read_the_token_or_change_a_run(api):
    """The probe: a page on evil.example rebound to 127.0.0.1 asks for the token, then patches a run."""
    run = _collect_run(api)
    rebound = as_client("evil.example:8000")  # the browser connects to 127.0.0.1 but names its own host
    same_origin = {"Origin": "http://evil.example:8000"}
    r = rebound.get("/api/session", headers=same_origin)
    assert r.status_code == 400 and TOKEN not in r.text
    assert (
        rebound.patch(f"/api/runs/{run['id']}", json={"notes": "x"}, headers=same_origin).status_code == 400
    )
    assert api.get(f"/api/runs/{run['id']}").json()["notes"] == ""


# ---------------------------------------------------------------------------------------------------------------
# 2. Paths confined: data_path, checkpoint_dir, resume, recorded artifacts, downloads


def test_each_path_field_is_confined_to_the_data_directory(api, data_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.pt").write_bytes(b"x")
    (data_dir / "datasets" / "link.hdf5").symlink_to(outside / "x.hdf5")
    (data_dir / "runs" / "linkdir").symlink_to(outside, target_is_directory=True)
    (data_dir / "uploads" / "evil.pt").symlink_to(outside / "evil.pt")
    bad = {
        "data_path": [
            "/etc/passwd",
            str(outside / "x.hdf5"),
            str(data_dir / "datasets" / "link.hdf5"),  # a symlink out
            str(data_dir / "aime.db"),  # the data directory itself holds the database
            "../outside/x.hdf5",  # relative paths are taken inside the data directory
        ],
        "checkpoint_dir": [
            "/tmp/aime-evil",
            str(data_dir),
            str(data_dir / "runs" / "linkdir" / "r1"),
            "logs",
        ],
        "resume": [
            str(outside / "evil.pt"),
            str(data_dir / "uploads" / "evil.pt"),
            str(data_dir / "api_token"),
        ],
    }
    for field, values in bad.items():
        for value in values:
            for path in ("/api/runs", "/api/runs/resolve"):
                body = {"kind": "train", "tier": 1, "preset": "debug", "synthetic": True}
                r = api.post(path, json={**body, "overrides": {field: value}}, headers=AUTH)
                assert r.status_code == 422, (field, value, r.text)
                detail = r.json()["detail"]
                assert detail["field"] == field, detail
                assert (
                    str(data_dir / "datasets") in detail["message"]
                    and "AIME_ALLOWED_ROOTS" in detail["message"]
                )
    collect = api.post(
        "/api/runs",
        json={
            "kind": "collect",
            "tier": 1,
            "preset": "debug",
            "overrides": {"data_path": str(outside / "d.hdf5")},
        },
        headers=AUTH,
    )
    assert collect.status_code == 422 and collect.json()["detail"]["field"] == "data_path"
    assert not list(outside.glob("d.hdf5*"))
    assert api.get("/api/runs").json()["total"] == 0  # nothing was created

    # Inside: accepted, stored absolute (relative ones inside the data directory).
    ok = _train(api, data_path="datasets/mine.hdf5", checkpoint_dir="runs/exp1", resume=None)
    assert ok.status_code == 201, ok.text
    cfg = ok.json()["config"]
    assert cfg["data_path"] == str(data_dir / "datasets" / "mine.hdf5")
    assert cfg["checkpoint_dir"] == str(data_dir / "runs" / "exp1") and cfg["resume"] is None
    # A null checkpoint_dir gets the service's run directory, never ./checkpoints of the working directory.
    default = _train(api, checkpoint_dir=None).json()["config"]["checkpoint_dir"]
    assert Path(default).is_absolute() and Path(default).parent == data_dir / "runs"


def test_allowed_roots_admit_datasets_kept_elsewhere(api, data_dir, tmp_path, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    (store / "big.hdf5").write_bytes(b"")
    assert _train(api, data_path=str(store / "big.hdf5")).status_code == 422
    set_env(monkeypatch, AIME_ALLOWED_ROOTS=f"{store},/nonexistent-root")
    r = _train(api, data_path=str(store / "big.hdf5"))
    assert r.status_code == 201 and r.json()["config"]["data_path"] == str(store / "big.hdf5")
    bad = _train(api, data_path="/etc/hosts").json()["detail"]
    assert str(store) in bad["message"] and str(data_dir / "runs") in bad["message"]
    # The data directory's own files stay refused even under a root that contains it.
    set_env(monkeypatch, AIME_ALLOWED_ROOTS=str(tmp_path))
    assert _train(api, resume=str(data_dir / "aime.db")).status_code == 422
    assert _train(api, data_path=str(tmp_path / "x.hdf5")).status_code == 201


def test_sweeps_and_promotions_are_confined_too(api, data_dir, tmp_path):
    (data_dir / "datasets" / "d.hdf5").write_bytes(b"")
    base = {"kind": "train", "tier": 1, "preset": "debug", "overrides": {"data_path": "/etc/passwd"}}
    r = api.post("/api/sweeps", json={"base": base, "grid": {"lr": [1e-3]}}, headers=AUTH)
    assert r.status_code == 422 and "data_path" in json.dumps(r.json()["detail"])
    base["overrides"]["data_path"] = str(data_dir / "datasets" / "d.hdf5")
    grid = {"data_path": [str(data_dir / "datasets" / "d.hdf5"), str(tmp_path / "elsewhere.hdf5")]}
    r = api.post("/api/sweeps", json={"base": base, "grid": grid}, headers=AUTH)
    assert r.status_code == 422 and "outside the allowed directories" in json.dumps(r.json()["detail"])
    assert api.get("/api/runs").json()["total"] == 0


def test_retry_of_a_run_whose_paths_are_no_longer_allowed_is_refused(api, data_dir):
    from sqlmodel import Session

    from backend.core.db import get_engine
    from backend.models import Run

    rid = _train(api).json()["id"]
    with Session(get_engine()) as session:  # a row from before the checks (or a root since removed)
        run = session.get(Run, rid)
        run.config = {**run.config, "data_path": "/etc/passwd"}
        run.status = "failed"
        session.add(run)
        session.commit()
    r = api.post(f"/api/runs/{rid}/retry", headers=AUTH)
    assert r.status_code == 409 and "data_path" in r.json()["detail"] and "/etc/passwd" in r.json()["detail"]


def test_recorded_artifacts_are_confined_and_downloads_never_serve_service_files(api, data_dir, tmp_path):
    from sqlmodel import Session

    from backend.core.db import get_engine
    from backend.models import Artifact

    rid = _collect_run(api)["id"]
    (data_dir / "runs" / "sys").symlink_to("/etc/hostname")
    (data_dir / "api_token").write_text(TOKEN)
    for path in (
        "/etc/hostname",
        str(data_dir / "runs" / "sys"),
        str(data_dir / "aime.db"),
        str(data_dir / "api_token"),
        str(data_dir / "logs" / "api.log"),
        str(data_dir / "runs" / ".." / "aime.db"),
    ):
        r = api.post(f"/api/runs/{rid}/artifacts", json={"kind": "log", "path": path}, headers=AUTH)
        assert r.status_code == 422, path
        assert (
            r.json()["detail"]["field"] == "path"
            and "outside the allowed directories" in r.json()["detail"]["message"]
        )
    # A home directory of no such user (found by the contract fuzzer: it was a 500) and a symlink loop.
    (data_dir / "runs" / "loop").symlink_to(data_dir / "runs" / "loop")
    for path in ("~`", "~no-such-user-aime/x", str(data_dir / "runs" / "loop" / "x")):
        r = api.post(f"/api/runs/{rid}/artifacts", json={"kind": "log", "path": path}, headers=AUTH)
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert r.json()["detail"]["field"] == "path" and path in r.json()["detail"]["message"]
    assert api.get(f"/api/runs/{rid}/artifacts").json() == []  # nothing stored, no size reported
    good = data_dir / "runs" / "r" / "last.pt"
    good.parent.mkdir()
    good.write_bytes(b"12345")
    art = api.post(f"/api/runs/{rid}/artifacts", json={"kind": "checkpoint", "path": str(good)}, headers=AUTH)
    assert art.status_code == 200 and art.json()["bytes"] == 5
    assert api.get(f"/api/artifacts/{art.json()['id']}/download").content == b"12345"
    with Session(get_engine()) as session:  # rows recorded before the checks: still never served
        ids = []
        for path in (data_dir / "aime.db", data_dir / "api_token", Path("/etc/hostname")):
            a = Artifact(run_id=rid, kind="log", path=str(path))
            session.add(a)
            session.commit()
            ids.append(a.id)
    for i in ids:
        r = api.get(f"/api/artifacts/{i}/download")
        assert r.status_code == 403 and TOKEN not in r.text


def test_an_uploaded_pickle_used_as_resume_never_runs(api, data_dir, tmp_path):
    """Finding 1 end to end up to the worker: the upload is allowed as a resume path, and loading it runs nothing."""
    import torch

    from worker.tasks import _backfill_resumed_history

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    rid = _collect_run(api)["id"]
    buf = tmp_path / "evil.pt"
    torch.save({"step": 5, "model": Payload()}, buf)
    up = api.post(
        f"/api/runs/{rid}/artifacts/upload",
        params={"kind": "checkpoint", "name": "evil.pt"},
        content=buf.read_bytes(),
        headers=AUTH,
    )
    assert up.status_code == 200
    uploaded = up.json()["path"]
    (Path(uploaded).parent / "metrics.jsonl").write_text(
        json.dumps({"type": "metrics", "step": 1, "values": {}})
    )
    run = _train(api, resume=uploaded)
    assert run.status_code == 201 and run.json()["config"]["resume"] == uploaded

    class NoApi:
        def post(self, *a, **k):
            raise AssertionError("nothing is sent for a file that is not a checkpoint")

    assert _backfill_resumed_history(NoApi(), run.json()["id"], uploaded) == 0
    from aime_core import checkpoint as ckpt

    with pytest.raises(ckpt.CheckpointError, match="refused to load it"):
        ckpt.load(uploaded)
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------------------------------------------------
# 4. Bounded requests: limits per route (413 naming the limit), strings (422)


def test_body_limits_per_route(api, data_dir, monkeypatch):
    rid = _collect_run(api)["id"]
    big = {"kind": "collect", "tier": 1, "notes": "x" * (2 << 20)}
    r = api.post("/api/runs", json=big, headers=AUTH)
    assert (
        r.status_code == 413
        and "1048576 bytes" in r.json()["detail"]
        and "AIME_MAX_BODY_BYTES" in r.json()["detail"]
    )
    set_env(monkeypatch, AIME_MAX_INGEST_BYTES="20000", AIME_MAX_UPLOAD_BYTES="50000")
    points = [{"key": "loss", "step": s, "value": 1.0} for s in range(1000)]
    r = api.post(f"/api/runs/{rid}/metrics", json={"points": points}, headers=AUTH)
    assert (
        r.status_code == 413
        and "20000 bytes" in r.json()["detail"]
        and "AIME_MAX_INGEST_BYTES" in r.json()["detail"]
    )
    assert (
        api.post(f"/api/runs/{rid}/metrics", json={"points": points[:100]}, headers=AUTH).status_code == 200
    )
    r = api.post(
        f"/api/runs/{rid}/events",
        json={"events": [{"kind": "log", "payload": {"m": "x" * 30000}}]},
        headers=AUTH,
    )
    assert r.status_code == 413
    # Uploads: declared too big, and streamed (chunked, no Content-Length) past the limit; no file is left.
    up = f"/api/runs/{rid}/artifacts/upload"
    r = api.post(up, params={"kind": "video", "name": "a.mp4"}, content=b"x" * 60000, headers=AUTH)
    assert (
        r.status_code == 413
        and "50000 bytes" in r.json()["detail"]
        and "AIME_MAX_UPLOAD_BYTES" in r.json()["detail"]
    )

    def stream():
        for _ in range(10):
            yield b"y" * 10000

    r = api.post(up, params={"kind": "video", "name": "b.mp4"}, content=stream(), headers=AUTH)
    assert r.status_code == 413 and "50000 bytes" in r.json()["detail"]
    assert list((data_dir / "uploads" / str(rid)).iterdir()) == []  # the partial file is removed
    ok = api.post(up, params={"kind": "video", "name": "c.mp4"}, content=b"z" * 40000, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["bytes"] == 40000


def test_string_limits(api):
    rid = _collect_run(api)["id"]
    cases = [
        (f"/api/runs/{rid}/metrics", {"points": [{"key": "k" * 201, "step": 1, "value": 1}]}, "post"),
        (f"/api/runs/{rid}", {"tags": ["t" * 65]}, "patch"),
        (f"/api/runs/{rid}", {"tags": [f"t{i}" for i in range(33)]}, "patch"),
        (f"/api/runs/{rid}", {"notes": "n" * 10_001}, "patch"),
        ("/api/runs", {"kind": "collect", "tags": ["t" * 65]}, "post"),
        ("/api/runs", {"kind": "collect", "notes": "n" * 10_001}, "post"),
        ("/api/sweeps", {"base": {"kind": "train"}, "name": "s" * 201}, "post"),
        (f"/api/runs/{rid}/artifacts", {"kind": "log", "path": "p" * 4097}, "post"),
    ]
    for path, body, method in cases:
        r = getattr(api, method)(path, json=body, headers=AUTH)
        assert r.status_code == 422, (path, r.status_code, r.text[:200])
        assert re.search(r"at most \d+ (characters|items)", r.text), r.text[:300]
    r = api.post(
        f"/api/runs/{rid}/artifacts/upload", params={"kind": "video", "name": "v" * 201}, headers=AUTH
    )
    assert r.status_code == 422 and "at most 200 characters" in r.text
    assert (
        api.patch(
            f"/api/runs/{rid}", json={"tags": ["t" * 64], "notes": "n" * 10_000}, headers=AUTH
        ).status_code
        == 200
    )
    r = api.post(
        f"/api/runs/{rid}/metrics", json={"points": [{"key": "k" * 200, "step": 1, "value": 1}]}, headers=AUTH
    )
    assert r.status_code == 200


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MB (VmHWM: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def _probe(port: int, path: str, size: int, headers: dict, chunked: bool = False) -> tuple[int, int]:
    """POST `size` bytes as fast as the server takes them; stop when it answers. Returns (status, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    sock.sendall(head.encode())
    chunk, sent, reply = b"a" * (1 << 20), 0, b""
    try:
        while sent < size:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered: it will not read the rest
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
        if chunked and sent >= size:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1") else 0
    return status, sent


def test_memory_stays_bounded_under_200_mb_bodies(live):
    """The probes of the issue against a real uvicorn: without a token, as text/plain (no preflight), with the
    token to ingest (declared and chunked) and to a launch. RSS of the API process is read from /proc."""
    pid = live.api.pid
    mb200 = 200 << 20
    for _ in range(3):  # warm up the code paths before the baseline
        _probe(live.port, "/api/runs", 1 << 20, {"Content-Type": "application/json"})
    before, peak_before = _rss_mb(pid), _rss_mb(pid, "VmHWM")
    results = []
    for _ in range(3):
        results.append(
            ("no token", *_probe(live.port, "/api/runs", mb200, {"Content-Type": "application/json"}))
        )
    results.append(
        ("text/plain", *_probe(live.port, "/api/runs/1/metrics", mb200, {"Content-Type": "text/plain"}))
    )
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    results.append(("token, ingest", *_probe(live.port, "/api/runs/1/metrics", mb200, auth)))
    results.append(
        ("token, ingest chunked", *_probe(live.port, "/api/runs/1/metrics", mb200, auth, chunked=True))
    )
    results.append(("token, launch chunked", *_probe(live.port, "/api/runs", mb200, auth, chunked=True)))
    time.sleep(0.5)
    after, peak = _rss_mb(pid), _rss_mb(pid, "VmHWM")
    print(
        f"\nAPI RSS before {before:.1f} MB, after {after:.1f} MB, peak {peak_before:.1f} -> {peak:.1f} MB; "
        f"probes (what, status, bytes sent): {results}"
    )
    assert [r[1] for r in results] == [401, 401, 401, 401, 413, 413, 413], results
    # The refused bodies were not read: the client could not even push them (the server answered first).
    assert all(sent < mb200 for _, _, sent in results[:5]), results
    assert results[5][2] <= (16 << 20) + (8 << 20)  # chunked ingest: cut at the 16 MiB limit
    assert after - before < 40, f"RSS grew {after - before:.1f} MB under the probes"
    assert peak - max(peak_before, before) < 40, (
        f"peak RSS rose {peak - peak_before:.1f} MB during the probes"
    )
    assert live.api.poll() is None and os.path.exists(f"/proc/{pid}")


# ---------------------------------------------------------------------------------------------------------------
# 5. Headers and disclosure


def test_security_headers_on_pages_api_static_and_errors(api):
    responses = {
        "page": api.get("/"),
        "run page": api.get("/runs/3"),
        "api": api.get("/api/runs"),
        "static": api.get("/static/app.js"),
        "docs": api.get("/docs"),
        "401": api.post("/api/runs", json={}),
        "404": api.get("/api/runs/999999"),
        "400": as_client("evil.example").get("/"),
    }
    for what, r in responses.items():
        h = r.headers
        csp = h.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, what
        script_src = re.search(r"script-src ([^;]*)", csp).group(1)
        assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src, what
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", what
        assert h["referrer-policy"] == "no-referrer", what


def test_no_inline_script_in_the_pages(api):
    """CSP allows scripts from the server only: no inline <script>, no on* handlers, no javascript: URLs."""
    pages = {"index": api.get("/").text, "docs": api.get("/docs").text}
    for name, html in pages.items():
        for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S | re.I):
            assert "src=" in attrs and not body.strip(), (name, attrs, body[:100])
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), name
        assert "javascript:" not in html.lower(), name
    assert api.get("/docs/init.js").headers["content-type"].startswith("text/javascript")
    for js in (ROOT / "frontend" / "static").glob("*.js"):
        text = js.read_text()
        assert not re.search(r"""<[a-z][^>]*\son[a-z]+\s*=\s*["']""", text, re.I), js.name
        assert "javascript:" not in text and "eval(" not in text and "new Function" not in text, js.name


def test_a_failed_runs_traceback_is_for_token_holders_only(api):
    rid = _collect_run(api)["id"]
    assert api.post(f"/api/runs/{rid}/start", json={"host": "h", "pid": 1}, headers=AUTH).status_code == 200
    trace = (
        'Traceback (most recent call last):\n  File "/srv/aime/worker/tasks.py", line 99, in run_job\n'
        "    secret_internal_call()\nRuntimeError: the dataset writer broke"
    )
    body = {"status": "failed", "error": trace, "traceback": trace + "\n(full)"}
    assert api.post(f"/api/runs/{rid}/finish", json=body, headers=AUTH).status_code == 200
    run = api.get(f"/api/runs/{rid}").json()
    assert run["error"] == "RuntimeError: the dataset writer broke"
    public = [
        api.get(f"/api/runs/{rid}").text,
        api.get("/api/runs").text,
        api.get(f"/api/runs/{rid}/log").text,
        api.get(f"/api/runs/{rid}/history").text,
        api.get(f"/api/runs/{rid}/history", params={"kind": "traceback"}).text,
    ]
    for text in public:
        assert "Traceback" not in text and "/srv/aime" not in text and "secret_internal_call" not in text
    assert "the dataset writer broke" in public[2]  # the one-line reason is in the log
    assert api.get(f"/api/runs/{rid}/traceback").status_code == 401
    full = api.get(f"/api/runs/{rid}/traceback", headers=AUTH).json()["traceback"]
    assert full.startswith("Traceback") and "secret_internal_call" in full and full.endswith("(full)")


def test_multi_line_errors_become_one_line(api):
    rid = _collect_run(api)["id"]
    api.post(f"/api/runs/{rid}/start", json={"host": "h", "pid": 1}, headers=AUTH)
    body = {
        "status": "failed",
        "error": "dataset /d.hdf5 does not exist. Collect it first with:\n  aime collect --tier 1",
    }
    api.post(f"/api/runs/{rid}/finish", json=body, headers=AUTH)
    error = api.get(f"/api/runs/{rid}").json()["error"]
    assert error == "dataset /d.hdf5 does not exist. Collect it first with: aime collect --tier 1"
