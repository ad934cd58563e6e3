"""Run events: ingest from workers (eval, log, alert, progress, dataset), stored ones, and live SSE streams."""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlmodel import select

from aime_core import jsonnum
from backend import crud, early_stop
from backend.api.deps import PubDep, Read, RunId, SessionDep, SettingsDep, Token, run_or_404
from backend.core.pubsub import sse_stream
from backend.errors import doc
from backend.models import ALERT_KINDS, INT64_MAX, EventsIn, RunEvent, RunEventPublic, StoredPublic

router = APIRouter(prefix="/api", tags=["events"])

STORED = ("eval", "log", "status", "alert", "dataset")


def _step(value) -> int | None:
    """A payload's step when it is an integer the database can hold, else none."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT64_MAX
    return value if ok else None


@router.post(
    "/runs/{run_id}/events", dependencies=[Token], response_model=StoredPublic, responses=doc(404, 507)
)
def ingest(run_id: RunId, body: EventsIn, session: SessionDep, pub: PubDep) -> dict[str, int]:
    """Events the sinks report; a re-sent event (same uid) is ignored."""
    run = run_or_404(session, run_id)
    uids = [e.uid for e in body.events if e.uid]
    seen = set(session.exec(select(RunEvent.uid).where(RunEvent.uid.in_(uids))).all()) if uids else set()
    stored = 0
    for ev in body.events:
        if ev.uid and ev.uid in seen:
            continue
        seen.add(ev.uid)
        p = jsonnum.encode(dict(ev.payload))  # NaN/Inf (Python's JSON reads them) stored as "nan"/"inf"
        if ev.kind == "progress":  # latest only, on the run row
            run.progress = {**p, "time": ev.time or time.time()}
            session.add(run)
            pub.publish("progress", run_id, {"progress": run.progress})
            continue
        if ev.kind == "alert":
            kind = p.get("kind") if p.get("kind") in ALERT_KINDS else "divergence"
            step = _step(p.get("step"))
            crud.open_alert(
                session, pub, run_id, kind, str(p.get("key", ""))[:200], step, str(p.get("message", ""))
            )
            early_stop.check_alert(session, pub, run, kind, step, str(p.get("message", "")))
        if ev.kind == "dataset":
            crud.register_dataset(session, pub, run, p)
        if ev.kind in STORED:
            step = _step(p.get("step"))
            session.add(
                RunEvent(
                    run_id=run_id,
                    uid=ev.uid,
                    kind=ev.kind,
                    step=step,
                    payload=p,
                    wall_time=ev.time or time.time(),
                )
            )
            stored += 1
        if ev.kind in ("eval", "log"):
            pub.publish(ev.kind, run_id, {"payload": p})
    session.commit()
    return {"stored": stored}


@router.get(
    "/runs/{run_id}/history", dependencies=[Read], response_model=list[RunEventPublic], responses=doc(404)
)
def history(
    run_id: RunId,
    session: SessionDep,
    kind: str | None = Query(
        None, max_length=200, description="comma-separated kinds: eval, log, status, alert, dataset"
    ),
    offset: int = Query(0, ge=0, le=INT64_MAX, description="events to skip"),
    limit: int = Query(1000, ge=1, le=10000, description="at most this many events (1..10000)"),
) -> list[RunEvent]:
    """Stored events of a run in order (kind=eval gives the per-horizon rollout arrays of each evaluation)."""
    run_or_404(session, run_id)
    query = select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.kind != "traceback")  # token-only
    if kind:
        query = query.where(RunEvent.kind.in_(kind.split(",")))
    rows = session.exec(query.order_by(RunEvent.id).offset(offset).limit(limit)).all()
    return list(rows)


STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")
SSE = {
    200: {
        "description": "an endless Server-Sent Events stream (`id`, `event`, `data` JSON; kinds: docs/CONTRACTS.md)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
LAST_ID = Query(
    None,
    max_length=50,
    description="resume after this event id (as the Last-Event-ID header, which wins); anything else than an "
    "event id (`<ms>-<seq>`) starts from now",
)


def _sse(settings, run_id: int | None, request: Request, last_event_id: str | None) -> StreamingResponse:
    last = request.headers.get("last-event-id") or last_event_id
    if last is not None and not STREAM_ID.fullmatch(last.strip()):
        last = None  # a foreign Last-Event-ID must not drop the stream: live from now on
    return StreamingResponse(
        sse_stream(settings, run_id, last),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/runs/{run_id}/events", dependencies=[Read], response_class=StreamingResponse, responses=SSE)
def run_events(run_id: RunId, request: Request, settings: SettingsDep, last_event_id: str | None = LAST_ID):
    """Server-Sent Events of one run: metrics, status, alert, artifact, progress, eval, log. Resumes on Last-Event-ID."""
    return _sse(settings, run_id, request, last_event_id)


@router.get("/events", dependencies=[Read], response_class=StreamingResponse, responses=SSE)
def all_events(request: Request, settings: SettingsDep, last_event_id: str | None = LAST_ID):
    """Server-Sent Events of every run (the runs list and queue pages)."""
    return _sse(settings, None, request, last_event_id)
