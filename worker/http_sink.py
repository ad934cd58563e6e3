"""HttpSink: sends metrics, events and artifacts to the API in batches from a background thread.

Nothing is dropped silently. Every batch becomes one request, queued in a backlog that is sent oldest first (so
order is kept). A request the API does not acknowledge (connection error, timeout, any 5xx including 507 "disk
full", 429, 408, or a 401 from an API restarting without its token yet) stays in the backlog, which is mirrored
to a spool file on disk, and is re-sent with backoff (0.5 s doubling to 5 s) until it is acknowledged. Only a
4xx that re-sending cannot fix (404 run deleted, 422 malformed) is dropped, and then loudly: counted in
`dropped_points`, printed to the worker log and raised as an alert on the run.

`close()` waits for the backlog to drain (bounded by `close_timeout`) and returns how many metric points were
not delivered; those stay in the spool file, and `resend_spools` (called when a worker starts) sends them. The API
upserts metric points on (run, key, step) and drops events whose uid it has seen, so a request that was received
but whose answer was lost can be re-sent safely.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from aime_core import jsonnum
from aime_core.sinks import Sink
from worker.api import ApiClient, ApiError

BATCH = 2000  # points per request
MAX_BACKOFF = 5.0


_safe = jsonnum.encode  # JSON without NaN/Inf: non-finite floats become "nan"/"inf"/"-inf", recursively


def retryable(status: int) -> bool:
    """Statuses that re-sending can fix: server errors (507 disk full included), throttling, a restarting API."""
    return status >= 500 or status in (401, 408, 425, 429)


def _points(req: dict) -> int:
    return len(req.get("json", {}).get("points", ())) if req["path"].endswith("/metrics") else 0


class Refused(Exception):
    """A request that can never succeed (a 4xx, or an upload whose file is gone)."""


class Backlog:
    """Unacknowledged requests of one run, oldest first, mirrored to `spool` (one JSON request per line).

    The file always holds every unacknowledged request unless the disk refuses writes; then they wait in memory
    and the file is rewritten as soon as it can be. A sent request may still be in the file for a moment; sending
    it again later is harmless (idempotent ingest).
    """

    def __init__(self, api: ApiClient, run_id: int, spool: Path):
        self.api, self.run_id, self.spool = api, run_id, spool
        self.items: list[dict] = []
        self.in_file = 0  # items[:in_file] are in the file as its only lines (when not `stale`)
        self.stale = False  # the file holds lines that were sent meanwhile, or a torn write: rewrite it
        self.sent_requests = 0
        self.dropped_points = 0
        self.dropped: list[str] = []
        self.last_error: str | None = None
        self.disk_error: str | None = None
        if spool.exists():  # left by an earlier process for this run
            for line in spool.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    self.items.append(json.loads(line))
            self.in_file = len(self.items)

    def points(self) -> int:
        return sum(_points(r) for r in self.items)

    # --- sending
    def _send(self, req: dict) -> None:
        if "upload" in req:
            try:
                content = Path(req["upload"]).read_bytes()
            except OSError as exc:
                raise Refused(f"cannot read {req['upload']}: {exc.strerror or exc}") from None
            self.api.request("POST", req["path"], params=req["params"], content=content)
        else:
            self.api.request("POST", req["path"], json=req["json"])
        self.sent_requests += 1

    def send(self) -> bool:
        """Send from the oldest on until one is not acknowledged; True when nothing is left."""
        while self.items:
            req = self.items[0]
            try:
                self._send(req)
            except ApiError as exc:
                if retryable(exc.status):
                    self.last_error = str(exc)
                    return False
                if _points(req) > 1:  # find the refused points by halving; the good ones still go
                    pts = req["json"]["points"]
                    half = len(pts) // 2
                    self.items[0:1] = [{**req, "json": {"points": p}} for p in (pts[:half], pts[half:])]
                    if self.in_file:  # the file holds the whole batch as one line: rewrite it
                        self.in_file, self.stale = self.in_file + 1, True
                    continue
                self._drop(req, str(exc))
            except Refused as exc:
                self._drop(req, str(exc))
            except (TypeError, ValueError) as exc:  # not JSON-encodable: re-sending cannot help either
                self._drop(req, f"cannot encode it: {exc}")
            except httpx.HTTPError as exc:  # connection refused, timeout, reset...
                self.last_error = f"{type(exc).__name__}: {exc}"
                return False
            self.items.pop(0)
            if self.in_file:
                self.in_file -= 1
                self.stale = True
        self.last_error = None
        return True

    def _drop(self, req: dict, why: str) -> None:
        n = _points(req)
        self.dropped_points += n
        what = f"{n} metric points" if n else req["path"].rsplit("/", 1)[-1]
        msg = f"the API refused {what} of run {self.run_id} for good ({why[:300]}); dropped"
        self.dropped.append(msg)
        print(f"http sink: {msg}", file=sys.stderr, flush=True)

    # --- the spool file
    def persist(self) -> None:
        """Make the file match the backlog (append the new tail, or rewrite it after sends or a failed write)."""
        try:
            if not self.items:
                if self.in_file or self.stale or self.spool.exists():
                    self.spool.unlink(missing_ok=True)
                self.in_file, self.stale = 0, False
            elif self.stale:
                self.spool.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.spool.with_name(self.spool.name + ".tmp")
                try:
                    with tmp.open("w") as f:
                        f.writelines(json.dumps(r, default=str) + "\n" for r in self.items)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, self.spool)
                finally:
                    tmp.unlink(missing_ok=True)
                self.in_file, self.stale = len(self.items), False
            elif self.in_file < len(self.items):
                self.spool.parent.mkdir(parents=True, exist_ok=True)
                with self.spool.open("a") as f:
                    try:
                        f.writelines(json.dumps(r, default=str) + "\n" for r in self.items[self.in_file :])
                        f.flush()
                        os.fsync(f.fileno())
                    except OSError:
                        self.stale = True  # maybe a torn last line: rewrite the whole file next time
                        raise
                self.in_file = len(self.items)
            self.disk_error = None
        except OSError as exc:
            first = self.disk_error is None
            self.disk_error = f"cannot write the spool {self.spool}: {exc.strerror or exc}"
            if first:  # the requests wait in memory meanwhile
                print(
                    f"http sink: {self.disk_error}; keeping the batches in memory",
                    file=sys.stderr,
                    flush=True,
                )


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
        with contextlib.suppress(OSError):
            self.spool.parent.mkdir(parents=True, exist_ok=True)
        self.flush_s, self.close_timeout = flush_s, close_timeout
        self._owner = _own(self.spool)  # resend_spools leaves a live sink's file alone
        self.backlog = Backlog(api, run_id, self.spool)
        self._lock = threading.Lock()
        self._points: list[dict] = []
        self._events: list[dict] = []
        self._files: list[dict] = []
        self._progress: dict | None = None
        self._alerted = 0
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._timeout: float | None = None
        self.spooled_requests = 0  # requests that were not acknowledged at their first try
        self._thread = threading.Thread(target=self._loop, name=f"http-sink-{run_id}", daemon=True)
        self._thread.start()

    @property
    def sent_requests(self) -> int:
        return self.backlog.sent_requests

    @property
    def dropped_points(self) -> int:
        return self.backlog.dropped_points

    def unsent_points(self) -> int:
        """Metric points not acknowledged by the API yet (waiting in memory or in the spool)."""
        with self._lock:
            waiting = len(self._points)
        return waiting + self.backlog.points()

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

    def close(self, timeout: float | None = None) -> int:
        """Send what is left, waiting up to `timeout` (default `close_timeout`) s for the API to take it all.

        Returns the metric points still undelivered; they are in the spool file (or, if the disk refused it
        too, lost with this process: the caller reports the count either way)."""
        self._timeout = self.close_timeout if timeout is None else timeout
        self._closing.set()
        self._wake.set()
        self._thread.join(self._timeout + 15)  # + one request's timeout
        return self.unsent_points()

    # --- background sending
    def _take(self) -> list[dict]:
        """The pending data as requests, in the order they should arrive."""
        with self._lock:
            points, events, files, progress = self._points, self._events, self._files, self._progress
            self._points, self._events, self._files, self._progress = [], [], [], None
        reqs = []
        for i in range(0, len(points), BATCH):
            reqs.append(
                {"path": f"/api/runs/{self.run_id}/metrics", "json": {"points": points[i : i + BATCH]}}
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

    def _alert_drops(self) -> None:
        """Every drop becomes an alert on the run (sent like any event; never about itself)."""
        new = self.backlog.dropped[self._alerted :]
        self._alerted = len(self.backlog.dropped)
        for msg in new:
            if msg.startswith("the API refused events"):
                continue  # an alert about refused events could be refused the same way
            self.event("alert", {"kind": "delivery", "key": "delivery", "message": msg})

    def _loop(self) -> None:
        while True:
            try:
                self._run()
                return
            except Exception as exc:  # noqa: BLE001 - a bug here must not silently end the sending
                print(
                    f"http sink of run {self.run_id}: {type(exc).__name__}: {exc}; going on", file=sys.stderr
                )
                time.sleep(1.0)

    def _run(self) -> None:
        backoff, deadline = 0.0, None
        while True:
            closing = self._closing.is_set()
            if closing and deadline is None:
                deadline = time.monotonic() + (self._timeout or 0)
            new = self._take()
            was_ok = not self.backlog.items
            self.backlog.items += new
            ok = self.backlog.send()
            if not ok and was_ok:
                self.spooled_requests += len(self.backlog.items)
            elif not ok:
                self.spooled_requests += len(new)
            self.backlog.persist()
            if self.backlog.dropped[self._alerted :]:
                self._alert_drops()
                continue
            if closing and (ok or time.monotonic() >= deadline):
                _release(self._owner)
                return  # what is still spooled is re-sent by the next worker start (resend_spools)
            backoff = 0.0 if ok else min(max(backoff * 2, 0.5), MAX_BACKOFF)
            wait = self.flush_s + backoff
            if closing:
                wait = min(backoff, max(0.0, deadline - time.monotonic()))
                time.sleep(wait)
            else:
                self._wake.wait(wait)


def _own(spool: Path):
    """An exclusive lock on `<spool>.lock` while a sink (or a resend) works on that run's spool; None if taken."""
    try:
        f = spool.with_name(spool.name + ".lock").open("a")
    except OSError:
        return None  # e.g. the disk is full: work without the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def _release(owner) -> None:
    if owner is not None:
        with contextlib.suppress(OSError):
            Path(owner.name).unlink(missing_ok=True)
            owner.close()


