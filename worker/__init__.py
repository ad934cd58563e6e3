"""Celery workers: glue between the queue, the API (over HTTP, with the token only) and aime_core."""
