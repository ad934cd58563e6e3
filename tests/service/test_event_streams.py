"""Live event streams stay bounded: capped in payload bytes, trimmed (and set to expire) when a run ends, while a
client reconnecting with a recent Last-Event-ID still gets what it missed."""

from __future__ import annotations

import asyncio
import json
import time

import redis


def _publisher(**overrides):
    from backend.core.pubsub import Publisher
    from backend.core.settings import Settings

    return Publisher(Settings(**overrides))


def _replay(settings, run_id: int, last_id: str) -> list[tuple[str, dict]]:
    """What an SSE client reconnecting with Last-Event-ID gets before `ready`."""
    from backend.core.pubsub import sse_stream

    async def go():
        out = []
        gen = sse_stream(settings, run_id, last_id)
        async for frame in gen:
            if frame.startswith("event: ready"):
                break
            if frame.startswith("id: "):
                lines = frame.splitlines()
                out.append((lines[0][4:], json.loads(lines[2][6:])))
        await gen.aclose()
        return out

    return asyncio.run(go())


def test_stream_capped_in_bytes(sqlite_service_env, redis_url):
    from backend.core.pubsub import channel

    pub = _publisher(events_max_bytes=20_000, events_maxlen=100_000)
    r = redis.Redis.from_url(redis_url)
    key = channel(pub.settings, 7)
    for i in range(200):  # ~200 KB of payload into a 20 KB stream
        pub.publish("metrics", 7, {"i": i, "pad": "x" * 900})
    entries = r.xrange(key)
    size = sum(len(f[b"d"]) for _, f in entries)
    assert size <= 20_000 and size >= 15_000  # trimmed to 90 % of the cap whenever it goes over
    assert int(r.get(key + ":bytes")) == size  # the running count matches the entries kept
    assert [json.loads(f[b"d"])["i"] for _, f in entries] == list(
        range(200 - len(entries), 200)
    )  # the newest
    assert r.ttl(key) == -1  # a live run's stream does not expire
    glob = sum(len(f[b"d"]) for _, f in r.xrange(channel(pub.settings)))
    assert glob <= 20_000  # the global stream too


def test_stream_trimmed_when_run_ends_and_reconnect_replays(sqlite_service_env, redis_url):
    from backend.core.pubsub import channel

    pub = _publisher(events_end_window_s=1.0)
    r = redis.Redis.from_url(redis_url)
    key = channel(pub.settings, 8)
    for i in range(50):
        pub.publish("metrics", 8, {"i": i})
    time.sleep(1.3)  # these are older than the window when the run ends
    for i in range(50, 55):
        pub.publish("metrics", 8, {"i": i})
    assert r.xlen(key) == 55
    pub.publish("status", 8, {"status": "succeeded"})
    entries = r.xrange(key)
    kept = [json.loads(f[b"d"]) for _, f in entries]
    assert [e.get("i") for e in kept] == [50, 51, 52, 53, 54, None] and kept[-1]["status"] == "succeeded"
    assert 0 < r.pttl(key) <= 1000 and 0 < r.pttl(key + ":bytes") <= 1000  # gone after the window
    assert int(r.get(key + ":bytes")) == sum(len(f[b"d"]) for _, f in entries)

    # A client that saw event 51 reconnects within the window: it gets 52..54 and the final status.
    seen = entries[1][0].decode()
    replay = _replay(pub.settings, 8, seen)
    assert [e.get("i") for _, e in replay] == [52, 53, 54, None] and replay[-1][1]["status"] == "succeeded"
    time.sleep(1.1)
    assert not r.exists(key) and not r.exists(key + ":bytes")


def test_metric_events_leave_without_waiting_and_in_order(sqlite_service_env, redis_url):
    """A metric batch's event is handed to the sender without a round trip of its own; a backlog goes out as one
    pipeline, and a status published after it (which waits) finds every earlier event already in the stream."""
    from backend.core import pubsub

    pub = _publisher()
    r = redis.Redis.from_url(redis_url)
    key = pubsub.channel(pub.settings, 9)
    sender = pubsub.sender(pub.settings.redis_url)
    n = pubsub.MAX_PENDING  # a publisher past this many queued events waits (backpressure)
    with sender.cond:  # hold the sender while the events queue up: they must go out later, in their order
        for i in range(n):
            pub.publish_json("metrics", 9, f'"i": {i}')
        assert len(sender.pending) >= n - 1  # queued, not sent: publish_json did not wait for Redis
    pub.publish("status", 9, {"status": "running"})  # returns once it and everything before it is in Redis
    kinds = [json.loads(f[b"d"]) for _, f in r.xrange(key)]
    assert [e.get("i") for e in kinds[:-1]] == list(range(n)) and kinds[-1]["status"] == "running"
    assert pubsub.flush(5.0)


def test_events_are_best_effort_when_redis_is_gone(sqlite_service_env, caplog):
    """Redis unreachable: publishing neither raises nor hangs (the database holds the data); the loss is logged."""
    from backend.core import pubsub

    pub = _publisher(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    t0 = time.perf_counter()
    pub.publish_json("metrics", 3, '"i": 1')
    pub.publish("status", 3, {"status": "running"})
    assert pubsub.flush(5.0) and time.perf_counter() - t0 < 5
    assert "live events not published" in caplog.text


def test_metric_events_published_one_by_one_share_round_trips(sqlite_service_env, redis_url, monkeypatch):
    """A run sending one point per call: its events linger a few ms for company instead of one round trip each;
    nobody waits for them, and they still arrive by themselves, in order, without a flush."""
    from backend.core import pubsub

    pub = _publisher()
    r = redis.Redis.from_url(redis_url)
    key = pubsub.channel(pub.settings, 10)
    sender = pubsub.sender(pub.settings.redis_url)
    assert pubsub.flush(5.0)
    calls = []
    real = sender._call
    monkeypatch.setattr(sender, "_call", lambda batch: calls.append(len(batch)) or real(batch))
    for i in range(100):
        pub.publish_json("metrics", 10, f'"i": {i}')
        time.sleep(0.0005)  # a fast client's pace: ~1 ms per call
    deadline = time.monotonic() + 5
    while r.xlen(key) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)  # no flush: the linger is bounded by itself
    assert [json.loads(f[b"d"])["i"] for _, f in r.xrange(key)] == list(range(100))
    assert sum(calls) == 100 and len(calls) <= 50, calls  # round trips shared (one each before)
    # A waiter does not linger: a status goes at once, with the metric events queued before it.
    pub.publish_json("metrics", 10, '"i": 100')
    t0 = time.perf_counter()
    pub.publish("status", 10, {"status": "running"})
    assert time.perf_counter() - t0 < pubsub.LINGER_S * 0.8 or calls[-1] == 2
    assert [json.loads(f[b"d"]).get("i") for _, f in r.xrange(key)][-2:] == [100, None]
