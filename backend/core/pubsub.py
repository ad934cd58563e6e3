"""Live events through Redis: each event goes into a capped stream (for Last-Event-ID replay) and out on pub/sub.

Channels: `{prefix}events` (everything) and `{prefix}events:run:{id}` (one run). One Lua call appends to the
stream and publishes with the stream id, atomically, so a subscriber that replays the stream up to id X and
then forwards pub/sub messages after X sees every event exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio as aredis

from backend.core.settings import Settings, get_settings

_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[1])
redis.call('PUBLISH', KEYS[1], id .. ' ' .. ARGV[1])
return id
"""


def channel(settings: Settings, run_id: int | None = None) -> str:
    return f"{settings.redis_prefix}events" + (f":run:{run_id}" if run_id is not None else "")


@lru_cache
def sync_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, health_check_interval=30)


class Publisher:
    """Publishes events of one kind for a run to its channel and to the global one."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.redis = sync_redis(self.settings.redis_url)
        self.script = self.redis.register_script(_PUBLISH)

    def publish(self, kind: str, run_id: int | None, data: dict[str, Any]) -> None:
        body = json.dumps({"type": kind, "run_id": run_id, **data}, default=str)
        maxlen = self.settings.events_maxlen
        try:
            self.script(keys=[channel(self.settings)], args=[body, maxlen])
            if run_id is not None:
                self.script(keys=[channel(self.settings, run_id)], args=[body, maxlen])
        except redis.RedisError:
            pass  # live updates are best effort; the database already holds the data


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def sse_stream(settings: Settings, run_id: int | None, last_id: str | None) -> AsyncIterator[str]:
    """Server-Sent Events: replay after `last_id` (Last-Event-ID), then live; a comment every 15 s keeps it open."""
    key = channel(settings, run_id)
    client = aredis.Redis.from_url(settings.redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(key)  # subscribe first, then replay: nothing falls between the two
        yield "retry: 2000\n\n"
        last = _id_tuple(last_id) if last_id else None
        if last_id:
            for sid, fields in await client.xrange(key, min=f"({last_id}", max="+"):
                sid = sid.decode()
                yield _frame(sid, fields[b"d"].decode())
                last = _id_tuple(sid)
        # Subscribed (and caught up): from here on nothing is missed. A page that fetched its data before this
        # point refetches on `ready` (the connection's "open" comes earlier, before the subscription is live).
        yield 'event: ready\ndata: {"type": "ready", "run_id": null}\n\n'
        idle = 0.0
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None:
                idle += 1.0
                if idle >= 15:
                    idle = 0.0
                    yield ": keep-alive\n\n"
                continue
            idle = 0.0
            sid, _, body = msg["data"].decode().partition(" ")
            if last is not None and _id_tuple(sid) <= last:
                continue  # already sent during the replay
            last = _id_tuple(sid)
            yield _frame(sid, body)
    except asyncio.CancelledError:
        raise
    finally:
        await pubsub.aclose()
        await client.aclose()


def _frame(sid: str, body: str) -> str:
    kind = json.loads(body).get("type", "message")
    return f"id: {sid}\nevent: {kind}\ndata: {body}\n\n"
