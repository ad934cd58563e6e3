"""SQLModel tables (runs, datasets, metric points, alerts, artifacts, run events) and their API schemas."""

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictFloat, StrictInt, StringConstraints
from pydantic import Field as PField
from sqlalchemy import JSON, BigInteger, Column, Float, Index, UniqueConstraint
from sqlmodel import Field, SQLModel
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from aime_core import config as C

RUN_KINDS = ("collect", "train")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "lost")
FINAL_STATUSES = ("succeeded", "failed", "cancelled", "lost")
ALERT_KINDS = ("nan", "inf", "divergence", "lost", "oom", "delivery")
ARTIFACT_KINDS = ("checkpoint", "video", "batch_dump", "log")

# Length limits on strings from HTTP (422 beyond; README "Security model"), no NUL bytes (file systems and
# Postgres refuse them). Bodies as a whole: backend.security.
NO_NUL = r"^[^\x00]*$"
Key = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]  # metric keys
Tag = Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)]
Name = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)]  # names, presets, hosts, kinds
Notes = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
PathStr = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=NO_NUL)]
# Numbers the database stores as 64-bit integers: ids, steps, counts (0 <= n < 2^63).
INT64_MAX = 2**63 - 1
Step = Annotated[int, PField(ge=0, le=INT64_MAX, description="optimiser step (0 <= step < 2^63)")]
Seed = Annotated[int, PField(ge=0, le=2**31 - 1, description="random seed (0 <= seed < 2^31)")]
Pid = Annotated[int, PField(ge=0, le=2**31 - 1, description="process id")]
WallTime = Annotated[
    float,
    PField(ge=0, allow_inf_nan=False, description="wall-clock time, seconds since the Unix epoch (finite)"),
]


def _finite(value: Any) -> Any:
    """Python's JSON reader takes NaN/Infinity literals; free-form objects refuse them (a reply could not hold them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError('NaN and Infinity are not JSON numbers; send the strings "nan", "inf" or "-inf"')
    if isinstance(value, dict):
        for v in value.values():
            _finite(v)
    elif isinstance(value, list):
        for v in value:
            _finite(v)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_finite)]

# Enumerations (the OpenAPI schema lists them).
RunKind = Literal["collect", "train"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "lost"]
AlertKind = Literal["nan", "inf", "divergence", "lost", "oom", "delivery"]
ArtifactKind = Literal["checkpoint", "video", "batch_dump", "log"]
SweepStatus = Literal["running", "finished", "cancelled"]
Tier = Annotated[int, PField(ge=1, le=3, description="1: bug finding, 2: validation, 3: the full benchmark")]
DOMAINS = sorted({*C.DMC_TASKS, C.SYNTHETIC_DOMAIN})
TASKS = sorted({t for ts in C.DMC_TASKS.values() for t in ts} | {C.SYNTHETIC_TASK})
Domain = Annotated[
    str, PField(max_length=200, json_schema_extra={"enum": DOMAINS}, description="dm_control domain")
]
Task = Annotated[
    str,
    PField(
        max_length=200, json_schema_extra={"enum": TASKS}, description="task of the domain (GET /api/tiers)"
    ),
]
Preset = Annotated[
    str,
    PField(json_schema_extra={"enum": list(C.EXTRA_PRESETS)}, description="an extra preset on the tier's"),
]
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

    # Keyed by what identifies a point (migration 0005): the idempotent upsert's conflict target is the primary key,
    # no surrogate id to index per point; on SQLite the table is that b-tree itself (WITHOUT ROWID).
    __table_args__ = ({"sqlite_with_rowid": False},)
    run_id: int = Field(foreign_key="run.id", ondelete="CASCADE", primary_key=True)
    key: str = Field(primary_key=True)
    step: int = Field(sa_column=Column(BigInteger, primary_key=True))
    value: float | None = Field(default=None, sa_column=Column(Float(precision=53), nullable=True))
    wall_time: float = 0.0


class MetricTile(SQLModel, table=True):
    """A metric's points in one 32-step tile (step // 32), kept at ingest: count, step range, min/max of the finite
    values, latest wall time. A long metric's chart reads these instead of every point (backend/metrics.py)."""

    run_id: int = Field(foreign_key="run.id", ondelete="CASCADE", primary_key=True)
    key: str = Field(primary_key=True)
    tile: int = Field(sa_column=Column(BigInteger, primary_key=True))
    n: int
    step_min: int = Field(sa_column=Column(BigInteger, nullable=False))
    step_max: int = Field(sa_column=Column(BigInteger, nullable=False))
    vmin: float | None = Field(default=None, sa_column=Column(Float(precision=53), nullable=True))
    vmax: float | None = Field(default=None, sa_column=Column(Float(precision=53), nullable=True))
    wall_max: float = 0.0


