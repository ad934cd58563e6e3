"""Metric points: batched idempotent ingest with NaN/Inf alerts, and reads (keys, downsampled, exact)."""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, case, func, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, select

from aime_core import jsonnum
from backend import alerting, early_stop
from backend.core.pubsub import Publisher
from backend.models import MetricPoint, PointIn, Run

FINITE_LIMIT = 1.0e308  # |value| above this is +-Inf; NaN is stored as NULL
CHUNK = 1000  # rows per INSERT (SQLite allows 32766 bound variables)
TILE = 32  # steps per summary tile (metrictile; migration 0004)
NONFINITE_SQL = (
    "value IS NULL OR abs(value) >= 1e308"  # the partial index ix_metric_nonfinite's text, verbatim
)
_FINITE = "CASE WHEN abs({v}) < 1e308 THEN {v} END"
# Recompute the tiles of steps a..b of one key from its points (a re-sent point may lower a max: no increments).
_TILES_SQL = (
    "INSERT INTO metrictile (run_id, key, tile, n, step_min, step_max, vmin, vmax, wall_max) "
    f"SELECT run_id, key, step / {TILE}, count(*), min(step), max(step), min({_FINITE.format(v='value')}), "
    f"max({_FINITE.format(v='value')}), max(wall_time) FROM metricpoint "
    f"WHERE run_id = :r AND key = :k AND step >= :a AND step <= :b GROUP BY run_id, key, step / {TILE} "
    "ON CONFLICT (run_id, key, tile) DO UPDATE SET n = excluded.n, step_min = excluded.step_min, "
    "step_max = excluded.step_max, vmin = excluded.vmin, vmax = excluded.vmax, wall_max = excluded.wall_max"
)
_TILES = {  # in each driver's own named parameter style
    "sqlite": _TILES_SQL,
    "postgresql": _TILES_SQL.replace(":r", "%(r)s")
    .replace(":k", "%(k)s")
    .replace(":a", "%(a)s")
    .replace(":b", "%(b)s"),
}

_SQLITE_UPSERT = (
    "INSERT INTO metricpoint (run_id, key, step, value, wall_time) VALUES (?, ?, ?, ?, ?) ON CONFLICT "
    "(run_id, key, step) DO UPDATE SET value = excluded.value, wall_time = excluded.wall_time"
)

_PG_UPSERT = (
    "INSERT INTO metricpoint (run_id, key, step, value, wall_time) SELECT %s::integer, * FROM unnest("
    "%s::varchar[], %s::bigint[], %s::float8[], %s::float8[]) ON CONFLICT (run_id, key, step) DO UPDATE SET "
    "value = excluded.value, wall_time = excluded.wall_time"
)
# Process-wide ingest counter for /metrics (points, and a one-minute window for the rate).
INGESTED = {"points": 0}
_WINDOW: deque[tuple[float, int]] = deque()


parse_value = jsonnum.decode  # JSON has no NaN/Inf: "nan", "inf", "-inf" (any case) and null (= NaN)
json_value = jsonnum.encode_number  # the stored value as JSON: numbers, or "nan"/"inf"/"-inf"

