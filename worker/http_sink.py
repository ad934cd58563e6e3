"""HttpSink: sends metrics, events and artifacts to the API in batches from a background thread.

Every batch becomes one request. A request that fails (API down, restarting) is appended to a spool file on
disk, and so is every later one until the spool drains again, oldest first, so order is kept and nothing is
lost. The API upserts metric points on (run, key, step) and drops events whose uid it has seen, so a request
that was received but whose answer was lost can be re-sent safely.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from aime_core.sinks import Sink
from worker.api import ApiClient, ApiError


def _safe(value: Any) -> Any:
    """JSON without NaN/Inf: non-finite floats become "nan"/"inf"/"-inf", recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _safe(value.item())
    return value


class HttpSink(Sink):
    def __init__(
        self,
        api: ApiClient,
        run_id: int,
        spool_dir: str | Path,
        flush_s: float = 0.2,
        close_timeout: float = 600,
    ):
        self.api, self.run_id = api, run_id
        self.spool = Path(spool_dir) / f"run-{run_id}.jsonl"
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        self.flush_s, self.close_timeout = flush_s, close_timeout
        self._lock = threading.Lock()
        self._points: list[dict] = []
        self._events: list[dict] = []
        self._files: list[dict] = []
        self._progress: dict | None = None
        self._closing = threading.Event()
        self.sent_requests = 0
        self.spooled_requests = 0
        self._thread = threading.Thread(target=self._loop, name=f"http-sink-{run_id}", daemon=True)
        self._thread.start()

    # --- Sink interface (called by the trainer / collector; never blocks on the network)
    def metrics(self, step, values, epoch=None):
        now = time.time()
        with self._lock:
            self._points += [
                {"key": k, "step": int(step), "value": _safe(float(v)), "time": now}
                for k, v in values.items()
            ]

    def event(self, kind, payload):
        with self._lock:
            self._events.append(
                {"kind": kind, "payload": _safe(dict(payload)), "uid": uuid.uuid4().hex, "time": time.time()}
            )

    def progress(self, done, total, unit, postfix=None):
        with self._lock:  # only the newest progress matters
            self._progress = {
                "kind": "progress",
                "payload": _safe({"done": done, "total": total, "unit": unit, **dict(postfix or {})}),
                "time": time.time(),
            }

    def artifact(self, kind, path, step=None, meta=None):
        with self._lock:
            self._files.append(
                {"kind": kind, "path": str(path), "step": step, "meta": _safe(dict(meta or {}))}
            )

    def close(self):
        self._closing.set()
        self._thread.join(self.close_timeout)

    # --- background sending
    def _take(self) -> list[dict]:
        """The pending data as requests, in the order they should arrive."""
        with self._lock:
            points, events, files, progress = self._points, self._events, self._files, self._progress
            self._points, self._events, self._files, self._progress = [], [], [], None
        reqs = []
        for i in range(0, len(points), 2000):
            reqs.append(
                {"path": f"/api/runs/{self.run_id}/metrics", "json": {"points": points[i : i + 2000]}}
            )
        if progress:
            events = [*events, progress]
        if events:
            reqs.append({"path": f"/api/runs/{self.run_id}/events", "json": {"events": events}})
        for f in files:
            if (
                f["kind"] == "video" and Path(f["path"]).is_file()
            ):  # the API may be on another machine: send the bytes
                params = {"kind": "video", "name": Path(f["path"]).name}
                params |= {
                    k: v for k, v in (("step", f["step"]), ("epoch", f["meta"].get("epoch"))) if v is not None
                }
                reqs.append(
                    {
                        "path": f"/api/runs/{self.run_id}/artifacts/upload",
                        "upload": f["path"],
                        "params": params,
                    }
                )
            else:
                reqs.append({"path": f"/api/runs/{self.run_id}/artifacts", "json": f})
        return reqs

    def _send(self, req: dict) -> None:
        if "upload" in req:
            content = Path(req["upload"]).read_bytes()
            self.api.request("POST", req["path"], params=req["params"], content=content, retry_for=1.0)
        else:
            self.api.request("POST", req["path"], json=req["json"], retry_for=1.0)
        self.sent_requests += 1

    def _drain_spool(self) -> bool:
        """Re-send spooled requests, oldest first; True when the spool is empty."""
        if not self.spool.exists():
            return True
        lines = self.spool.read_text().splitlines()
        for i, line in enumerate(lines):
            try:
                self._send(json.loads(line))
            except ApiError:
                continue  # refused for good (e.g. run deleted): drop it
            except (httpx.TransportError, OSError):
                self.spool.write_text("".join(x + "\n" for x in lines[i:]))
                return False
        self.spool.unlink()
        return True

    def _spool_write(self, reqs: list[dict]) -> None:
        with self.spool.open("a") as f:
            for r in reqs:
                f.write(json.dumps(r) + "\n")
        self.spooled_requests += len(reqs)

    def _loop(self) -> None:
        backoff = 0.0
        deadline = None
        while True:
            closing = self._closing.is_set()
            if closing and deadline is None:
                deadline = time.monotonic() + self.close_timeout - 1
            reqs = self._take()
            ok = self._drain_spool()
            for j, req in enumerate(reqs):
                if not ok:
                    self._spool_write(reqs[j:])
                    break
                try:
                    self._send(req)
                except ApiError:
                    pass  # 4xx: the API will never take it; re-sending cannot help
                except (httpx.TransportError, OSError):
                    ok = False
                    self._spool_write(reqs[j:])
                    break
            backoff = 0.0 if ok else min(max(backoff * 2, 0.5), 5.0)
            if closing and (ok or time.monotonic() > deadline):
                return  # what is still spooled is re-sent by the next worker start (resend_spools)
            self._closing.wait(self.flush_s + backoff) if not closing else time.sleep(backoff)


def resend_spools(api: ApiClient, spool_dir: str | Path) -> int:
    """Send what earlier runs left in the spool (the API was down when they ended); returns files emptied."""
    emptied = 0
    for path in sorted(Path(spool_dir).glob("run-*.jsonl")):
        sink = HttpSink.__new__(HttpSink)
        sink.api, sink.spool, sink.sent_requests = api, path, 0
        emptied += sink._drain_spool()
    return emptied