class Alert(SQLModel, table=True):
    """A non-finite value, divergence, OOM or lost worker; one open alert per run, kind and key."""

    __table_args__ = (Index("ix_alert_run_open", "run_id", "acknowledged"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", ondelete="CASCADE")
    kind: str
    key: str = ""
    step: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
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
    step: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
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
    step: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    wall_time: float = 0.0


# ---------------------------------------------------------------------------------------------------------------
# Request bodies


class RunCreate(BaseModel):
    """A launch: one run, or one per seed when `seeds` is given."""

    kind: RunKind = PField(description="`collect` a dataset or `train` a model")
    tier: Tier = 1
    preset: Preset | None = None
    domain: Domain | None = PField(None, description="dm_control domain (default: the tier's)")
    task: Task | None = PField(None, description="task of the domain (default: the tier's)")
    seed: Seed | None = None
    seeds: list[Seed] | None = PField(None, max_length=1000, description="one run per seed, as a seed group")
    synthetic: bool | None = PField(None, description="the procedural ball environment instead of MuJoCo")
    overrides: JsonObject = PField(
        default_factory=dict, description="config fields over the tier preset (GET /api/tiers lists them)"
    )
    tags: list[Tag] = PField(default_factory=list, max_length=MAX_TAGS)
    notes: Notes = ""


class SweepCreate(BaseModel):
    """A sweep: the base launch, a grid and/or random space, seeds per configuration, metric, parallel limit."""

    base: RunCreate
    grid: Annotated[dict[str, list[Any]], AfterValidator(_finite)] = PField(
        default_factory=dict, description="field -> values (their product)"
    )
    random: JsonObject = PField(
        default_factory=dict,
        description='field -> {choice|uniform|loguniform|int: [..]}, plus "count": draws (seeded by sweep_seed)',
    )
    sweep_seed: Seed = 0
    seeds: list[Seed] = PField(
        default_factory=lambda: [0], max_length=1000, description="seeds per configuration"
    )
    metric: Key = PField("eval/rollout_mse", description="the metric key that ranks configurations")
    mode: Literal["min", "max"] = "min"
    parallel: int = PField(2, ge=1, le=1000, description="at most this many runs queued or running at once")
    early_stop: JsonObject | bool = PField(
        True, description="{k, patience, key, min_runs}; true: the defaults; false: off"
    )
    name: Name = ""


class PromoteIn(BaseModel):
    """Launch the best `top_k` configurations at the next tier (default seeds: the sweep's; 1-5 at tier 3)."""

    top_k: int = PField(3, ge=1, le=100)
    tier: Tier | None = PField(None, description="default: the sweep's tier + 1")
    seeds: list[Seed] | None = PField(None, max_length=1000)
    parallel: int | None = PField(None, ge=1, le=1000)
    preset: Name | None = PField(
        "same", description='"same": the sweep\'s extra preset (e.g. debug); null: none'
    )
    overrides: JsonObject = PField(default_factory=dict, description="extra fields for every promoted run")


class RunUpdate(BaseModel):
    """New tags and/or notes of a run (a field left out stays)."""

    tags: list[Tag] | None = PField(None, max_length=MAX_TAGS)
    notes: Notes | None = None


MetricValue = Annotated[
    StrictFloat | StrictInt | Annotated[str, StringConstraints(max_length=64)] | None,
    PField(description='a number; "nan", "inf", "-inf" or null stand for the non-finite values JSON lacks'),
]


class PointIn(BaseModel):
    """One scalar at one step."""

    key: Key
    step: Step
    value: MetricValue
    time: WallTime | None = None


class MetricsIn(BaseModel):
    """A batch of points; a re-sent point (same key and step) replaces the stored one."""

    points: list[PointIn]


# The same body as MetricsIn with the same constraints (and so the same 422 texts), validated by pydantic-core
# straight from the request's JSON bytes into plain dicts: ingest makes no model object per point (~4x faster).
class PointDict(TypedDict):
    key: Key
    step: Step
    value: MetricValue
    time: NotRequired[WallTime | None]


class MetricsDict(TypedDict):
    points: list[PointDict]


class EventIn(BaseModel):
    """One event a sink reported (kinds: docs/CONTRACTS.md)."""

    kind: Name = PField(description="eval, log, status, alert, dataset, progress, ...")
    payload: dict[str, Any] = PField(default_factory=dict)
    uid: Name | None = PField(
        None, description="client-chosen id; an event re-sent with the same uid is dropped"
    )
    time: WallTime | None = None


class EventsIn(BaseModel):
    """A batch of events."""

    events: list[EventIn]


class ArtifactIn(BaseModel):
    """A file a run wrote, by its path on the server's disk."""

    kind: ArtifactKind
    path: PathStr = PField(description="inside the data directory's run areas or AIME_ALLOWED_ROOTS")
    step: Step | None = None
    meta: JsonObject = PField(default_factory=dict)


class StartIn(BaseModel):
    """The worker that takes a queued run."""

    host: Name
    gpu: Name | None = None
    pid: Pid | None = None
    task_id: Name | None = None


class FinishIn(BaseModel):
    """A run's final status."""

    status: Literal["succeeded", "failed", "cancelled"]
    error: str | None = PField(
        None,
        description="the public error keeps its first line (crud.public_error); the rest goes to /traceback",
    )
    result: JsonObject = PField(default_factory=dict)
    traceback: str | None = PField(None, description="the full text, for token holders only")


class WorkerLostIn(BaseModel):
    """A worker process that died."""

    host: str = PField(max_length=255, pattern=NO_NUL)
    pid: Pid
    reason: str = PField("exited", max_length=500, pattern=NO_NUL)


# ---------------------------------------------------------------------------------------------------------------
# Replies (every operation declares one; the OpenAPI schema is the contract)

Id = Annotated[int, PField(ge=0, le=INT64_MAX)]
OutStep = Annotated[int, PField(description="optimiser step")]
Number = Annotated[
    float | str | None, PField(description='a number, or "nan", "inf", "-inf" for non-finite values')
]


class RunPublic(BaseModel):
    """A run as the API shows it."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: RunKind
    name: str
    tier: int = PField(description="1, 2 or 3")
    preset: str | None = PField(description="extra preset (debug) or null")
    domain: str
    task: str
    seed: int
    synthetic: bool
    status: RunStatus
    config: dict[str, Any] = PField(
        description="the fully resolved config (GET /api/tiers describes each field)"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker_host: str | None
    worker_gpu: str | None
    worker_pid: int | None
    celery_task_id: str | None = PField(description="the broker's task id (used only to revoke)")
    error: str | None = PField(description="one line: why it failed (the full text: /traceback)")
    cancel_requested: bool
    latest: dict[str, list[Any]] = PField(
        description='metric key -> [step, value] (value may be "nan"/"inf")'
    )
    progress: dict[str, Any] = PField(
        description="the latest progress event: done, total, unit, postfix, time"
    )
    result: dict[str, Any] = PField(description="what the run reported at its end (steps, dataset path, ...)")
    dataset_id: int | None
    parent_id: int | None = PField(description="the run this one retries or resumes")
    waits_for_id: int | None = PField(description="the collection run this training run waits for")
    tags: list[str]
    notes: str
    sweep_id: int | None
    sweep_config: str | None = PField(description="the sweep configuration this run trains (e.g. c3)")
    group_id: str | None = PField(description="the seed group (runs of one launch that differ only by seed)")
    held: bool = PField(description="a sweep run waiting for a slot under the sweep's parallel limit")
    stop_reason: str | None = PField(description="why a sweep stopped it early")
    lineage: dict[str, Any] = PField(description="the sweep configuration it was promoted from")


class RunListItemPublic(RunPublic):
    """A run in the runs list, with its open alert count."""

    open_alerts: int = PField(description="unacknowledged alerts")


class RunDetailPublic(RunListItemPublic):
    """One run with its open alert count and the runs that retry or resume it."""

    children: list[int]


class RunPagePublic(BaseModel):
    """A page of runs, newest first."""

    total: int = PField(description="runs matching the filters")
    offset: int
    limit: int
    items: list[RunListItemPublic]


class ResolvedRunPublic(BaseModel):
    """One run a launch would create."""

    name: str
    config: dict[str, Any]
    data_exists: bool = PField(description="its dataset file exists already (no collection needed)")


class ResolvePublic(BaseModel):
    """The resolved config(s) of a launch, nothing created."""

    kind: RunKind
    runs: list[ResolvedRunPublic]


class DeletedPublic(BaseModel):
    """A deleted run and the files removed with it."""

    deleted: int
    removed: list[str]


class TracebackPublic(BaseModel):
    """The full error text of a failed run."""

    run_id: int
    traceback: str | None


class LogLinePublic(BaseModel):
    """One log line."""

    time: float
    level: str = PField(description="info, warning or error")
    kind: Literal["log", "status", "alert"]
    message: str


class LogPublic(BaseModel):
    """The last lines of a run's log."""

    run_id: int
    lines: list[LogLinePublic]
    text: str = PField(description="the lines as `[level] message` text")


class StartedPublic(BaseModel):
    """What the worker needs to run a started run."""

    id: int
    kind: RunKind
    config: dict[str, Any]
    status: RunStatus


class HeartbeatPublic(BaseModel):
    """Whether the worker should stop."""

    stop: bool = PField(description="true: the run was cancelled or declared lost; checkpoint and stop")
    status: RunStatus


class FinishedPublic(BaseModel):
    """A run's final status."""

    id: int
    status: RunStatus


class LostPublic(BaseModel):
    """The runs that became lost."""

    lost: list[int]


class IngestedPublic(BaseModel):
    """Points stored and alerts opened."""

    points: int
    alerts: int


class StoredPublic(BaseModel):
    """Events stored (progress updates the run; a re-sent uid is dropped)."""

    stored: int


class MetricKeyPublic(BaseModel):
    """A metric key of a run."""

    key: str
    count: int
    step_min: int
    step_max: int
    last: Number


class NonFinitePublic(BaseModel):
    """Every step whose value was NaN or Inf."""

    steps: list[int]
    values: list[Number]


class SeriesPublic(BaseModel):
    """A downsampled series: per bucket min/max of the finite values, the last value, steps and wall time."""

    key: str
    count: int = PField(description="points in the range")
    buckets: int
    step: list[int] = PField(description="each bucket's last step")
    min: list[float | None]
    max: list[float | None]
    last: list[Number]
    first_step: list[int]
    last_step: list[int]
    n: list[int] = PField(description="points per bucket")
    nonfinite: NonFinitePublic
    wall: list[float] = PField(default_factory=list, description="each bucket's latest wall time")


class ExactSeriesPublic(BaseModel):
    """Every point of a series in step order, paged (exact=true)."""

    key: str
    total: int
    offset: int
    steps: list[int]
    values: list[Number]
    wall_times: list[float]


class ComparePublic(BaseModel):
    """One key for several runs, downsampled."""

    key: str
    runs: dict[str, SeriesPublic] = PField(description="run id -> series")


class AggregatePublic(BaseModel):
    """Mean and std (ddof=0) over runs at each aligned step."""

    key: str
    runs: list[int] = PField(description="runs that have the key")
    missing: list[int] = PField(description="runs asked for that do not")
    align: Literal["common", "all"]
    steps: list[int]
    mean: list[float]
    std: list[float]
    n: list[int] = PField(description="runs with a finite value at each step")


class RunEventPublic(BaseModel):
    """A stored event of a run."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    run_id: int
    uid: str | None
    kind: str = PField(description="eval, log, status, alert or dataset")
    step: int | None
    payload: dict[str, Any]
    wall_time: float


class AlertPublic(BaseModel):
    """A non-finite value, divergence, OOM or lost worker."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    run_id: int
    kind: AlertKind
    key: str = PField(description="the metric key (or heartbeat/worker for lost runs)")
    step: int | None
    message: str
    acknowledged: bool
    created_at: datetime


class ArtifactPublic(BaseModel):
    """A file a run produced."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    run_id: int
    kind: ArtifactKind
    path: str
    step: int | None
    bytes: int
    meta: dict[str, Any]
    created_at: datetime


class DatasetPublic(BaseModel):
    """An HDF5 dataset."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    path: str
    domain: str
    task: str
    tier: int
    seed: int
    episodes: int
    frames: int
    bytes: int
    img_size: int | None
    run_id: int | None = PField(description="the collection run that produced it")
    created_at: datetime


class RunRefPublic(BaseModel):
    """A run named by id, name and status."""

    id: int
    name: str
    status: RunStatus


class DatasetDetailPublic(DatasetPublic):
    """A dataset with the runs trained on it."""

    runs: list[RunRefPublic]


class HealthPublic(BaseModel):
    """The API is up."""

    status: Literal["ok"]
    database: str = PField(description="sqlite or postgresql")
    redis: bool = PField(description="the broker answered")


class SessionPublic(BaseModel):
    """The API token, for a page on this machine."""

    token: str
    local: bool


class ConfigFieldPublic(BaseModel):
    """A config field: its type, default and help text."""

    name: str
    type: str
    optional: bool
    default: Any
    help: str


class TierPublic(BaseModel):
    """A tier's resolved collect and train configs and its preset."""

    collect: dict[str, Any]
    train: dict[str, Any]
    preset: dict[str, Any]


class FieldsPublic(BaseModel):
    """Every config field of collection and training."""

    collect: list[ConfigFieldPublic]
    train: list[ConfigFieldPublic]


class EnvPublic(BaseModel):
    """A domain and task."""

    domain: str
    task: str


class TiersPublic(BaseModel):
    """Tier presets, extra presets, valid domain/task pairs and every config field (the launch form)."""

    tiers: dict[str, TierPublic] = PField(description="tier (1, 2, 3) -> its configs")
    presets: dict[str, dict[str, Any]]
    domains: dict[str, list[str]] = PField(description="domain -> its tasks")
    synthetic: EnvPublic
    recommended: list[list[str]] = PField(description="[domain, task] pairs, fastest first")
    fields: FieldsPublic
    choices: dict[str, list[str]] = PField(description="field -> allowed values")


class QueuedJobPublic(BaseModel):
    """A run waiting in a queue."""

    position: int
    run_id: int
    name: str
    task_id: str | None
    created_at: datetime


class DataWaitPublic(BaseModel):
    """A training run waiting for its dataset's collection."""

    run_id: int
    name: str
    waits_for: int


class QueueStatePublic(BaseModel):
    """One queue."""

    waiting: list[QueuedJobPublic]
    length: int = PField(description="messages the broker holds")
    waiting_for_data: list[DataWaitPublic] | None = PField(None, description="train queue only")


class ActiveRunPublic(BaseModel):
    """A running run and its worker."""

    run_id: int
    name: str
    kind: RunKind
    worker_host: str | None
    worker_gpu: str | None
    progress: dict[str, Any]


class BrokerPublic(BaseModel):
    """Whether the broker answered."""

    reachable: bool
    error: str | None


class QueuePublic(BaseModel):
    """Queues, running runs, workers online and the broker's state."""

    queues: dict[str, QueueStatePublic]
    active: list[ActiveRunPublic]
    workers: list[dict[str, Any]] = PField(description="workers online: host, queues, gpus, active run, seen")
    broker: BrokerPublic


class SweepRunPublic(BaseModel):
    """A run of a sweep."""

    id: int
    name: str
    status: RunStatus
    seed: int
    sweep_config: str | None
    group_id: str | None
    held: bool
    stop_reason: str | None
    error: str | None
    latest: dict[str, list[Any]]
    lineage: dict[str, Any]
    progress: dict[str, Any]
    parent_id: int | None
    replaced_by: int | None = PField(description="its newest retry or resume, which counts instead")


class LeaderboardRowPublic(BaseModel):
    """A configuration ranked by the mean of the metric over its seeds."""

    key: str
    params: dict[str, Any]
    runs: list[int]
    values: dict[str, Number] = PField(description='run id -> final value ("inf" when it diverged)')
    steps: dict[str, int] = PField(description="run id -> step of the final value")
    n: int
    mean: float | None
    std: float | None
    done: int
    stopped: int
    replaced: list[int]
    statuses: dict[str, int]
    rank: int | None


class SweepChildPublic(BaseModel):
    """A sweep promoted from this one."""

    id: int
    tier: int
    name: str
    picks: list[dict[str, Any]]


class SweepPublic(BaseModel):
    """A sweep with run counts by status."""

    id: int
    name: str
    status: SweepStatus
    tier: int
    base: dict[str, Any] = PField(description="the RunCreate body of its runs")
    grid: dict[str, Any]
    random: dict[str, Any]
    sweep_seed: int
    seeds: list[int]
    metric: str
    mode: Literal["min", "max"]
    parallel: int
    early_stop: dict[str, Any]
    configs: list[dict[str, Any]] = PField(description="[{key, params}]")
    parent_id: int | None
    promotion: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = PField(description="runs by status, and `held`")
    total_runs: int


class SweepDetailPublic(SweepPublic):
    """A sweep with its runs, leaderboard, promotions and varied fields."""

    runs: list[SweepRunPublic]
    leaderboard: list[LeaderboardRowPublic]
    children: list[SweepChildPublic]
    varied: list[str]


class GroupRunPublic(BaseModel):
    """A run of a seed group."""

    id: int
    seed: int
    status: RunStatus


class GroupPublic(BaseModel):
    """The runs of one seed group."""

    group_id: str
    runs: list[GroupRunPublic]


# Descriptions of the fields that mean the same in every model they appear in; the OpenAPI schema takes them for
# any field without its own (backend/main.py), so every field of the contract is described.
FIELD_DOCS = {
    "acknowledged": "the user has seen it (a new alert for the same key may open)",
    "active": "what is running now",
    "alerts": "alerts opened by this batch",
    "align": "common: steps every run has; all: every step, over the runs that have it",
    "base": "the launch (RunCreate) every run of the sweep starts from",
    "broker": "whether the broker (Redis) answered",
    "buckets": "buckets returned",
    "bytes": "file size in bytes",
    "cancel_requested": "a cancel was asked while it ran; the worker stops at its next heartbeat",
    "children": "ids of the runs that retry or resume this one",
    "collect": "the collection config",
    "config": "a fully resolved config (GET /api/tiers describes each field)",
    "count": "number of points",
    "created_at": "when it was created (UTC)",
    "dataset_id": "the dataset it trains on",
    "default": "the default value",
    "deleted": "the id of the deleted run",
    "domain": "dm_control domain (or synthetic)",
    "done": "runs that succeeded",
    "early_stop": "early-stop settings: enabled, k, patience, key, min_runs",
    "episodes": "episodes in the file",
    "error": "one line: what went wrong",
    "events": "the events of the batch",
    "fields": "every config field with its type, default and help",
    "finished_at": "when it ended (UTC)",
    "first_step": "first step of each bucket",
    "frames": "frames in the file (all episodes)",
    "gpu": "GPU name, if any",
    "grid": "field -> values searched (their product)",
    "group_id": "the seed group",
    "heartbeat_at": "the worker's last heartbeat (UTC)",
    "held": "waiting for a slot under its sweep's parallel limit",
    "help": "what the field does",
    "host": "host name of the worker machine",
    "id": "its id",
    "img_size": "frame size in pixels (square)",
    "items": "the runs of this page",
    "key": "metric key (e.g. loss, eval/rollout_mse)",
    "kind": "what kind it is",
    "last": 'the last value ("nan"/"inf"/"-inf" when not finite)',
    "last_step": "last step of each bucket",
    "latest": 'metric key -> [step, value] (value may be "nan"/"inf")',
    "leaderboard": "configurations ranked by the mean of the metric over seeds",
    "limit": "the page size asked for",
    "lineage": "the sweep configuration a promoted run came from: sweep_id, config, rank, runs, mean",
    "lines": "log lines, oldest first",
    "local": "always true: the token is given only to this machine",
    "lost": "ids of the runs that became lost",
    "max": "largest finite value per bucket (null when none)",
    "mean": "mean over runs (or seeds)",
    "message": "the text",
    "meta": "extra facts: tag (last, best, epoch_N), epoch, name, uploaded",
    "metric": "the metric key that ranks configurations",
    "min": "smallest finite value per bucket (null when none)",
    "mode": "min: lower is better; max: higher is better",
    "n": "how many values each number is made of",
    "name": "its name",
    "nonfinite": "every NaN/Inf step, never downsampled away",
    "notes": "free text",
    "offset": "items skipped",
    "optional": "whether null is allowed",
    "parallel": "at most this many runs queued or running at once",
    "params": "the configuration's field values",
    "parent_id": "the one it came from",
    "path": "file path on the server",
    "payload": "the event's data (docs/CONTRACTS.md lists the kinds)",
    "picks": "configurations promoted: key, sweep_id, config, rank, runs, mean",
    "pid": "process id",
    "points": "the points of the batch",
    "position": "1 = next to start",
    "preset": "extra preset (debug) or null",
    "presets": "extra presets and their fields",
    "progress": "the latest progress: done, total, unit and the trainer's postfix (loss, epoch, ...)",
    "promotion": "from_sweep, top_k and picks, for a sweep promoted from another",
    "queues": "per queue: waiting runs and length",
    "random": "field -> {choice|uniform|loguniform|int: [...]}, plus count",
    "rank": "1 = best; null without a finite value",
    "reachable": "the broker answered",
    "reason": "how the worker ended",
    "removed": "files and folders deleted",
    "replaced": "runs replaced by a retry or resume",
    "result": "what the run reported at its end",
    "run_id": "the run",
    "runs": "runs",
    "seed": "random seed",
    "seeds": "seeds, one run each",
    "started_at": "when a worker started it (UTC)",
    "status": "its state",
    "statuses": "runs by status",
    "std": "population standard deviation (ddof=0)",
    "step": "optimiser step",
    "step_max": "last step stored",
    "step_min": "first step stored",
    "steps": "steps, in order",
    "stop_reason": "why a sweep stopped it early",
    "stopped": "runs stopped early",
    "stored": "events stored",
    "sweep_config": "the sweep configuration it trains (e.g. c3)",
    "sweep_id": "the sweep it belongs to",
    "sweep_seed": "seed of the random search",
    "synthetic": "the procedural ball environment instead of MuJoCo",
    "tags": "labels",
    "task": "task of the domain",
    "task_id": "the broker's task id",
    "tier": "1, 2 or 3",
    "time": "wall-clock time, seconds since the Unix epoch",
    "token": "the API token",
    "top_k": "how many configurations to promote",
    "total": "how many there are in all",
    "total_runs": "runs of the sweep",
    "traceback": "the full error text, or null",
    "train": "the training config",
    "type": "the field's type",
    "uid": "client-chosen id; a re-sent event is dropped",
    "values": "values, in step order",
    "varied": "the fields the sweep varies",
    "waiting": "runs waiting in this queue, next first",
    "waits_for": "the collection run it waits for",
    "wall_time": "wall-clock time, seconds since the Unix epoch",
    "wall_times": "wall-clock time of each point",
    "worker_gpu": "GPU of the worker running it",
    "worker_host": "host of the worker running it",
    "worker_pid": "process id of the worker running it",
}
