"""The Celery app of the workers: queues `collect`, `synthetic` and `train`, routed by task name (see
backend.core.celery_client)."""

from __future__ import annotations

from celery import Celery

from backend.core.celery_client import configure
from backend.core.settings import get_settings

app = configure(Celery("aime", include=["worker.tasks"]), get_settings())
