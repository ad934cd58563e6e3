"""Service fixtures: settings pointed at a throwaway SQLite file or Postgres schema, Redis DB 15 under a unique
key prefix (only our keys are removed), and a TestClient that looks like a localhost browser."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis
from sqlalchemy import create_engine, text

TOKEN = "test-token-123"


def clear_caches() -> None:
    from backend.core import celery_client, db, pubsub, settings

    settings.get_settings.cache_clear()
    db.get_engine.cache_clear()
    celery_client.get_celery.cache_clear()
    pubsub.sync_redis.cache_clear()


def flush_prefix(url: str, prefix: str) -> None:
    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(f"{prefix}*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture
def redis_prefix(redis_url):
    prefix = f"aimetest-{uuid.uuid4().hex[:8]}:"
    yield prefix
    flush_prefix(redis_url, prefix)


@pytest.fixture(params=["sqlite", "postgres"])
def db_env(request, tmp_path):
    """Environment variables selecting a fresh database of each kind."""
    if request.param == "sqlite":
        yield {"AIME_DATABASE_URL": f"sqlite:///{tmp_path / 'aime.db'}", "AIME_DATABASE_SCHEMA": ""}
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"aime_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield {"AIME_DATABASE_URL": url, "AIME_DATABASE_SCHEMA": schema}
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture
def service_env(db_env, redis_url, redis_prefix, tmp_path, monkeypatch):
    """Every AIME_* setting of one test service; applied to os.environ (children inherit it)."""
    yield from _service_env(db_env, redis_url, redis_prefix, tmp_path, monkeypatch)


@pytest.fixture
def sqlite_service_env(redis_url, redis_prefix, tmp_path, monkeypatch):
    """The same on SQLite only (the live queue tests: the database layer is covered by test_api on both)."""
    db = {"AIME_DATABASE_URL": f"sqlite:///{tmp_path / 'aime.db'}", "AIME_DATABASE_SCHEMA": ""}
    yield from _service_env(db, redis_url, redis_prefix, tmp_path, monkeypatch)


def _service_env(db_env, redis_url, redis_prefix, tmp_path, monkeypatch):
    env = {
        **db_env,
        "AIME_DATA_DIR": str(tmp_path / "data"),
        "AIME_REDIS_URL": redis_url,
        "AIME_REDIS_PREFIX": redis_prefix,
        "AIME_API_TOKEN": TOKEN,
        "AIME_OPEN_READS": "localhost",
        "AIME_HEARTBEAT_INTERVAL": "0.5",
        "AIME_HEARTBEAT_TIMEOUT": "60",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    clear_caches()
    from backend.core.db import migrate

    migrate()
    yield env
    clear_caches()


@pytest.fixture
def client(service_env):
    from fastapi.testclient import TestClient

    from backend.main import app

    with TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000)) as c:
        c.h = {"Authorization": f"Bearer {TOKEN}"}
        c.token = TOKEN
        yield c


# ---------------------------------------------------------------------------------------------------------------
# A live service: uvicorn and a real Celery worker as child processes (what `aime up` starts).


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    """The API and worker processes of one test, with their logs in tmp_path."""

    def __init__(self, env: dict, tmp_path):
        import sys

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "AIME_API_URL": self.url, "AIME_HEARTBEAT_TIMEOUT": "5"}
        self.env.setdefault("MUJOCO_GL", "egl")
        self.tmp = tmp_path
        self.py = sys.executable
        self.api = None
        self.workers = []

    def start_api(self) -> None:
        import subprocess

        import httpx

        log = (self.tmp / "api.log").open("ab")
        cmd = [
            self.py,
            "-m",
            "uvicorn",
            "backend.main:app",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "2",
        ]
        self.api = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the API did not start: " + (self.tmp / "api.log").read_text()[-3000:])

    def stop_api(self) -> None:
        self.api.terminate()
        self.api.wait(30)

    def start_worker(self):
        import subprocess

        import httpx

        env = {k: v for k, v in self.env.items() if k not in ("AIME_DATABASE_URL", "AIME_DATABASE_SCHEMA")}
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("ab")
        cmd = [self.py, "-m", "worker.cli", "worker", "--queues", "collect,synthetic,train"]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        for _ in range(300):  # ready once its presence shows on the queue page
            workers = httpx.get(f"{self.url}/api/queue", timeout=5).json()["workers"]
            if any(w["pid"] == proc.pid for w in workers):
                return proc
            time.sleep(0.1)
        raise RuntimeError("the worker did not start: " + self.logs())

    def logs(self) -> str:
        return "\n".join(p.read_text()[-4000:] for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        for proc in [*self.workers, self.api]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except Exception:  # noqa: BLE001
                    proc.kill()


@pytest.fixture
def live(sqlite_service_env, tmp_path):
    stack = Live(sqlite_service_env, tmp_path)
    stack.start_api()
    yield stack
    stack.close()
