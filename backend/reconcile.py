"""The database is the truth about runs; the broker is reconciled with it.

A run the database lists as `queued` (not held by a sweep, not waiting for its dataset) that no broker queue
holds, neither waiting in a queue list nor delivered-but-unacknowledged, is sent again. This happens when the
API starts, whenever the broker comes back (it was unreachable, or it restarted: its run_id changed) and once a
minute. A worker claims a run through the API (`POST /start` succeeds once), so a duplicate message is harmless:
the second delivery is refused and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import timedelta
from typing import Any

import redis
from sqlmodel import Session, select

from backend import queueing
from backend.core import celery_client
from backend.core.pubsub import sync_redis
from backend.core.settings import Settings
from backend.models import Run, RunEvent, utcnow

log = logging.getLogger("aime.reconcile")
GRACE_S = 5.0  # a run committed this recently may be on its way to the broker right now
PERIOD_S = 60.0


def _run_id(message: dict[str, Any]) -> int | None:
    args = message.get("headers", {}).get("argsrepr", "()").strip("()[], ")
    return int(args) if args.isdigit() else None


def broker_run_ids(settings: Settings) -> set[int]:
    """Run ids of every task message the broker holds: waiting in a queue or delivered and not yet acked."""
    r = sync_redis(settings.redis_url)
    ids: set[int] = set()
    for q in celery_client.QUEUES:
        for raw in r.lrange(f"{settings.redis_prefix}{q}", 0, -1):
            with contextlib.suppress(ValueError, TypeError):
                ids.add(_run_id(json.loads(raw)) or -1)
    for raw in r.hvals(f"{settings.redis_prefix}unacked"):
        with contextlib.suppress(ValueError, TypeError, IndexError):
            ids.add(_run_id(json.loads(raw)[0]) or -1)
    ids.discard(-1)
    return ids


def reconcile(session: Session, settings: Settings) -> list[int]:
    """Send again the queued runs the broker does not hold; returns their ids."""
    held = broker_run_ids(settings)
    cutoff = utcnow() - timedelta(seconds=GRACE_S)
    queued = session.exec(
        select(Run).where(
            Run.status == "queued",
            Run.waits_for_id.is_(None),
            Run.held == False,  # noqa: E712
            Run.created_at < cutoff,
        )
    ).all()
    sent = []
    for run in queued:
        if run.id in held:
            continue
        if run.error and run.error.startswith(queueing.NOT_SENT):
            run.error = None
        queueing.enqueue(session, run)  # the same queue choice as at launch
        if run.error and run.error.startswith(queueing.NOT_SENT):
            break  # the broker went away again: the next tick tries
        msg = "queued again: the broker did not hold this run's task (reconciled with the database)"
        session.add(RunEvent(run_id=run.id, kind="log", payload={"level": "warning", "message": msg}))
        session.add(run)
        session.commit()
        sent.append(run.id)
    if sent:
        log.warning("re-sent %d queued run(s) the broker did not hold: %s", len(sent), sent)
    return sent


class Reconciler:
    """Decides when to reconcile: first contact, broker back after being unreachable or restarted, each minute."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.server_id: str | None = None
        self.reachable = False
        self.last = 0.0

    def tick(self, session_factory) -> list[int] | None:
        try:
            server_id = str(sync_redis(self.settings.redis_url).info("server").get("run_id"))
        except (redis.RedisError, OSError):
            self.reachable = False
            return None
        due = not self.reachable or server_id != self.server_id or time.monotonic() - self.last >= PERIOD_S
        self.reachable = True
        if not due:
            return []
        with session_factory() as session:
            sent = reconcile(session, self.settings)
        self.server_id, self.last = server_id, time.monotonic()  # only once it worked
        return sent


async def loop(settings: Settings, engine_factory, period: float = 2.0) -> None:
    """The API's background task."""
    rec = Reconciler(settings)
    while True:
        with contextlib.suppress(Exception):  # a DB or broker hiccup must not end the loop

            def once() -> None:
                rec.tick(lambda: Session(engine_factory()))

            await asyncio.to_thread(once)
        await asyncio.sleep(period)
