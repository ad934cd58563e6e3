"""Sweeps: expand a grid/random space, validate every configuration, schedule under the parallel limit, cancel,
and promote the best configurations to the next tier (ranking: leaderboard.py; early stop: early_stop.py)."""

from __future__ import annotations

import itertools
import math
import random as pyrandom
from typing import Any

from sqlmodel import Session, select

from aime_core import config as C
from backend import crud, queueing
from backend.core.pubsub import Publisher
from backend.core.settings import Settings
from backend.leaderboard import leaderboard
from backend.models import Run, RunCreate, Sweep, SweepCreate, utcnow

RANDOM_KINDS = ("choice", "uniform", "loguniform", "int")
NOT_SWEEPABLE = ("seed", "tier", "preset", "checkpoint_dir", "resume")  # seeds/tier have their own fields
MAX_RUNS = 1000
EARLY_STOP_DEFAULTS = {"k": 3.0, "patience": 3, "key": "loss", "min_runs": 3}
TIER3_SEEDS = [1, 2, 3, 4, 5]


class SweepError(ValueError):
    """A sweep request is wrong; `detail` is the 422 body (field, message, and the configuration when known)."""

    def __init__(self, field: str, message: str, **extra: Any):
        super().__init__(f"{field}: {message}")
        self.detail = {"field": field, "message": message, "error": f"{field}: {message}", **extra}


# ---------------------------------------------------------------------------------------------------------------
# Expansion


def _check_field(name: str, where: str) -> None:
    fields = C.field_names(C.TrainConfig)
    if name in NOT_SWEEPABLE:
        raise SweepError(
            name, f"cannot be searched in `{where}` (use `seeds` for seeds and `tier` of the base)"
        )
    if name not in fields:
        raise SweepError(name, f"unknown field in `{where}`; allowed: {', '.join(sorted(fields))}")


def _sample(name: str, spec: Any, rng: pyrandom.Random) -> Any:
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in RANDOM_KINDS:
        raise SweepError(
            name, f"random spec must be one of {{kind: [..]}} with kind in {', '.join(RANDOM_KINDS)}"
        )
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SweepError(name, "choice needs a non-empty list of values")
        return rng.choice(args)
    if not isinstance(args, list) or len(args) != 2 or not all(isinstance(a, int | float) for a in args):
        raise SweepError(name, f"{kind} needs [low, high] numbers, got {args!r}")
    lo, hi = args
    if lo > hi:
        raise SweepError(name, f"{kind} needs low <= high, got {args!r}")
    if kind == "uniform":
        return rng.uniform(lo, hi)
    if kind == "int":
        return rng.randint(int(lo), int(hi))
    if lo <= 0:
        raise SweepError(name, f"loguniform needs 0 < low <= high, got {args!r}")
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def expand(grid: dict[str, list], random: dict[str, Any], sweep_seed: int) -> list[dict[str, Any]]:
    """Every configuration: the grid's product, times `count` random draws (seeded) when `random` is given."""
    for name, values in grid.items():
        _check_field(name, "grid")
        if not isinstance(values, list) or not values:
            raise SweepError(name, "grid values must be a non-empty list")
    random = dict(random)
    count = random.pop("count", None)
    if random and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise SweepError("count", f"random search needs an integer count >= 1, got {count!r}")
    for name in random:
        _check_field(name, "random")
        if name in grid:
            raise SweepError(name, "is in both grid and random; pick one")
    rng = pyrandom.Random(sweep_seed)
    draws = (
        [{n: _sample(n, s, rng) for n, s in random.items()} for _ in range(count or 1)] if random else [{}]
    )
    combos = [dict(zip(grid, vals, strict=True)) for vals in itertools.product(*grid.values())]
    configs = [{**g, **d} for g in combos for d in draws]
    if not configs or configs == [{}]:
        raise SweepError(
            "grid", "the search space is empty: give `grid` and/or `random` with at least one field"
        )
    return configs


def _launch(base: RunCreate, params: dict[str, Any], seed: int) -> RunCreate:
    return base.model_copy(update={"overrides": {**base.overrides, **params}, "seed": seed, "seeds": None})