# The run's latest values merged with a batch's newest point per key (`patch`: key -> [step, value]) in the UPDATE
# itself: a key's entry is replaced only by a step at least as new, keys of other batches stay. A statement reads
# the row it updates after taking its lock, so two batches of one run written at once cannot lose each other's keys
# (a read in Python and a write back could: the second writer's map lacked the first's keys). The UPDATE is each
# batch's first statement: on Postgres its row lock makes the batches of one run go in turn (their tile refreshes
# see each other's points), on SQLite it takes the write lock.
_MERGE_LATEST = {
    "sqlite": (
        "UPDATE run SET latest = (SELECT json_group_object(k, json(v)) FROM ("
        "SELECT o.key AS k, CASE WHEN n.key IS NOT NULL AND json_extract(n.value, '$[0]') >= "
        "json_extract(o.value, '$[0]') THEN n.value ELSE o.value END AS v FROM json_each(run.latest) AS o "
        "LEFT JOIN json_each(?1) AS n ON n.key = o.key UNION ALL SELECT n.key, n.value FROM json_each(?1) AS n "
        "WHERE n.key NOT IN (SELECT key FROM json_each(run.latest)))) WHERE id = ?2 RETURNING sweep_id"
    ),
    "postgresql": (
        "UPDATE run SET latest = (SELECT coalesce(json_object_agg(k, v), '{}') FROM ("
        "SELECT o.key AS k, CASE WHEN n.key IS NOT NULL AND (n.value ->> 0)::numeric >= "
        "(o.value ->> 0)::numeric THEN n.value ELSE o.value END AS v FROM json_each(run.latest) AS o "
        "LEFT JOIN json_each(%(p)s::json) AS n ON n.key = o.key UNION ALL SELECT n.key, n.value FROM "
        "json_each(%(p)s::json) AS n WHERE n.key NOT IN (SELECT key FROM json_each(run.latest))) m) "
        "WHERE id = %(r)s RETURNING sweep_id"
    ),
}


class NoRun(LookupError):
    """The run does not exist (the route answers 404)."""


def _number(v: Any) -> float | None:
    """A validated point's value as stored: a float, None for NaN; ValueError for text that is no number."""
    if type(v) is float:
        return None if v != v else v
    if v is None:
        return None
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:  # an integer beyond the float range is +-Inf, as the JSON number 1e999 is
            return math.inf if v > 0 else -math.inf
    f = parse_value(v)
    return None if f != f else f


def prepare(points: Sequence[Mapping[str, Any]], now: float | None = None) -> list[tuple]:
    """(key, step, value or None for NaN, wall time) per validated point dict (models.PointDict), one per (key,
    step), the last one winning as a re-send would, sorted by (key, step). ValueError for a value that is text
    but no number."""
    now = time.time() if now is None else now
    by_id: dict[tuple[str, int], tuple] = {}
    for p in points:
        by_id[(p["key"], p["step"])] = (_number(p["value"]), p.get("time") or now)
    return [(k, s, v, w) for (k, s), (v, w) in sorted(by_id.items())]


def ingest(session: Session, pub: Publisher, run: Run, points: list[PointIn]) -> dict[str, int]:
    """`store` for PointIn models, on a connection of the session's engine (the route validates into plain dicts
    and calls prepare and store itself)."""
    bind = session.get_bind()
    assert run.id is not None
    with (bind if isinstance(bind, Engine) else bind.engine).connect() as conn:
        return store(conn, pub, run.id, prepare([p.model_dump() for p in points]))


