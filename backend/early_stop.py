"""Early stop of hopeless sweep runs: non-finite loss or metric, or loss above k x the sweep's median."""

from __future__ import annotations

import math

import numpy as np
from sqlmodel import Session, select

from backend import alerting, queueing
from backend.core.pubsub import Publisher
from backend.models import FINAL_STATUSES, MetricPoint, Run, Sweep


def stop_early(session: Session, pub: Publisher, run: Run, kind: str, step: int | None, message: str) -> bool:
    """Mark the run stopped early (reason + alert of `kind`) and ask its worker to stop; once per run."""
    if run.stop_reason or run.status in FINAL_STATUSES:
        return False
    run.stop_reason = f"{kind}: {message}"
    if run.status == "running":
        run.cancel_requested = True  # the next heartbeat stops it (checkpoint, status cancelled)
    session.add(run)
    alerting.open_alert(
        session, pub, run.id, kind, "early_stop", step, f"stopped early by sweep {run.sweep_id}: {message}"
    )
    session.commit()
    pub.publish("status", run.id, {"status": run.status, "stop_reason": run.stop_reason})
    return True


def check_points(session: Session, pub: Publisher, run: Run, rows: list[dict]) -> None:
    """Called on metric ingest: non-finite loss/metric, or loss above k x the sweep median for `patience` points."""
    if run.sweep_id is None or run.stop_reason or run.status != "running":
        return
    sweep = session.get(Sweep, run.sweep_id)
    es = sweep.early_stop if sweep else {}
    if not es.get("enabled"):
        return
    watched = (es["key"], sweep.metric)
    for r in rows:
        v = r["value"]
        if r["key"] in watched and (v is None or not math.isfinite(v)):
            kind = "nan" if v is None else "inf"
            stop_early(session, pub, run, kind, r["step"], f"{r['key']} went non-finite at step {r['step']}")
            return
    if any(r["key"] == es["key"] for r in rows):
        _check_divergence(session, pub, run, sweep, es)


def _check_divergence(session: Session, pub: Publisher, run: Run, sweep: Sweep, es: dict) -> None:
    M = MetricPoint
    mine = session.exec(
        select(M.step, M.value)
        .where(M.run_id == run.id, M.key == es["key"])
        .order_by(M.step.desc())
        .limit(es["patience"])
    ).all()
    if len(mine) < es["patience"]:
        return
    members = session.exec(
        select(Run.id, Run.parent_id).where(Run.sweep_id == sweep.id).order_by(Run.id)
    ).all()
    replaced = queueing.replacements(members)  # a resumed run's parent holds the same history: count it once
    others = [r.id for r in members if r.id != run.id and r.id not in replaced]
    rows = session.exec(
        select(M.step, M.value).where(
            M.run_id.in_(others), M.key == es["key"], M.step.in_([s for s, _ in mine])
        )
    ).all()
    by_step: dict[int, list[float]] = {}
    for s, v in rows:
        if v is not None and math.isfinite(v):
            by_step.setdefault(s, []).append(v)
    worst = None
    for s, v in mine:
        vals = [*by_step.get(s, []), v]  # the median of every sweep run at this very step, this one included
        if len(vals) < es["min_runs"]:
            return
        med = float(np.median(vals))
        if med <= 0 or v <= es["k"] * med:  # a ratio to a non-positive median means nothing
            return
        worst = worst or (s, v, med)
    s, v, med = worst
    msg = (
        f"{es['key']} {v:.4g} > {es['k']:g} x sweep median {med:.4g} at step {s} for {es['patience']} points"
    )
    stop_early(session, pub, run, "divergence", s, msg)


def check_alert(
    session: Session, pub: Publisher, run: Run, kind: str, step: int | None, message: str
) -> None:
    """Called when a worker reports a NaN/Inf alert: a sweep run that went non-finite is stopped early."""
    if run.sweep_id is not None and kind in ("nan", "inf"):
        sweep = session.get(Sweep, run.sweep_id)
        if sweep is not None and sweep.early_stop.get("enabled"):
            stop_early(session, pub, run, kind, step, message or "non-finite values")
