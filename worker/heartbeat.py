"""Liveness: a run's heartbeat (which also carries cancellation back: the stop probe) and the worker's presence
in Redis (hostname, queues, GPU state via NVML, current run) for the queue page."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

import redis

from worker.api import ApiClient


class RunHeartbeat:
    """POSTs /heartbeat every `interval` s; `should_stop()` turns true once the API answers stop (cancel)."""

    def __init__(self, api: ApiClient, run_id: int, interval: float):
        self.api, self.run_id, self.interval = api, run_id, interval
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def start(self) -> RunHeartbeat:
        self._thread.start()
        return self

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def _loop(self) -> None:
        while not self._done.is_set():
            try:
                if self.api.post(f"/api/runs/{self.run_id}/heartbeat").get("stop"):
                    self._stop.set()
            except Exception:  # noqa: BLE001 - API away for a moment: keep running, keep trying
                pass
            self._done.wait(self.interval)

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)


def gpu_info() -> list[dict[str, Any]]:
    """Name, utilisation and memory of the visible GPUs via NVML; [] without a GPU or driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA driver here
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    indices = (
        [int(i) for i in visible.split(",") if i.strip().isdigit()]
        if visible
        else range(pynvml.nvmlDeviceGetCount())
    )
    out = []
    for i in indices:
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        util, mem = pynvml.nvmlDeviceGetUtilizationRates(h), pynvml.nvmlDeviceGetMemoryInfo(h)
        name = pynvml.nvmlDeviceGetName(h)
        out.append(
            {
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else name,
                "util_percent": util.gpu,
                "mem_used_mb": mem.used // 2**20,
                "mem_total_mb": mem.total // 2**20,
            }
        )
    return out


class WorkerPresence:
    """Writes `{prefix}worker:{hostname}` every few seconds with a TTL, so a dead worker drops off the page."""

    current: dict[str, Any] | None = None  # the run this process is on (set by the task)

    def __init__(self, redis_url: str, prefix: str, hostname: str, queues: list[str], period: float = 3.0):
        self.r = redis.Redis.from_url(redis_url)
        self.key = f"{prefix}worker:{hostname}"
        self.info = {
            "hostname": hostname,
            "queues": queues,
            "pid": os.getpid(),
            "machine": socket.gethostname(),
        }
        self.period = period
        self._done = threading.Event()
        threading.Thread(target=self._loop, name="presence", daemon=True).start()

    def _loop(self) -> None:
        while not self._done.is_set():
            gpus = gpu_info()
            body = {**self.info, "gpus": gpus, "active": WorkerPresence.current, "seen": time.time()}
            with contextlib.suppress(redis.RedisError):
                self.r.set(self.key, json.dumps(body), ex=int(self.period * 5))
            self._done.wait(self.period)

    def close(self) -> None:
        self._done.set()
        with contextlib.suppress(redis.RedisError):
            self.r.delete(self.key)
