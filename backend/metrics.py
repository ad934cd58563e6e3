"""Metric points: batched idempotent ingest with NaN/Inf alerts, and reads (keys, downsampled, exact)."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from sqlalchemy import case, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from aime_core import jsonnum
from backend import crud, early_stop
from backend.core.pubsub import Publisher
from backend.models import MetricPoint, PointIn, Run

FINITE_LIMIT = 1.0e308  # |value| above this is +-Inf; NaN is stored as NULL
CHUNK = 1000  # rows per INSERT (SQLite allows 32766 bound variables)

# Process-wide ingest counter for /metrics (points, and a one-minute window for the rate).
INGESTED = {"points": 0}
_WINDOW: deque[tuple[float, int]] = deque()


parse_value = jsonnum.decode  # JSON has no NaN/Inf: "nan", "inf", "-inf" (any case) and null (= NaN)
json_value = jsonnum.encode_number  # the stored value as JSON: numbers, or "nan"/"inf"/"-inf"


def ingest(session: Session, pub: Publisher, run: Run, points: list[PointIn]) -> dict[str, int]:
    """Upsert a batch (a re-sent batch changes nothing), update the run's latest values, open NaN/Inf alerts.

    Rows go in one canonical order (key, step), so concurrent batches to one run lock index entries in the
    same order and cannot deadlock on Postgres; a deadlock or serialization failure that happens anyway (other
    writers of the run row) is retried a few times on a fresh transaction."""
    now = time.time()
    by_id: dict[tuple[str, int], dict] = {}
    for p in points:  # one row per (key, step): the last one wins, as a re-send would
        v = parse_value(p.value)
        by_id[(p.key, p.step)] = dict(
            run_id=run.id,
            key=p.key,
            step=p.step,
            value=None if math.isnan(v) else v,
            wall_time=p.time or now,
        )
    rows = [by_id[k] for k in sorted(by_id)]
    run_id = run.id
    for attempt in range(5):
        try:
            return _ingest_rows(session, pub, run, rows, now)
        except OperationalError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in ("40P01", "40001") or attempt == 4:  # deadlock_detected, serialization_failure
                raise
            session.rollback()
            time.sleep(0.05 * (attempt + 1))
            run = session.get(Run, run_id)
    raise AssertionError("unreachable")


def _ingest_rows(session: Session, pub: Publisher, run: Run, rows: list[dict], now: float) -> dict[str, int]:
    alerts = 0
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(MetricPoint)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "key", "step"],
        set_={"value": stmt.excluded.value, "wall_time": stmt.excluded.wall_time},
    )
    if rows:  # executemany: SQLAlchemy batches it ("insertmanyvalues") without compiling a huge statement
        session.connection().execute(stmt, rows)

    latest = dict(run.latest or {})
    for r in rows:
        old = latest.get(r["key"])
        if old is None or r["step"] >= old[0]:
            latest[r["key"]] = [r["step"], json_value(r["value"])]
        if r["value"] is None or abs(r["value"]) > FINITE_LIMIT:
            kind = "nan" if r["value"] is None else "inf"
            text = f"{r['key']} is {json_value(r['value'])} at step {r['step']}"
            alerts += crud.open_alert(session, pub, run.id, kind, r["key"], r["step"], text)
    run.latest = latest
    session.add(run)
    session.commit()
    early_stop.check_points(session, pub, run, rows)  # early stop of hopeless sweep runs

    INGESTED["points"] += len(rows)
    _WINDOW.append((now, len(rows)))
    while _WINDOW and _WINDOW[0][0] < now - 60:
        _WINDOW.popleft()
    live = [{"key": r["key"], "step": r["step"], "value": json_value(r["value"])} for r in rows]
    pub.publish("metrics", run.id, {"points": live})
    return {"points": len(rows), "alerts": alerts}


def ingest_rate() -> float:
    """Points per second over the last minute."""
    now = time.time()
    return sum(n for t, n in _WINDOW if t >= now - 60) / 60.0


def keys(session: Session, run_id: int) -> list[dict[str, Any]]:
    """Each key with its point count, step range and last value."""
    M = MetricPoint
    rows = session.exec(
        select(M.key, func.count(), func.min(M.step), func.max(M.step))
        .where(M.run_id == run_id)
        .group_by(M.key)
    ).all()
    run = session.get(Run, run_id)
    latest = run.latest if run else {}
    return [
        {"key": k, "count": n, "step_min": lo, "step_max": hi, "last": (latest.get(k) or [None, None])[1]}
        for k, n, lo, hi in sorted(rows)
    ]


def _where(run_id: int, key: str, step_min: int | None, step_max: int | None) -> list[Any]:
    M = MetricPoint
    cond = [M.run_id == run_id, M.key == key]
    if step_min is not None:
        cond.append(M.step >= step_min)
    if step_max is not None:
        cond.append(M.step <= step_max)
    return cond


def exact(
    session: Session, run_id: int, key: str, step_min=None, step_max=None, offset=0, limit=10000
) -> dict:
    """Every point in step order, paged."""
    M = MetricPoint
    cond = _where(run_id, key, step_min, step_max)
    total = session.exec(select(func.count()).where(*cond)).one()
    rows = session.exec(
        select(M.step, M.value, M.wall_time).where(*cond).order_by(M.step).offset(offset).limit(limit)
    ).all()
    return {
        "key": key,
        "total": total,
        "offset": offset,
        "steps": [s for s, _, _ in rows],
        "values": [json_value(v) for _, v, _ in rows],
        "wall_times": [w for _, _, w in rows],
    }


def downsample(session: Session, run_id: int, key: str, buckets: int, step_min=None, step_max=None) -> dict:
    """At most `buckets` buckets by step: min and max of the finite values, the last value, and every step whose
    value was NaN/Inf (never dropped, however many points a bucket holds)."""
    M = MetricPoint
    cond = _where(run_id, key, step_min, step_max)
    n, lo, hi = session.exec(select(func.count(), func.min(M.step), func.max(M.step)).where(*cond)).one()
    out: dict[str, Any] = {"key": key, "count": n, "buckets": 0, "step": [], "min": [], "max": [], "last": []}
    out.update(first_step=[], last_step=[], n=[], nonfinite={"steps": [], "values": []})
    if not n:
        return out
    span = hi - lo + 1
    bucket = ((M.step - lo) * buckets) // span  # integer division in SQLite and Postgres
    finite = case((func.abs(M.value) < FINITE_LIMIT, M.value), else_=None)
    rows = session.exec(
        select(
            bucket.label("b"),
            func.count(),
            func.min(M.step),
            func.max(M.step),
            func.min(finite),
            func.max(finite),
            func.max(M.wall_time),  # the dashboard's compare page plots against wall time
        )
        .where(*cond)
        .group_by("b")
        .order_by("b")
    ).all()
    last_steps = [r[3] for r in rows]
    last_vals = {}
    for i in range(0, len(last_steps), CHUNK):
        part = last_steps[i : i + CHUNK]
        last_vals.update(session.exec(select(M.step, M.value).where(*cond, M.step.in_(part))).all())
    out["wall"] = [r[6] for r in rows]  # latest wall time (s since epoch) of each bucket
    for _b, count, s0, s1, vmin, vmax, _wall in rows:
        out["first_step"].append(s0)
        out["last_step"].append(s1)
        out["step"].append(s1)
        out["n"].append(count)
        out["min"].append(vmin)
        out["max"].append(vmax)
        out["last"].append(json_value(last_vals.get(s1)))
    out["buckets"] = len(rows)
    bad = session.exec(
        select(M.step, M.value).where(*cond, or_null(M.value)).order_by(M.step).limit(100000)
    ).all()
    out["nonfinite"] = {"steps": [s for s, _ in bad], "values": [json_value(v) for _, v in bad]}
    return out


def or_null(col):
    return (col.is_(None)) | (func.abs(col) >= FINITE_LIMIT)


def aggregate(session: Session, run_ids: list[int], key: str, align: str = "common") -> dict[str, Any]:
    """Mean and std (ddof=0) over runs at each step from every stored point; `common`: steps all runs have
    (with a finite value), `all`: every step, over the runs with a finite value there (`n` says how many)."""
    M = MetricPoint
    rows = session.exec(
        select(M.run_id, M.step, M.value).where(M.run_id.in_(run_ids), M.key == key).order_by(M.step)
    ).all()
    by_step: dict[int, list[float]] = {}
    for _rid, step, value in rows:
        if value is not None and abs(value) < FINITE_LIMIT:
            by_step.setdefault(step, []).append(value)
    present = {rid for rid, _, _ in rows}
    need = len(present) if align == "common" else 1
    steps = [s for s in sorted(by_step) if len(by_step[s]) >= max(need, 1)]
    means = [math.fsum(by_step[s]) / len(by_step[s]) for s in steps]
    stds = [
        math.sqrt(math.fsum((v - m) ** 2 for v in by_step[s]) / len(by_step[s]))
        for s, m in zip(steps, means, strict=True)
    ]
    return {
        "key": key,
        "runs": sorted(present),
        "missing": sorted(set(run_ids) - present),
        "align": align,
        "steps": steps,
        "mean": means,
        "std": stds,
        "n": [len(by_step[s]) for s in steps],
    }
