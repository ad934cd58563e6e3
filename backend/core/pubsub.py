"""Live events through Redis: each event goes into a capped stream (for Last-Event-ID replay) and out on pub/sub.

Channels: `{prefix}events` (everything) and `{prefix}events:run:{id}` (one run). One Lua call appends to the
stream and publishes with the stream id, atomically, so a subscriber that replays the stream up to id X and
then forwards pub/sub messages after X sees every event exactly once, in order.

Every event of a process goes out through one sender thread, in the order it was published. `publish` returns once
its event (and so every earlier one) is in Redis; a metric batch's event (`publish_json`) is handed to the sender
without waiting, so an ingest call answers without a Redis round trip of its own (~0.2 ms of a one-point call),
and events that queue up while one is on the wire leave together in one pipelined round trip.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio as aredis
from redis.exceptions import NoScriptError

from backend.core.settings import Settings, get_settings

FINAL = ("succeeded", "failed", "cancelled", "lost")  # models.FINAL_STATUSES (core/ imports no models)

# KEYS: (stream, its payload byte count) for the global stream and, if any, the run's. ARGV: body, most entries,
# most payload bytes, and for a run's final status the window (ms) its stream keeps (0 otherwise). A stream over a
# cap drops its oldest entries down to 90 % of it (amortised); a run that ends keeps the window, then expires.
_PUBLISH = """
local body, maxlen, cap, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, #KEYS, 2 do
  local key, bkey = KEYS[i], KEYS[i + 1]
  local id = redis.call('XADD', key, '*', 'd', body)
  redis.call('PUBLISH', key, id .. ' ' .. body)
  local bytes = redis.call('INCRBY', bkey, #body)
  local n = redis.call('XLEN', key)
  local cutoff = 0
  if window > 0 and i > 1 then
    local t = redis.call('TIME')
    cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - window
  end
  if bytes > cap or n > maxlen or cutoff > 0 then
    local low_b = bytes > cap and math.floor(cap * 0.9) or bytes
    local low_n = n > maxlen and math.floor(maxlen * 0.9) or n
    local freed, dropped, keep, start = 0, 0, nil, '-'
    while keep == nil do
      local batch = redis.call('XRANGE', key, start, '+', 'COUNT', 32)  -- bodies come along: few at a time
      if #batch == 0 then break end
      for _, e in ipairs(batch) do
        local ms = tonumber(string.match(e[1], '^(%d+)'))
        if e[1] == id or (bytes - freed <= low_b and n - dropped <= low_n and ms >= cutoff) then
          keep = e[1]
          break
        end
        freed = freed + #e[2][2]
        dropped = dropped + 1
      end
      start = '(' .. batch[#batch][1]
    end
    if keep then redis.call('XTRIM', key, 'MINID', keep) end
    redis.call('DECRBY', bkey, freed)
  end
  if cutoff > 0 then
    redis.call('PEXPIRE', key, window)
    redis.call('PEXPIRE', bkey, window)
  end
end
return 1
"""


def channel(settings: Settings, run_id: int | None = None) -> str:
    return f"{settings.redis_prefix}events" + (f":run:{run_id}" if run_id is not None else "")


@lru_cache
def sync_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, health_check_interval=30)


log = logging.getLogger(__name__)
MAX_PENDING = 256  # events waiting for the sender; past this a publisher waits (Redis slower than ingest)
# A metric batch's event may wait this long for others to share its round trip: a run sending one point per call
# cost ~100 us of this process's CPU per event, one round trip each (a dashboard cannot see 5 ms). Anything a
# caller waits for (publish, flush, the backpressure above) goes at once, with every event queued before it.
LINGER_S, LINGER_BATCH = 0.005, 32
WAIT_S = 30.0  # the longest a publisher waits for its event (the socket timeout ends a hung call sooner)


class _Sender:
    """Sends publish-script calls from one thread in the order they were submitted; a backlog goes out as one
    pipeline. Live events are best effort (the database holds the data): a Redis error is logged, not raised."""

    def __init__(self, client: redis.Redis):
        self.client, self.sha = client, None
        self.cond = threading.Condition()
        self.pending: list[tuple[list[str], list]] = []
        self.submitted = self.sent = 0
        self.urgent = False  # someone waits for what is pending: no lingering
        self.pid = os.getpid()
        threading.Thread(target=self._run, name="event-sender", daemon=True).start()

    def submit(self, keys: list[str], args: list, wait: bool) -> None:
        with self.cond:
            self.pending.append((keys, args))
            self.submitted += 1
            ticket = self.submitted
            wait = wait or len(self.pending) > MAX_PENDING
            self.urgent = self.urgent or wait
            # Wake the sender for the first event, a full round trip or a waiter; not once per lingering event.
            if wait or len(self.pending) in (1, LINGER_BATCH):
                self.cond.notify_all()
            if wait:
                self._wait_for(ticket, WAIT_S)

    def flush(self, timeout: float = WAIT_S) -> bool:
        """Wait until every event submitted so far has been sent (or failed); False on timeout."""
        with self.cond:
            self.urgent = True
            self.cond.notify_all()
            return self._wait_for(self.submitted, timeout)

    def _wait_for(self, ticket: int, timeout: float) -> bool:
        return self.cond.wait_for(lambda: self.sent >= ticket, timeout)

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.pending)
                self.cond.wait_for(lambda: self.urgent or len(self.pending) >= LINGER_BATCH, LINGER_S)
                batch, self.pending, self.urgent = self.pending, [], False
            try:
                self._send(batch)
            except redis.RedisError as exc:
                log.warning("live events not published (%d): %s", len(batch), exc)
            except Exception:  # noqa: BLE001 - the sender must outlive any one batch
                log.exception("live events not published (%d)", len(batch))
            with self.cond:
                self.sent += len(batch)
                self.cond.notify_all()

    def _send(self, batch: list[tuple[list[str], list]]) -> None:
        if self.sha is None:
            self.sha = self.client.script_load(_PUBLISH)
        for attempt in range(2):
            results = self._call(batch)
            missing = [b for b, r in zip(batch, results, strict=True) if isinstance(r, NoScriptError)]
            if not missing or attempt:
                break
            # Redis restarted (its script cache is empty): load it again
            self.sha = self.client.script_load(_PUBLISH)
            batch = missing  # the others went through; the missing ones again, in their order
        for r in results:
            if isinstance(r, Exception):
                raise r

    def _call(self, batch: list[tuple[list[str], list]]) -> list:
        """One round trip: a plain call for one event, a pipeline for more; errors come back as results."""
        if len(batch) == 1:
            keys, args = batch[0]
            try:
                return [self.client.evalsha(self.sha, len(keys), *keys, *args)]
            except NoScriptError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for keys, args in batch:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)


_SENDERS: dict[str, _Sender] = {}
_SENDERS_LOCK = threading.Lock()


def sender(url: str) -> _Sender:
    """This process's sender for a Redis URL (a forked child starts its own: threads do not survive fork)."""
    with _SENDERS_LOCK:
        s = _SENDERS.get(url)
        if s is None or s.pid != os.getpid():
            s = _SENDERS[url] = _Sender(sync_redis(url))
        return s


def flush(timeout: float = WAIT_S) -> bool:
    """Wait until every event this process has published is in Redis (shutdown, and tests that read streams)."""
    return all(s.flush(timeout) for s in list(_SENDERS.values()) if s.pid == os.getpid())


class Publisher:
    """Publishes events of one kind for a run to its channel and to the global one."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()

    def publish(self, kind: str, run_id: int | None, data: dict[str, Any]) -> None:
        """One round trip: into the global stream and the run's, each capped in entries and payload bytes; a run's
        final status trims its stream to the last `events_end_window_s` and lets it expire after that long."""
        body = json.dumps({"type": kind, "run_id": run_id, **data}, default=str)
        self._send(run_id, body, ends=kind == "status" and data.get("status") in FINAL)  # the run ended

    def publish_json(self, kind: str, run_id: int | None, fields: str) -> None:
        """publish() for an event whose fields are JSON text already (`"points": [...]`, a metric batch's, written
        once by its producer); never a status. Returns without waiting for Redis: the event follows every event this
        process published before it, and precedes every later one."""
        assert kind != "status"
        body = f'{{"type": {json.dumps(kind)}, "run_id": {json.dumps(run_id)}, {fields}}}'
        self._send(run_id, body, ends=False, wait=False)

    def _send(self, run_id: int | None, body: str, ends: bool, wait: bool = True) -> None:
        s = self.settings
        keys = [channel(s), channel(s) + ":bytes"]
        if run_id is not None:
            keys += [channel(s, run_id), channel(s, run_id) + ":bytes"]
        window = max(1, int(s.events_end_window_s * 1000)) if ends and run_id is not None else 0
        sender(s.redis_url).submit(keys, [body, s.events_maxlen, s.events_max_bytes, window], wait)


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


_TYPE = re.compile(r'\{"type": "([a-z_]+)", ')  # how Publisher writes every body's start


def _frame(sid: str, body: str) -> str:
    m = _TYPE.match(body)  # not a parse of the whole body (a metric batch's can be 100 KB) per subscriber
    kind = m.group(1) if m else json.loads(body).get("type", "message")
    return f"id: {sid}\nevent: {kind}\ndata: {body}\n\n"
