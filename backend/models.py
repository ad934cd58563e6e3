"""SQLModel tables (runs, datasets, metric points, alerts, artifacts, run events) and their API schemas."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, StringConstraints
from pydantic import Field as PField
from sqlalchemy import JSON, BigInteger, Column, Float, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

RUN_KINDS = ("collect", "train")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "lost")
FINAL_STATUSES = ("succeeded", "failed", "cancelled", "lost")
ALERT_KINDS = ("nan", "inf", "divergence", "lost", "oom")
ARTIFACT_KINDS = ("checkpoint", "video", "batch_dump", "log")

# Length limits on strings from HTTP (422 beyond; README "Security model"). Bodies as a whole: backend.security.
Key = Annotated[str, StringConstraints(min_length=1, max_length=200)]  # metric keys, sweep metric
Tag = Annotated[str, StringConstraints(max_length=64)]
Name = Annotated[str, StringConstraints(max_length=200)]  # names, presets, domains, tasks, hosts, kinds
Notes = Annotated[str, StringConstraints(max_length=10_000)]
PathStr = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
MAX_TAGS = 32


def utcnow() -> datetime:
    return datetime.now(UTC)


class Run(SQLModel, table=True):
    """One collection or training job. The database, not Celery, is the truth about its state."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # collect | train
    name: str
    tier: int = Field(index=True)
    preset: str | None = None
    domain: str = Field(index=True)
    task: str = Field(index=True)
    seed: int = 0
    synthetic: bool = False
    status: str = Field(default="queued", index=True)
    config: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    worker_host: str | None = None
    worker_gpu: str | None = None
    worker_pid: int | None = None
    celery_task_id: str | None = None
    error: str | None = None
    cancel_requested: bool = False
    latest: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # key -> [step, value]
    progress: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    result: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    dataset_id: int | None = Field(default=None, foreign_key="dataset.id", ondelete="SET NULL")
    parent_id: int | None = Field(default=None, foreign_key="run.id", ondelete="SET NULL")
    waits_for_id: int | None = Field(
        default=None, foreign_key="run.id", ondelete="SET NULL"
    )  # its collection
    tags: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    notes: str = ""
    # --- sweeps and seed groups (backend/sweeps.py)
    sweep_id: int | None = Field(default=None, foreign_key="sweep.id", ondelete="SET NULL", index=True)
    sweep_config: str | None = None  # the sweep configuration this run trains (e.g. "c3")
    group_id: str | None = Field(default=None, index=True)  # runs of one launch that differ only by seed
    held: bool = False  # a sweep run waiting for a slot under the sweep's parallel limit (not queued yet)
    stop_reason: str | None = None  # set when a sweep stopped it early: "nan: ..." or "divergence: ..."
    lineage: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # promoted from