def resend_spools(api: ApiClient, spool_dir: str | Path) -> dict[int, int]:
    """Send what earlier processes left in the spool (the API was down when their runs ended).

    Returns {run id: metric points still unsent} for the files that could not be emptied; {} when all went."""
    left = {}
    for path in sorted(Path(spool_dir).glob("run-*.jsonl")):
        try:
            run_id = int(path.stem.split("-", 1)[1])
        except ValueError:
            continue
        owner = _own(path)
        if owner is None and path.with_name(path.name + ".lock").exists():
            continue  # a live sink of this run (in this or another worker process) is sending it
        try:
            left |= _resend_one(api, run_id, path)
        finally:
            _release(owner)
    return left


def _resend_one(api: ApiClient, run_id: int, path: Path) -> dict[int, int]:
    left = {}
    if path.exists():
        backlog = Backlog(api, run_id, path)
        points = backlog.points()
        if backlog.send():
            backlog.persist()
            with contextlib.suppress(Exception):  # a note on the run: its late points arrived
                msg = f"{points} spooled metric points delivered late from {path}"
                if backlog.dropped_points:
                    msg += f"; {backlog.dropped_points} refused for good"
                event = {"kind": "log", "payload": {"level": "info", "message": msg}, "uid": uuid.uuid4().hex}
                api.post(f"/api/runs/{run_id}/events", {"events": [event]})
        else:
            backlog.persist()
            left[run_id] = backlog.points()
    return left