def _early_stop(value: dict | bool) -> dict:
    if value is False:
        return {"enabled": False}
    es = {**EARLY_STOP_DEFAULTS, **(value if isinstance(value, dict) else {}), "enabled": True}
    unknown = set(es) - set(EARLY_STOP_DEFAULTS) - {"enabled"}
    if unknown:
        raise SweepError(
            "early_stop", f"unknown keys {sorted(unknown)}; allowed: {', '.join(EARLY_STOP_DEFAULTS)}"
        )
    if not isinstance(es["k"], int | float) or es["k"] <= 1:
        raise SweepError("early_stop", f"k must be a number > 1, got {es['k']!r}")
    if not isinstance(es["patience"], int) or es["patience"] < 1 or es["min_runs"] < 2:
        raise SweepError("early_stop", "patience must be an integer >= 1 and min_runs >= 2")
    return es


# ---------------------------------------------------------------------------------------------------------------
# Creation and scheduling


def create_sweep(
    session: Session,
    settings: Settings,
    pub: Publisher,
    body: SweepCreate,
    configs: list[dict[str, Any]] | None = None,
    parent: Sweep | None = None,
    promotion: dict | None = None,
) -> Sweep:
    """Validate every configuration x seed through resolve_train, then create the runs held and release `parallel`."""
    if body.base.kind != "train":
        raise SweepError("base.kind", "sweeps train models: base.kind must be `train`")
    if not body.seeds or len(set(body.seeds)) != len(body.seeds):
        raise SweepError("seeds", f"give a non-empty list of distinct seeds, got {body.seeds!r}")
    if not body.metric:
        raise SweepError("metric", "name the metric key to rank by, e.g. eval/rollout_mse")
    early = _early_stop(body.early_stop)
    params_list = configs if configs is not None else expand(body.grid, body.random, body.sweep_seed)
    if len(params_list) * len(body.seeds) > MAX_RUNS:
        n = len(params_list) * len(body.seeds)
        raise SweepError("grid", f"{n} runs is more than the {MAX_RUNS} a sweep may create; shrink the space")
    keyed = [{"key": f"c{i}", "params": p} for i, p in enumerate(params_list)]
    resolved = []
    for c in keyed:  # all valid before anything is created or queued
        for s in body.seeds:
            try:
                resolved.append((c, crud.resolve_launch(settings, _launch(body.base, c["params"], s), s)))
            except C.ConfigError as exc:
                raise SweepError(
                    exc.field, exc.message, config=c["key"], params=c["params"], seed=s
                ) from None
    sweep = Sweep(
        name=body.name,
        tier=body.base.tier,
        base=body.base.model_dump(),
        grid=body.grid,
        random=body.random,
        sweep_seed=body.sweep_seed,
        seeds=list(body.seeds),
        metric=body.metric,
        mode=body.mode,
        parallel=body.parallel,
        early_stop=early,
        configs=keyed,
        parent_id=parent.id if parent else None,
        promotion=promotion or {},
    )
    session.add(sweep)
    session.flush()
    sweep.name = (
        sweep.name or f"sweep {sweep.id}: tier {sweep.tier}, {len(keyed)} configs x {len(body.seeds)} seeds"
    )
    picks = {p["key"]: p for p in (promotion or {}).get("picks", [])}
    for c, cfg in resolved:
        run = queueing.new_run("train", cfg, [*body.base.tags, f"sweep:{sweep.id}"], body.base.notes)
        run.sweep_id, run.sweep_config, run.held = sweep.id, c["key"], True
        run.group_id = f"sweep{sweep.id}-{c['key']}"
        if c["key"] in picks:
            p = picks[c["key"]]
            run.lineage = {k: p[k] for k in ("sweep_id", "config", "rank", "runs", "mean")}
        session.add(run)
        session.flush()
        queueing.set_run_dir(settings, run, "checkpoint_dir" in body.base.overrides)
    session.commit()
    schedule(session, settings, pub, sweep)
    session.refresh(sweep)
    return sweep


def schedule(session: Session, settings: Settings, pub: Publisher, sweep: Sweep) -> list[int]:
    """Queue held runs under the sweep's parallel limit (backend/queueing.py decides)."""
    return queueing.schedule_sweep(session, settings, pub, sweep)


