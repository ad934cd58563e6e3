"""The downsampled read (summary tiles for long metrics, one grouped pass for short ones) equals a direct
computation over every point, NaN/Inf included, on SQLite and Postgres; migration 0004 backfills the tiles."""

from __future__ import annotations

import math
import random

from sqlalchemy import text

FINITE_LIMIT = 1.0e308


def _json(v: float):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def reference(points: dict[int, tuple[float, float]], buckets: int, step_min=None, step_max=None) -> dict:
    """The answer computed in Python from every (step -> (value, wall time)) point."""
    steps = sorted(
        s for s in points if (step_min is None or s >= step_min) and (step_max is None or s <= step_max)
    )
    if not steps:
        return {"count": 0, "buckets": 0, "n": [], "nonfinite": {"steps": [], "values": []}}
    lo, hi = steps[0], steps[-1]
    span = hi - lo + 1
    out: dict[int, dict] = {}
    for s in steps:
        v, w = points[s]
        b = out.setdefault((s - lo) * buckets // span, {"n": 0, "first": s, "vals": [], "wall": w})
        b["n"] += 1
        b["last"] = s
        b["wall"] = max(b["wall"], w)
        if not math.isnan(v) and abs(v) < FINITE_LIMIT:
            b["vals"].append(v)
    bs = [out[k] for k in sorted(out)]
    bad = [s for s in steps if math.isnan(points[s][0]) or abs(points[s][0]) >= FINITE_LIMIT]
    return {
        "count": len(steps),
        "buckets": len(bs),
        "n": [b["n"] for b in bs],
        "first_step": [b["first"] for b in bs],
        "last_step": [b["last"] for b in bs],
        "step": [b["last"] for b in bs],
        "min": [min(b["vals"]) if b["vals"] else None for b in bs],
        "max": [max(b["vals"]) if b["vals"] else None for b in bs],
        "last": [_json(points[b["last"]][0]) for b in bs],
        "wall": [b["wall"] for b in bs],
        "nonfinite": {"steps": bad, "values": [_json(points[s][0]) for s in bad]},
    }


def _check(got: dict, want: dict) -> None:
    for name, value in want.items():
        assert got[name] == value, name


def _series(rng: random.Random, steps) -> dict[int, tuple[float, float]]:
    special = [math.nan, math.inf, -math.inf, 1.5e308]  # 1.5e308 counts as Inf (|v| >= 1e308), as before
    return {
        s: (rng.choice(special) if rng.random() < 0.02 else rng.uniform(-5, 5), 1.7e9 + rng.random() * 1e4)
        for s in steps
    }


def _send(client, rid: int, key: str, points: dict, batch: int) -> None:
    items = list(points.items())
    for i in range(0, len(items), batch):
        body = [
            {"key": key, "step": s, "value": _json(v) if not math.isfinite(v) else v, "time": w}
            for s, (v, w) in items[i : i + batch]
        ]
        r = client.post(f"/api/runs/{rid}/metrics", json={"points": body}, headers=client.h)
        assert r.status_code == 200, r.text


def _new_run(client) -> int:
    return client.post(
        "/api/runs",
        json={"kind": "collect", "tier": 1, "preset": "debug", "synthetic": True},
        headers=client.h,
    ).json()["id"]


def test_downsample_equals_direct_computation(client):
    rng = random.Random(15)
    rid = _new_run(client)
    dense = _series(rng, range(3, 4003))  # 4,000 steps in a row
    sparse = _series(rng, sorted(rng.sample(range(0, 30_000), 3000)))  # gaps of every size
    _send(client, rid, "dense", dense, 333)  # batches cut tiles anywhere
    _send(client, rid, "sparse", sparse, 1000)
    # Re-sent points with other values: the tiles they fall in must be recomputed (a max can go down).
    for series, key in ((dense, "dense"), (sparse, "sparse")):
        again = {s: (rng.uniform(-0.1, 0.1), series[s][1]) for s in rng.sample(sorted(series), 300)}
        again[max(series)] = (math.nan, series[max(series)][1])
        series.update(again)
        _send(client, rid, key, dict(sorted(again.items())), 150)

    for key, series in (("dense", dense), ("sparse", sparse)):
        top = max(series)
        zooms = [(None, None), (17, top - 5), (1000, 1000 + top // 3), (0, 63), (top // 2, None)]
        for buckets in (1, 3, 10, 31, 62, 200, 1000):  # up to 62: tiles for the dense key; above: every point
            for step_min, step_max in zooms:
                params = {"buckets": buckets}
                params |= {"step_min": step_min} if step_min is not None else {}
                params |= {"step_max": step_max} if step_max is not None else {}
                got = client.get(f"/api/runs/{rid}/metrics/{key}", params=params).json()
                _check(got, reference(series, buckets, step_min, step_max))

    # Deleting the run removes its tiles with its points.
    assert client.delete(f"/api/runs/{rid}", headers=client.h).status_code in (200, 204)
    from backend.core.db import get_engine

    with get_engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM metrictile")).scalar() == 0


def test_migration_0004_backfills_tiles(db_env, tmp_path, monkeypatch):
    """Points stored before 0004 get their tiles on upgrade; downgrade and upgrade again both work."""
    from alembic import command
    from alembic.config import Config

    from backend import metrics
    from backend.core.db import MIGRATIONS, make_engine
    from backend.core.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_env["AIME_DATABASE_URL"],
        database_schema=db_env["AIME_DATABASE_SCHEMA"],
    )
    engine = make_engine(settings)

    def alembic(fn, rev):
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            fn(cfg, rev)

    alembic(command.upgrade, "0003")
    rng = random.Random(4)
    series = _series(rng, range(0, 5000, 2))
    from sqlmodel import Session

    from backend.models import Run

    with Session(engine) as session:
        run = Run(kind="collect", name="m", tier=1, preset="debug", domain="cartpole", task="swingup")
        session.add(run)
        session.commit()
        rid = run.id
    rows = [
        {"r": rid, "s": s, "v": None if math.isnan(v) else v, "w": w} for s, (v, w) in sorted(series.items())
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO metricpoint (run_id, key, step, value, wall_time) VALUES (:r, 'm', :s, :v, :w)"
            ),
            rows,
        )
    for _ in range(2):
        alembic(command.upgrade, "head")
        with Session(engine) as session:
            for buckets in (5, 30, 500):
                _check(metrics.downsample(session, rid, "m", buckets), reference(series, buckets))
        alembic(command.downgrade, "0003")
    engine.dispose()


def test_long_metric_read_right_after_its_ingest_is_fast(client):
    """Charted before the database has statistics on the new rows (Postgres's autovacuum analyzes later): the
    reads must not depend on them. Planned without statistics, the cut tiles' points once took a scan of the whole
    range per tile and the buckets' last values a scan of the metric (135 s for 1M points; here 100k: ~10 s)."""
    import time

    from sqlmodel import Session

    from backend import metrics
    from backend.core.db import get_engine
    from backend.core.pubsub import Publisher
    from backend.core.settings import get_settings

    rid = _new_run(client)
    n = 100_000
    with get_engine().connect() as conn:
        for i in range(0, n, 10_000):
            rows = [
                ("long", s, math.nan if s == n // 2 else (s % 97) * 0.5, 1.7e9) for s in range(i, i + 10_000)
            ]
            metrics.store(
                conn,
                Publisher(get_settings()),
                rid,
                [(k, s, None if v != v else v, w) for k, s, v, w in rows],
            )
    for step_min, step_max in ((None, None), (60_000, 99_999)):
        with Session(get_engine()) as session:
            t0 = time.perf_counter()
            got = metrics.downsample(session, rid, "long", 1000, step_min, step_max)
            took = time.perf_counter() - t0
        assert got["buckets"] == 1000 and got["nonfinite"]["steps"] == ([n // 2] if step_min is None else [])
        assert took < 3.0, took


def test_steps_up_to_the_int64_limit_chart_without_overflow(client):
    # Found by the contract fuzzer: steps run to 2^63 - 1, and the exact bucket arithmetic (step - lo) * buckets
    # overflowed 64-bit integers (a 500). Such spans are bucketed on coarsened steps: every point still counted,
    # every NaN/Inf step still listed, the first and last steps exact.
    rid = _new_run(client)
    top = 2**63 - 1
    steps = [0, 1, 2**40, 2**62, top - 1, top]
    points = {s: (float(i), 1.7e9) for i, s in enumerate(steps)}
    points[2**62] = (math.nan, 1.7e9)
    _send(client, rid, "huge", points, 10)
    for buckets in (1, 2, 1000):
        for params in ({}, {"step_min": 1}, {"step_max": 2**62}):
            r = client.get(f"/api/runs/{rid}/metrics/huge", params={"buckets": buckets} | params)
            assert r.status_code == 200, r.text
            got = r.json()
            want = [s for s in steps if s >= params.get("step_min", 0) and s <= params.get("step_max", top)]
            assert got["count"] == len(want) and sum(got["n"]) == len(want)
            assert 1 <= got["buckets"] <= buckets
            assert got["first_step"][0] == want[0] and got["last_step"][-1] == want[-1]
            assert got["nonfinite"]["steps"] == ([2**62] if 2**62 in want else [])
            assert got["first_step"] == sorted(got["first_step"])
