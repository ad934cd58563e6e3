"""One Settings object (env prefix AIME_) shared by the API, the workers and `aime up`. Torch-free."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; each reads AIME_<NAME> from the environment."""

    model_config = SettingsConfigDict(env_prefix="AIME_", extra="ignore")

    data_dir: Path = Path("aime-data")  # SQLite file, datasets, run directories, uploads, logs, token
    database_url: str = ""  # empty: sqlite:///{data_dir}/aime.db (WAL); postgresql://... for Postgres
    database_schema: str = ""  # Postgres schema to use (tests use a throwaway one)
    redis_url: str = "redis://127.0.0.1:6379/0"  # broker + event fan-out; unix:///path/redis.sock works too
    redis_prefix: str = "aime:"  # every Redis key we create (Celery's too, via global_keyprefix)
    api_url: str = "http://127.0.0.1:8000"  # where workers post metrics and status
    api_token: str = ""  # bearer token for mutating calls and ingest
    open_reads: str = "localhost"  # who may read without the token: localhost | all | none
    heartbeat_interval: float = 2.0  # seconds between worker heartbeats (also the cancel latency)
    heartbeat_timeout: float = 60.0  # a running run silent this long becomes `lost`
    sink_close_timeout: float = 600.0  # how long a finished run waits for the API to take its unsent points
    visibility_timeout: int = 7 * 24 * 3600  # Redis redelivery of unacked tasks; above the longest run
    spool_dir: Path | None = None  # where the HTTP sink keeps batches while the API is down
    events_maxlen: int = 20000  # events kept per Redis stream for Last-Event-ID replay
    # ... and at most this many payload bytes per stream (oldest dropped first)
    events_max_bytes: int = 4 << 20
    events_end_window_s: float = 300.0  # a run's stream keeps its last 5 minutes when it ends, then expires
    # FastAPI's native OpenTelemetry (a span, metrics and logs per request through the global providers). Off: with
    # it on, every request asks whether a provider is configured (~25 us of a ~0.7 ms ingest call, measured).
    otel: bool = False
    # --- security (README "Security model")
    allowed_hosts: str = ""  # extra Host names the API answers (comma-separated; loopback is always allowed)
    # extra directories API paths may point into (comma-separated), e.g. dataset stores
    allowed_roots: str = ""
    max_body_bytes: int = 1 << 20  # JSON request bodies (launches, sweeps, notes): 413 above
    max_ingest_bytes: int = 16 << 20  # one metric or event batch from a worker: 413 above
    max_upload_bytes: int = 2 << 30  # one uploaded artifact (rollout video, checkpoint): 413 above

    @property
    def db_url(self) -> str:
        url = self.database_url or f"sqlite:///{Path(self.data_dir).resolve() / 'aime.db'}"
        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3 is the installed driver
        return url

    @property
    def celery_broker_url(self) -> str:
        # redis-py speaks unix://; kombu wants redis+socket:// for the same socket.
        if self.redis_url.startswith("unix://"):
            return "redis+socket://" + self.redis_url[len("unix://") :]
        return self.redis_url

    @property
    def artifact_root(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def datasets_dir(self) -> Path:
        return self.artifact_root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.artifact_root / "runs"

    @property
    def extra_hosts(self) -> list[str]:
        return [h.strip().lower().rstrip(".") for h in self.allowed_hosts.split(",") if h.strip()]

    @property
    def extra_roots(self) -> list[Path]:
        return [Path(r.strip()).expanduser().resolve() for r in self.allowed_roots.split(",") if r.strip()]

    @property
    def spool_path(self) -> Path:
        return Path(self.spool_dir) if self.spool_dir else self.artifact_root / "spool"


@lru_cache
def get_settings() -> Settings:
    return Settings()
