"""docker-compose.yml: structure checked in Python, and `docker-compose config` where Debian's is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_structure():
    spec = _compose()
    services = spec["services"]
    assert set(services) == {"postgres", "redis", "api", "worker-cpu", "worker-gpu"}
    for name, svc in services.items():
        assert "test" in svc["healthcheck"], f"{name} has no health check"
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    api = services["api"]
    assert "alembic -c backend/alembic.ini upgrade head" in api["command"][-1]  # migrations on start
    assert api["environment"]["AIME_DATABASE_URL"].startswith("postgresql://")
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    for worker in ("worker-cpu", "worker-gpu"):
        env = services[worker]["environment"]
        assert "AIME_DATABASE_URL" not in env  # workers talk to the API with the token only
        assert env["AIME_API_URL"] == "http://api:8000" and env["AIME_REDIS_URL"].startswith("redis://redis:")
    assert services["worker-cpu"]["command"][-2:] == ["--queues", "collect,synthetic"]
    gpu = services["worker-gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["count"] == 1 and device["capabilities"] == ["gpu"]
    assert gpu["command"][2:4] == ["--queues", "train"]
    assert {"pgdata", "redis-data", "aime-data", "aime-datasets", "aime-artifacts"} <= set(spec["volumes"])
    mounts = {m.split(":")[1] for m in api["volumes"]}
    assert {"/data", "/data/runs", "/data/datasets"} <= mounts
    assert mounts == {m.split(":")[1] for m in gpu["volumes"]}  # API and workers see the same files


def test_dockerfile_and_alembic_ini():
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in text and "pip install -e ." in text and "EXPOSE 8000" in text
    assert (ROOT / "backend" / "alembic.ini").exists() and ".venv" in (ROOT / ".dockerignore").read_text()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_docker_compose_config_parses():
    env = {**os.environ, "AIME_API_TOKEN": "x" * 32}
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved["services"]["api"]["environment"]["AIME_API_TOKEN"] == "x" * 32
    devices = resolved["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    missing = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "AIME_API_TOKEN"},
    )
    assert missing.returncode != 0 and "AIME_API_TOKEN" in missing.stderr  # no token, no stack
