"""Runs through the real queue: Redis, a Celery worker process, the real collect/train on the debug preset."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from aime_core.client import Client
from aime_core.sinks import read_jsonl

pytestmark = [pytest.mark.redis, pytest.mark.slow]
DEBUG = {"preset": "debug", "synthetic": True}


class SseListener(threading.Thread):
    """Reads /api/events like a browser: reconnects with Last-Event-ID when the API goes away."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.events, self.last_id, self.reconnects = url, [], None, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                with httpx.stream("GET", f"{self.url}/api/events", headers=headers, timeout=None) as resp:
                    for line in resp.iter_lines():
                        if line.startswith("id: "):
                            self.last_id = line[4:]
                        elif line.startswith("data: "):
                            self.events.append(json.loads(line[6:]))
                        if self.done.is_set():
                            return
            except httpx.TransportError:
                pass
            self.reconnects += 1
            time.sleep(0.3)

    def of(self, run_id: int, kind: str) -> list[dict]:
        return [e for e in self.events if e["run_id"] == run_id and e["type"] == kind]


def _wait(cond, timeout: float, what: str, live=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n" + (live.logs() if live else ""))


def _max_step(client: Client, run_id: int, key: str = "loss") -> int:
    latest = client.run(run_id)["latest"].get(key)
    return latest[0] if latest else 0


def test_train_run_through_the_queue_survives_an_api_restart(live):
    live.start_worker()
    sse = SseListener(live.url)
    sse.start()
    client = Client(live.url)  # the token comes from /api/session: we are on localhost
    assert client.token == os.environ["AIME_API_TOKEN"]
    run = client.launch("train", tier=1, **DEBUG, overrides={"num_epochs": 6})
    rid = run["id"]
    collection = run["waits_for_id"]
    assert collection is not None  # no dataset yet: its collection was queued first

    _wait(lambda: _max_step(client, rid) >= 3, 120, "the first metrics", live)
    step_at_stop = _max_step(client, rid)
    live.stop_api()  # the worker keeps training; the HTTP sink spools to disk meanwhile
    time.sleep(2.0)
    live.start_api()
    final = client.wait(rid, timeout=180)
    assert final["status"] == "succeeded", final["error"]
    assert step_at_stop < final["result"]["steps"]  # the API really was away in the middle of the run
    assert client.run(collection)["status"] == "succeeded"
    datasets = client.datasets()
    assert list(datasets["id"]) == [final["dataset_id"]] and int(datasets["episodes"][0]) == 6

    # Every point the trainer wrote to its own JSONL reached the database exactly once.
    jsonl = read_jsonl(Path(final["config"]["checkpoint_dir"]) / "metrics.jsonl")
    expected = {(k, r["step"]) for r in jsonl if r["type"] == "metrics" for k in r["values"]}
    df = client.metrics(rid)
    stored = {(k, int(s)) for k in df.columns if k != "step" for s in df["step"][df[k].notna()]}
    assert len(expected) > 50 and expected <= stored
    loss = client.metric(rid, "loss")
    assert list(loss["step"]) == list(range(1, final["result"]["steps"] + 1)) and loss["value"].notna().all()

    videos = client.artifacts(rid, kind="video")
    assert len(videos) == 6  # one rollout video per epoch (eval_every=1)
    path = client.download(int(videos["id"].iloc[0]), live.tmp)
    assert path.read_bytes()[4:8] == b"ftyp"  # an MP4
    part = httpx.get(
        f"{live.url}/api/artifacts/{int(videos['id'].iloc[0])}/download", headers={"Range": "bytes=0-99"}
    )
    assert part.status_code == 206 and len(part.content) == 100
    ckpts = client.artifacts(rid, kind="checkpoint")
    assert "last" in {m.get("tag") for m in ckpts["meta"]}
    evals = client.history(rid, "eval")
    assert len(evals) == 6 and len(evals["rollout_mse"].iloc[0]) == len(evals["horizon"].iloc[0])

    _wait(
        lambda: sse.of(rid, "status") and sse.of(rid, "status")[-1]["status"] == "succeeded", 20, "SSE status"
    )
    sse.done.set()
    statuses = [e["status"] for e in sse.of(rid, "status")]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded"
    assert sse.reconnects >= 1  # the API restart closed the stream; Last-Event-ID resumed it
    sse_steps = {(p["key"], p["step"]) for e in sse.of(rid, "metrics") for p in e["points"]}
    assert expected <= sse_steps  # live events arrived for every point, none lost across the restart
    assert {e["kind"] for e in sse.of(rid, "artifact")} >= {"video", "checkpoint"}
    assert client.queue()["workers"][0]["queues"] == ["collect", "synthetic", "train"]


def test_cancel_lost_and_resume(live):
    worker = live.start_worker()
    client = Client(live.url)
    client.wait(client.launch("collect", tier=1, **DEBUG)["id"], timeout=120)
    # 200 steps, a checkpoint every epoch (5 steps), no videos: long enough that an idle machine does not
    # finish a run between two polls of this test, short enough for a loaded one.
    long = {"num_epochs": 40, "eval_every": 100}
    first = client.launch("train", tier=1, **DEBUG, overrides=long)
    second = client.launch("train", tier=1, **DEBUG, seed=1, overrides=long)
    assert first["waits_for_id"] is None
    _wait(lambda: client.run(first["id"])["status"] == "running", 60, "the first run to start", live)

    # A queued run that is cancelled never starts.
    assert client.cancel(second["id"])["status"] == "cancelled"
    # A running run stops within a few seconds with a checkpoint.
    _wait(lambda: _max_step(client, first["id"]) >= 12, 120, "two epochs", live)
    t0 = time.monotonic()
    client.cancel(first["id"])
    cancelled = client.wait(first["id"], timeout=30, poll=0.2)
    assert cancelled["status"] == "cancelled" and time.monotonic() - t0 < 15
    assert cancelled["result"]["steps"] < 200
    ckpts = client.artifacts(first["id"], kind="checkpoint")
    last = ckpts[[m.get("tag") == "last" for m in ckpts["meta"]]]
    assert int(last["step"].iloc[0]) == cancelled["result"]["steps"]  # checkpointed where it stopped
    assert client.run(second["id"])["started_at"] is None

    # Resume; SIGKILL the worker mid-run -> lost (no heartbeat for 5 s here), with an alert.
    child = client.resume(first["id"])
    _wait(
        lambda: _max_step(client, child["id"]) >= cancelled["result"]["steps"] + 8,
        120,
        "the resumed run",
        live,
    )
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    lost = _wait(lambda: (r := client.run(child["id"]))["status"] == "lost" and r, 30, "lost", live)
    assert "no heartbeat" in lost["error"]
    assert list(client.alerts(child["id"])["kind"]) == ["lost"]

    # A new worker resumes from the last checkpoint and finishes with every step exactly once.
    live.start_worker()
    grandchild = client.resume(child["id"])
    final = client.wait(grandchild["id"], timeout=240)
    assert final["status"] == "succeeded", final["error"]
    loss = client.metric(grandchild["id"], "loss")
    assert list(loss["step"]) == list(range(1, 201))
    assert client.run(second["id"])["status"] == "cancelled"


def test_resume_backfills_points_a_killed_worker_never_sent(live, tmp_path):
    """A worker SIGKILLed between a checkpoint and its sink's flush: the points live only in the parent's JSONL.
    The resumed run re-sends them (with their original wall time), so its history has no gap."""
    import torch

    from worker.api import ApiClient
    from worker.tasks import _backfill_resumed_history

    client = Client(live.url)
    rid = client.launch("collect", tier=1, **DEBUG)["id"]  # any run id to ingest into; no worker is running
    parent_dir = tmp_path / "parent"
    parent_dir.mkdir()
    ckpt = parent_dir / "last.pt"
    torch.save({"step": 3}, ckpt)
    lines = [
        {
            "type": "metrics",
            "step": s,
            "epoch": 0,
            "values": {"loss": float(10 - s), "loss/kl_z": "nan"},
            "time": 1000.0 + s,
        }
        for s in (1, 2, 3, 4)  # step 4 came after the checkpoint: the resumed trainer will redo it
    ]
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"type": "metr'  # a line cut short by the kill
    (parent_dir / "metrics.jsonl").write_text(text)

    api = ApiClient(live.url, httpx.get(f"{live.url}/api/session").json()["token"])
    assert _backfill_resumed_history(api, rid, str(ckpt)) == 6
    loss = client.metric(rid, "loss")
    assert list(loss["step"]) == [1, 2, 3] and list(loss["value"]) == [9.0, 8.0, 7.0]
    assert list(loss["wall_time"]) == [1001.0, 1002.0, 1003.0]
    kl = client.metric(rid, "loss/kl_z")
    assert kl["value"].isna().all() and len(kl) == 3
