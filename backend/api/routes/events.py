"""Run events: ingest from workers (eval, log, alert, progress, dataset), stored ones, and live SSE streams."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlmodel import select

from backend import crud, early_stop
from backend.api.deps import PubDep, Read, SessionDep, SettingsDep, Token, run_or_404
from backend.core.pubsub import sse_stream
from backend.models import EventsIn, RunEvent

router = APIRouter(prefix="/api", tags=["events"])

STORED = ("eval", "log", "status", "alert", "dataset")


@router.post("/runs/{run_id}/events", dependencies=[Token])
def ingest(run_id: int, body: EventsIn, session: SessionDep, pub: PubDep) -> dict[str, int]:
    """Events the sinks report; a re-sent event (same uid) is ignored."""
    run = run_or_404(session, run_id)
    uids = [e.uid for e in body.events if e.uid]
    seen = set(session.exec(select(RunEvent.uid).where(RunEvent.uid.in_(uids))).all()) if uids else set()
    stored = 0
    for ev in body.events:
        if ev.uid and ev.uid in seen:
            continue
        seen.add(ev.uid)
        p = dict(ev.payload)
        if ev.kind == "progress":  # latest only, on the run row
            run.progress = {**p, "time": ev.time or time.time()}
            session.add(run)
            pub.publish("progress", run_id, {"progress": run.progress})
            continue
        if ev.kind == "alert":
            kind = (
                p.get("kind")
                if p.get("kind") in ("nan", "inf", "divergence", "oom", "lost", "delivery")
                else "divergence"
            )
            crud.open_alert(
                session, pub, run_id, kind, str(p.get("key", "")), p.get("step"), str(p.get("message", ""))
            )
            early_stop.check_alert(session, pub, run, kind, p.get("step"), str(p.get("message", "")))
        if ev.kind == "dataset":
            crud.register_dataset(session, pub, run, p)
        if ev.kind in STORED:
            step = p.get("step") if isinstance(p.get("step"), int) else None
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


@router.get("/runs/{run_id}/history", dependencies=[Read])
def history(
    run_id: int,
    session: SessionDep,
    kind: str | None = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(1000, le=10000),
) -> list[dict[str, Any]]:
    """Stored events of a run in order (kind=eval gives the per-horizon rollout arrays of each evaluation)."""
    run_or_404(session, run_id)
    query = select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.kind != "traceback")  # token-only
    if kind:
        query = query.where(RunEvent.kind.in_(kind.split(",")))
    rows = session.exec(query.order_by(RunEvent.id).offset(offset).limit(limit)).all()
    return [r.model_dump() for r in rows]


def _sse(settings, run_id: int | None, request: Request, last_event_id: str | None) -> StreamingResponse:
    last = request.headers.get("last-event-id") or last_event_id
    return StreamingResponse(
        sse_stream(settings, run_id, last),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/runs/{run_id}/events", dependencies=[Read])
def run_events(run_id: int, request: Request, settings: SettingsDep, last_event_id: str | None = None):
    """Server-Sent Events of one run: metrics, status, alert, artifact, progress, eval, log. Resumes on Last-Event-ID."""
    return _sse(settings, run_id, request, last_event_id)


@router.get("/events", dependencies=[Read])
def all_events(request: Request, settings: SettingsDep, last_event_id: str | None = None):
    """Server-Sent Events of every run (the runs list and queue pages)."""
    return _sse(settings, None, request, last_event_id)