def store(conn: Connection, pub: Publisher, run_id: int, rows: list[tuple]) -> dict[str, int]:
    """Upsert prepared rows (a re-sent batch changes nothing), merge the run's latest values, refresh its summary
    tiles, open NaN/Inf alerts, check early stop (runs in a sweep) and publish one live event; NoRun if there is
    no such run. One transaction on `conn`: a deadlock or serialization failure (other writers of the run row) is
    retried a few times on a fresh one."""
    for attempt in range(5):
        try:
            return _store(conn, pub, run_id, rows)
        except OperationalError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in ("40P01", "40001") or attempt == 4:  # deadlock_detected, serialization_failure
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _store(conn: Connection, pub: Publisher, run_id: int, rows: list[tuple]) -> dict[str, int]:
    alerts = 0
    live = []  # each value encoded once: for the latest values, the alert text and the live event
    patch: dict[str, list] = {}
    nonfinite: list[tuple] = []
    last_key = kj = None
    for key, step, value, _w in rows:  # sorted by (key, step): a key's last row is its newest
        if value is None:
            jv: Any = "nan"
        elif -FINITE_LIMIT <= value <= FINITE_LIMIT:
            jv = value
        else:
            jv = json_value(value)
        if key != last_key:
            last_key, kj = key, json.dumps(key)
        vj = repr(jv) if jv.__class__ is float else f'"{jv}"'  # json.dumps writes floats with float.__repr__
        live.append(f'{{"key": {kj}, "step": {step}, "value": {vj}}}')
        patch[key] = [step, jv]
        if (value is None or abs(value) > FINITE_LIMIT) and (not nonfinite or nonfinite[-1][0] != key):
            nonfinite.append((key, step, jv, "nan" if value is None else "inf"))  # a key's first only: one
            # open alert per key, a later point of the key would find the first one's alert
    dialect = conn.dialect.name
    with conn.begin():
        args = (json.dumps(patch), run_id) if dialect == "sqlite" else {"p": json.dumps(patch), "r": run_id}
        found = _driver(conn, _MERGE_LATEST[dialect], args).fetchone()
        if found is None:
            raise NoRun(run_id)
        sweep_id = found[0]
        if rows:
            if dialect == "sqlite":  # executemany of one prepared statement
                _driver(conn, _SQLITE_UPSERT, [(run_id, k, s, v, w) for k, s, v, w in rows], many=True)
            else:  # Postgres: one statement, the columns as four arrays
                _driver(conn, _PG_UPSERT, (run_id, *(list(c) for c in zip(*rows, strict=True))))
            refresh_tiles(conn, run_id, rows)
        if nonfinite:
            with Session(bind=conn) as session:  # in this transaction
                for key, step, jv, kind in nonfinite:
                    msg = f"{key} is {jv} at step {step}"
                    alerts += alerting.open_alert(session, pub, run_id, kind, key, step, msg)
                session.flush()
    if sweep_id is not None:  # early stop of hopeless sweep runs (a run in no sweep is not read again)
        with Session(conn.engine) as session:
            run = session.get(Run, run_id)
            if run is not None:
                dicts = [{"key": k, "step": s, "value": v} for k, s, v, _w in rows]
                early_stop.check_points(session, pub, run, dicts)

    now = time.time()
    INGESTED["points"] += len(rows)
    _WINDOW.append((now, len(rows)))
    while _WINDOW and _WINDOW[0][0] < now - 60:
        _WINDOW.popleft()
    # One round trip: the global and the run stream. The body is written here as json.dumps would write it.
    pub.publish_json("metrics", run_id, '"points": [' + ", ".join(live) + "]")
    return {"points": len(rows), "alerts": alerts}


def tile_ranges(rows: list[tuple]) -> list[dict]:
    """(key, first step, last step) of each run of consecutive tiles the (key, step)-sorted rows touch."""
    out: list[dict] = []
    for r in rows:
        key, t = r[0], r[1] // TILE
        if out and out[-1]["k"] == key and t <= out[-1]["b"] // TILE + 1:
            out[-1]["b"] = t * TILE + TILE - 1
        else:
            out.append({"k": key, "a": t * TILE, "b": t * TILE + TILE - 1})
    return out


def refresh_tiles(conn, run_id: int, rows: list[tuple]) -> None:
    """Bring the tiles the (key, step)-sorted rows fall in up to date with the stored points."""
    ranges = tile_ranges(rows)
    for p in ranges:
        p["r"] = run_id
    if ranges:
        _driver(conn, _TILES[conn.dialect.name], ranges, many=True)


def _driver(conn: Connection, sql: str, params: Any, many: bool = False) -> Any:
    """One statement on the driver's own cursor, in `conn`'s transaction (SQLAlchemy's execution context cost
    more than SQLite's execution of a one-point batch); errors raised as SQLAlchemy raises them (diskfull.py)."""
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        (cur.executemany if many else cur.execute)(sql, params)
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, params, exc, dbapi_error, dialect=conn.dialect) from exc
    return cur