def cancel_sweep(session: Session, pub: Publisher, sweep: Sweep) -> Sweep:
    """Held and queued runs never start; running ones checkpoint and stop."""
    if sweep.status != "running":
        raise crud.Conflict(f"sweep {sweep.id} already {sweep.status}")
    sweep.status, sweep.finished_at = "cancelled", utcnow()
    session.add(sweep)
    session.commit()
    for run in session.exec(select(Run).where(Run.sweep_id == sweep.id)).all():
        if run.status in ("queued", "running"):
            run.held = False
            crud.cancel_run(session, pub, run)
    session.refresh(sweep)
    return sweep


# ---------------------------------------------------------------------------------------------------------------
# Promotion and lineage


def promote(session: Session, settings: Settings, pub: Publisher, sweep: Sweep, body: Any) -> Sweep:
    """A new sweep at the next tier with the best `top_k` configurations (only the varied fields carry over)."""
    tier = body.tier if body.tier is not None else sweep.tier + 1
    if tier not in C.TIERS or tier <= sweep.tier:
        raise SweepError("tier", f"promotion goes up a tier: {sweep.tier + 1}..{max(C.TIERS)}, got {tier}")
    board = [r for r in leaderboard(session, sweep) if r["rank"] is not None]
    if not board:
        raise crud.Conflict(f"sweep {sweep.id} has no configuration with a finite {sweep.metric} yet")
    picks = board[: body.top_k]
    seeds = body.seeds or (TIER3_SEEDS if tier == 3 else list(sweep.seeds))
    base = RunCreate.model_validate(sweep.base)
    preset = base.preset if body.preset == "same" else body.preset
    # The next tier's preset for every field the sweep did not vary: drop the base's own overrides and env.
    new_base = RunCreate(
        kind="train",
        tier=tier,
        preset=preset,
        synthetic=base.synthetic,
        overrides=dict(body.overrides),
        tags=base.tags,
    )
    configs = [p["params"] for p in picks]
    promotion = {
        "from_sweep": sweep.id,
        "top_k": body.top_k,
        "picks": [
            {
                "key": f"c{i}",
                "sweep_id": sweep.id,
                "config": p["key"],
                "rank": p["rank"],
                "runs": p["runs"],
                "mean": p["mean"],
            }
            for i, p in enumerate(picks)
        ],
    }
    new = SweepCreate(
        base=new_base,
        seeds=seeds,
        metric=sweep.metric,
        mode=sweep.mode,
        parallel=body.parallel or sweep.parallel,
        early_stop={k: v for k, v in sweep.early_stop.items() if k != "enabled"}
        if sweep.early_stop.get("enabled")
        else False,
        name=f"sweep {sweep.id} top {len(picks)} at tier {tier}",
    )
    return create_sweep(session, settings, pub, new, configs=configs, parent=sweep, promotion=promotion)


def describe(session: Session, sweep: Sweep, with_runs: bool = True) -> dict[str, Any]:
    """The sweep with its leaderboard, runs, parent and children (lineage both ways)."""
    out = sweep.model_dump()
    runs = session.exec(select(Run).where(Run.sweep_id == sweep.id).order_by(Run.id)).all()
    out["counts"] = {s: sum(r.status == s for r in runs) for s in {r.status for r in runs}}
    out["counts"]["held"] = sum(r.held and r.status == "queued" for r in runs)
    out["total_runs"] = len(runs)
    if with_runs:
        keep = (
            "id",
            "name",
            "status",
            "seed",
            "sweep_config",
            "group_id",
            "held",
            "stop_reason",
            "error",
            "latest",
            "lineage",
            "progress",
            "parent_id",
        )
        replaced = queueing.replacements(runs)
        out["runs"] = [{k: getattr(r, k) for k in keep} | {"replaced_by": replaced.get(r.id)} for r in runs]
        out["leaderboard"] = leaderboard(session, sweep)
        children = session.exec(select(Sweep).where(Sweep.parent_id == sweep.id).order_by(Sweep.id)).all()
        out["children"] = [
            {"id": c.id, "tier": c.tier, "name": c.name, "picks": c.promotion.get("picks", [])}
            for c in children
        ]
        out["varied"] = sorted({k for c in sweep.configs for k in c["params"]})
    return out
