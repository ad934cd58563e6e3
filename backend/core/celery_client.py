"""The API's Celery handle: sends tasks by name (it imports no worker code) and revokes them."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from kombu import Queue

from backend.core.settings import Settings, get_settings

# "synthetic": synthetic-data collections (seconds each) on their own small worker, never behind a real collection.
QUEUES = ("collect", "synthetic", "train")
TASKS = {"collect": "aime.collect", "train": "aime.train"}


def configure(app: Celery, settings: Settings) -> Celery:
    """Broker settings shared by the API and the workers."""
    app.conf.update(
        broker_url=settings.celery_broker_url,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,  # above the longest run: no double delivery
            "global_keyprefix": settings.redis_prefix,
        },
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(q) for q in QUEUES],
        task_create_missing_queues=False,
        task_routes={name: {"queue": q} for q, name in TASKS.items()},
        task_acks_late=True,
        task_reject_on_worker_lost=False,  # a killed run is `lost` and resumed on purpose, never replayed
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
    )
    return app


@lru_cache
def get_celery() -> Celery:
    return configure(Celery("aime-api"), get_settings())


def queue_of(kind: str, synthetic: bool = False) -> str:
    """The queue of a run: a synthetic collection (seconds) has its own, so it never waits behind a real one."""
    return "synthetic" if kind == "collect" and synthetic else kind


def send_run(kind: str, run_id: int, synthetic: bool = False) -> str:
    result = get_celery().send_task(TASKS[kind], args=[run_id], queue=queue_of(kind, synthetic))
    return result.id


def revoke(task_id: str) -> None:
    get_celery().control.revoke(task_id)