def rebuild_tiles(conn, run_id: int) -> None:
    """All tiles of a run from its points (after a bulk copy of points, e.g. a resumed run's history)."""
    conn.execute(text("DELETE FROM metrictile WHERE run_id = :r"), {"r": run_id})
    finite = _FINITE.format(v="value")
    conn.execute(
        text(
            "INSERT INTO metrictile (run_id, key, tile, n, step_min, step_max, vmin, vmax, wall_max) "
            f"SELECT run_id, key, step / {TILE}, count(*), min(step), max(step), min({finite}), max({finite}), "
            f"max(wall_time) FROM metricpoint WHERE run_id = :r GROUP BY run_id, key, step / {TILE}"
        ),
        {"r": run_id},
    )


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
    value was NaN/Inf (never dropped, however many points a bucket holds).

    A bucket is steps lo + [ceil(i*span/buckets), ceil((i+1)*span/buckets)). When buckets span 2+ tiles (a long
    metric), a tile wholly inside one bucket is read from metrictile and only the points of tiles cut by a bucket
    edge (or by the zoom range) are read: about 2 * TILE points per bucket instead of all of them. The answer is
    the same as reading every point (tests/service/test_metric_tiles.py)."""
    M = MetricPoint
    cond = _where(run_id, key, step_min, step_max)
    out: dict[str, Any] = {"key": key, "count": 0, "buckets": 0, "step": [], "min": [], "max": [], "last": []}
    out.update(first_step=[], last_step=[], n=[], nonfinite={"steps": [], "values": []})
    # The first and the last step: one index seek each, written so (a planner without statistics yet, right
    # after a run's ingest, aggregated all 100k points of a zoom for a min() it took for a single row).
    lo = session.exec(select(M.step).where(*cond).order_by(M.step).limit(1)).first()
    if lo is None:
        return out
    hi = session.exec(select(M.step).where(*cond).order_by(M.step.desc()).limit(1)).one()
    span = hi - lo + 1
    # Steps run to 2^63 - 1: past 2^62 / buckets the exact bucket arithmetic would overflow 64-bit integers (a 500
    # found by the contract fuzzer). Such spans are bucketed on steps coarsened by an integer divisor first.
    coarse = (hi - lo) * buckets // 2**62 + 1 if (hi - lo) * buckets >= 2**62 else 0
    bucket = None  # the bucket of a point, when the points are grouped in one pass (not from the tiles)
    if coarse:
        bucket = ((M.step - lo) // coarse * buckets) // ((hi - lo) // coarse + 1)
    elif span >= 2 * TILE * buckets:
        rows = _tiled_buckets(session, run_id, key, buckets, lo, hi)
    else:
        bucket = ((M.step - lo) * buckets) // span  # integer division in SQLite and Postgres
    if bucket is not None:
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
    if session.get_bind().dialect.name == "postgresql":  # one array parameter rather than 1000, each step one
        # index lookup (LATERAL): `step = ANY(:steps)` took 4.4 s on a 1M-point metric without statistics yet
        sql = (
            "SELECT s.step, p.value FROM unnest(CAST(:steps AS bigint[])) AS s(step) CROSS JOIN LATERAL "
            "(SELECT q.value FROM metricpoint q WHERE q.run_id = :r AND q.key = :k AND q.step = s.step LIMIT 1) p"
        )
        args = {"r": run_id, "k": key, "steps": last_steps}
        last_vals.update(session.connection().execute(text(sql), args).all())
    else:
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
    out["count"] = sum(out["n"])
    out["buckets"] = len(rows)
    # The partial index ix_metric_nonfinite holds exactly these rows. SQLite is told to use it: with the points in
    # primary-key order (WITHOUT ROWID) its planner scanned the metric's whole range instead (0.22 s of a 1M-point
    # chart read).
    hint = " INDEXED BY ix_metric_nonfinite" if session.get_bind().dialect.name == "sqlite" else ""
    sql = f"SELECT step, value FROM metricpoint{hint} WHERE run_id = :r AND key = :k AND ({NONFINITE_SQL})"
    args: dict[str, Any] = {"r": run_id, "k": key}
    for name, op, bound in (("lo", ">=", step_min), ("hi", "<=", step_max)):
        if bound is not None:
            sql += f" AND step {op} :{name}"
            args[name] = bound
    bad = session.connection().execute(text(sql + " ORDER BY step LIMIT 100000"), args).all()
    out["nonfinite"] = {"steps": [s for s, _ in bad], "values": [json_value(v) for _, v in bad]}
    return out


def _tiled_buckets(session: Session, run_id: int, key: str, buckets: int, lo: int, hi: int) -> list[tuple]:
    """(bucket, count, first step, last step, finite min, finite max, latest wall time) per non-empty bucket, from
    the tiles wholly inside one bucket plus the points of the other tiles that overlap lo..hi."""
    span = hi - lo + 1
    b = "(({s} - :lo) * :nb) / :span"
    whole = (
        f"t.step_min >= :lo AND t.step_max <= :hi AND {b.format(s='t.step_min')} = {b.format(s='t.step_max')}"
    )
    where = "t.run_id = :r AND t.key = :k AND t.tile >= :t0 AND t.tile <= :t1"
    args = {"r": run_id, "k": key, "lo": lo, "hi": hi, "nb": buckets, "span": span, "t0": lo // TILE}
    args["t1"] = hi // TILE
    pg = session.get_bind().dialect.name == "postgresql"
    if pg:  # the planner cannot estimate the cut tiles and guesses
        session.connection().execute(
            text("SET LOCAL jit = off")
        )  # billions of rows: JIT compiling took 0.36 s
    from_tiles = (
        session.connection()
        .execute(
            text(
                f"SELECT {b.format(s='t.step_min')} AS b, sum(t.n), min(t.step_min), max(t.step_max), min(t.vmin), "
                f"max(t.vmax), max(t.wall_max) FROM metrictile t WHERE {where} AND {whole} GROUP BY 1"
            ),
            args,
        )
        .all()
    )
    finite = _FINITE.format(v="p.value")
    if pg:  # each cut tile's points by an index range of their own (LATERAL): with the constant lo..hi bounds
        # in reach, a planner without statistics yet (a run charted right after its ingest) scanned all lo..hi
        # points once per cut tile: 135 s instead of 40 ms for a 1M-point metric
        points = (
            "CROSS JOIN LATERAL (SELECT q.step, q.value, q.wall_time FROM metricpoint q WHERE q.run_id = t.run_id "
            "AND q.key = t.key AND q.step >= greatest(t.step_min, :lo) AND q.step <= least(t.step_max, :hi)) p "
            f"WHERE {where} AND NOT ({whole})"
        )
    else:  # SQLite: the tiles first, as written, each joined to its points through the (run, key, step) index
        points = (
            f"CROSS JOIN metricpoint p WHERE {where} AND NOT ({whole}) AND p.run_id = t.run_id AND p.key = t.key "
            "AND p.step >= t.step_min AND p.step <= t.step_max AND p.step >= :lo AND p.step <= :hi"
        )
    sql = (
        f"SELECT {b.format(s='p.step')} AS b, count(*), min(p.step), max(p.step), min({finite}), "
        f"max({finite}), max(p.wall_time) FROM metrictile t {points} GROUP BY 1"
    )
    from_points = session.connection().execute(text(sql), args).all()
    merged: dict[int, list] = {}
    for row in [*from_tiles, *from_points]:
        m = merged.get(row[0])
        if m is None:
            merged[row[0]] = list(row)
            continue
        m[1] += row[1]
        m[2], m[3] = min(m[2], row[2]), max(m[3], row[3])
        m[4] = row[4] if m[4] is None else m[4] if row[4] is None else min(m[4], row[4])
        m[5] = row[5] if m[5] is None else m[5] if row[5] is None else max(m[5], row[5])
        m[6] = max(m[6], row[6])
    return [tuple(merged[k]) for k in sorted(merged)]


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
