"""The engine (SQLite with WAL by default, Postgres via AIME_DATABASE_URL), sessions and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from backend.core.settings import Settings, get_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(settings: Settings) -> Engine:
    url = settings.db_url
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL: readers never block the writer (the dashboard reads while workers ingest).
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    connect_args = (
        {"options": f"-csearch_path={settings.database_schema}"} if settings.database_schema else {}
    )
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings())


def get_session() -> Iterator[Session]:
    with Session(get_engine()) as session:
        yield session


def migrate(settings: Settings | None = None, engine: Engine | None = None) -> None:
    """Bring the schema to the newest Alembic revision (programmatic config; no alembic.ini needed)."""
    from alembic import command
    from alembic.config import Config

    settings = settings or get_settings()
    engine = engine or make_engine(settings)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
