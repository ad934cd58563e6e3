"""A sweep's leaderboard: each configuration's metric at its runs' last stored step, mean ± std over seeds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import func
from sqlmodel import Session, select

from aime_core import jsonnum
from backend import queueing
from backend.models import MetricPoint, Run, Sweep


def final_values(session: Session, run_ids: list[int], key: str) -> dict[int, tuple[int, float | None]]:
    """Each run's value of `key` at its last stored step (NaN stored as NULL comes back as None)."""
    if not run_ids:
        return {}
    M = MetricPoint
    last = (
        select(M.run_id, func.max(M.step).label("s"))
        .where(M.run_id.in_(run_ids), M.key == key)
        .group_by(M.run_id)
    ).subquery()
    rows = session.exec(
        select(M.run_id, M.step, M.value)
        .join(last, (M.run_id == last.c.run_id) & (M.step == last.c.s))
        .where(M.key == key)
    ).all()
    return {rid: (step, value) for rid, step, value in rows}


def leaderboard(session: Session, sweep: Sweep) -> list[dict[str, Any]]:
    """Configurations ranked by mean of the metric over seeds (runs stopped early, failed, or replaced by their
    retry or resume are left out)."""
    runs = session.exec(select(Run).where(Run.sweep_id == sweep.id).order_by(Run.id)).all()
    replaced = queueing.replacements(runs)
    values = final_values(session, [r.id for r in runs], sweep.metric)
    rows = []
    for c in sweep.configs:
        mine = [r for r in runs if r.sweep_config == c["key"]]
        counted = [
            r
            for r in mine
            if not r.stop_reason
            and r.status not in ("failed", "lost")
            and r.id in values
            and r.id not in replaced
        ]
        vals = [values[r.id][1] for r in counted]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        arr = np.array(vals, dtype=np.float64)
        rows.append(
            {
                "key": c["key"],
                "params": c["params"],
                "runs": [r.id for r in mine],
                "values": {
                    str(r.id): jsonnum.encode(values[r.id][1]) for r in counted if values[r.id][1] is not None
                },
                "steps": {str(r.id): values[r.id][0] for r in counted},
                "n": len(vals),
                "mean": float(arr.mean()) if len(vals) else None,
                "std": float(arr.std()) if len(vals) else None,  # population std (numpy's default, ddof=0)
                "done": sum(r.status == "succeeded" for r in mine),
                "stopped": sum(bool(r.stop_reason) for r in mine),
                "replaced": sorted(r.id for r in mine if r.id in replaced),
                "statuses": {s: sum(r.status == s for r in mine) for s in {r.status for r in mine}},
            }
        )
    sign = 1.0 if sweep.mode == "min" else -1.0
    rows.sort(key=lambda r: (r["mean"] is None, sign * r["mean"] if r["mean"] is not None else 0.0, r["key"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1 if r["mean"] is not None else None
    return rows