class Sweep(SQLModel, table=True):
    """A base launch plus a search space, seeds per configuration, a ranking metric and a parallel limit."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = ""
    status: str = Field(default="running", index=True)  # running | finished | cancelled
    tier: int = 1
    base: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # the RunCreate body
    grid: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    random: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sweep_seed: int = 0
    seeds: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    metric: str = "eval/rollout_mse"
    mode: str = "min"
    parallel: int = 2
    early_stop: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    configs: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # [{key, params}]
    parent_id: int | None = Field(default=None, foreign_key="sweep.id", ondelete="SET NULL")
    promotion: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # picks from parent
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class Dataset(SQLModel, table=True):
    """One HDF5 file of episodes, usually produced by a collection run."""

    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(unique=True)
    domain: str
    task: str
    tier: int
    seed: int = 0
    episodes: int = 0
    frames: int = 0
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    img_size: int | None = None
    run_id: int | None = None  # the producing run (no foreign key: run.dataset_id already points here)
    created_at: datetime = Field(default_factory=utcnow)


class MetricPoint(SQLModel, table=True):
    """One scalar at one step. NaN is stored as NULL (SQLite cannot hold NaN); +-Inf as themselves."""

    __table_args__ = (UniqueConstraint("run_id", "key", "step", name="uq_metric_run_key_step"),)
    id: int | None = Field(default=None, sa_column_kwargs={"autoincrement": True}, primary_key=True)
    run_id: int = Field(foreign_key="run.id", ondelete="CASCADE")
    key: str
    step: int = Field(sa_column=Column(BigInteger, nullable=False))
    value: float | None = Field(default=None, sa_column=Column(Float(precision=53), nullable=True))
    wall_time: float = 0.0


class Alert(SQLModel, table=True):
    """A non-finite value, divergence, OOM or lost worker; one open alert per run, kind and key."""

    __table_args__ = (Index("ix_alert_run_open", "run_id", "acknowledged"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", ondelete="CASCADE")
    kind: str
    key: str = ""
    step: int | None = None
    message: str = ""
    acknowledged: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class Artifact(SQLModel, table=True):
    """A file a run produced: checkpoint, rollout video, NaN batch dump or log."""

    __table_args__ = (UniqueConstraint("run_id", "kind", "path", name="uq_artifact_run_kind_path"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", ondelete="CASCADE")
    kind: str
    path: str
    step: int | None = None
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    meta: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class RunEvent(SQLModel, table=True):
    """An event the run reported that the dashboard shows later: eval (per-horizon arrays), log, status."""

    __table_args__ = (Index("ix_runevent_run_kind", "run_id", "kind"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", ondelete="CASCADE")
    uid: str | None = Field(default=None, unique=True)  # client-chosen; a re-sent event is dropped
    kind: str
    step: int | None = None
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    wall_time: float = 0.0


# ---------------------------------------------------------------------------------------------------------------
# Request bodies


class RunCreate(BaseModel):
    """A launch: one run, or one per seed when `seeds` is given."""

    kind: Literal["collect", "train"]
    tier: int = 1
    preset: Name | None = None
    domain: Name | None = None
    task: Name | None = None
    seed: int | None = None
    seeds: list[int] | None = PField(None, max_length=1000)
    synthetic: bool | None = None
    overrides: dict[str, Any] = PField(default_factory=dict)
    tags: list[Tag] = PField(default_factory=list, max_length=MAX_TAGS)
    notes: Notes = ""


class SweepCreate(BaseModel):
    """A sweep: the base launch, a grid and/or random space, seeds per configuration, metric, parallel limit."""

    base: RunCreate
    grid: dict[str, list[Any]] = PField(default_factory=dict)
    random: dict[str, Any] = PField(default_factory=dict)  # {field: {kind: [..]}, "count": N}
    sweep_seed: int = 0
    seeds: list[int] = PField(default_factory=lambda: [0])
    metric: Key = "eval/rollout_mse"
    mode: Literal["min", "max"] = "min"
    parallel: int = PField(2, ge=1, le=1000)
    early_stop: dict[str, Any] | bool = True  # {k, patience, key, min_runs}, true = defaults, false = off
    name: Name = ""


class PromoteIn(BaseModel):
    """Launch the best `top_k` configurations at the next tier (default seeds: the sweep's; 1-5 at tier 3)."""

    top_k: int = PField(3, ge=1, le=100)
    tier: int | None = None
    seeds: list[int] | None = None
    parallel: int | None = PField(None, ge=1, le=1000)
    preset: str | None = "same"  # "same": the sweep's extra preset (e.g. debug); null: none
    overrides: dict[str, Any] = PField(default_factory=dict)  # extra fields for every promoted run


class RunUpdate(BaseModel):
    tags: list[Tag] | None = PField(None, max_length=MAX_TAGS)
    notes: Notes | None = None


class PointIn(BaseModel):
    key: Key
    step: int
    value: float | str | None  # "nan", "inf", "-inf" or null stand for the non-finite values JSON lacks
    time: float | None = None


class MetricsIn(BaseModel):
    points: list[PointIn]


class EventIn(BaseModel):
    kind: Name
    payload: dict[str, Any] = PField(default_factory=dict)
    uid: Name | None = None
    time: float | None = None


class EventsIn(BaseModel):
    events: list[EventIn]


class ArtifactIn(BaseModel):
    kind: Literal["checkpoint", "video", "batch_dump", "log"]
    path: PathStr
    step: int | None = None
    meta: dict[str, Any] = PField(default_factory=dict)


class StartIn(BaseModel):
    host: Name
    gpu: Name | None = None
    pid: int | None = None
    task_id: Name | None = None


class FinishIn(BaseModel):
    status: Literal["succeeded", "failed", "cancelled"]
    error: str | None = None  # the public error keeps its first line (crud.public_error); the rest goes below
    result: dict[str, Any] = PField(default_factory=dict)
    traceback: str | None = None  # the full text, shown to token holders only (GET /api/runs/{id}/traceback)
