"""Integration tests against a real chorusd on loopback.

Each test gets its own broker and data directory from the ``broker`` fixture in conftest.py.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Callable, List

import pytest

import chorus
from chorus import Backoff, Earliest, ErrorCode, Event, Last, Latest, Offset, Since

from chorusd import Chorusd

# Time any single wait for the broker may take before the test fails.
WAIT = 10.0


async def publish_all(conn: chorus.Connection, topic: str, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        await conn.publish(topic, f"comment {i}")


async def take(subscription: chorus.Subscription, count: int) -> List[Event]:
    return [await subscription.receive(timeout=WAIT) for _ in range(count)]


async def test_publish_returns_offsets_in_order(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        first = await conn.publish("live/final", b"GOAL!")
        second = await conn.publish("live/final", "what a goal")
    assert (first.seq, first.offset) == (1, 0)
    assert (second.seq, second.offset) == (2, 1)
    assert first.stream != 0
    assert second.stream == first.stream


async def test_concurrent_publishes_get_distinct_offsets(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        acks = await asyncio.gather(*(conn.publish("t", f"m{i}") for i in range(200)))
    assert sorted(ack.offset for ack in acks) == list(range(200))
    assert sorted(ack.seq for ack in acks) == list(range(1, 201))


async def test_welcome_announces_limits(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        welcome = conn.welcome
    assert welcome.version == 1
    assert welcome.max_payload > 0
    assert welcome.max_frame >= welcome.max_payload


async def test_subscribe_latest_gets_only_new(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        await publish_all(conn, "t", 3)
        subscription = await conn.subscribe("t", Latest())
        await publish_all(conn, "t", 2, first=3)
        events = await take(subscription, 2)
    assert subscription.subscribed.start == 3
    assert [e.offset for e in events] == [3, 4]
    assert [e.payload for e in events] == [b"comment 3", b"comment 4"]


async def test_subscribe_offset_starts_there(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        await publish_all(conn, "t", 5)
        subscription = await conn.subscribe("t", Offset(2))
        events = await take(subscription, 3)
    assert [e.offset for e in events] == [2, 3, 4]


async def test_subscribe_last_n(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        await publish_all(conn, "t", 5)
        subscription = await conn.subscribe("t", Last(2))
        events = await take(subscription, 2)
    assert subscription.subscribed.start == 3
    assert [e.text for e in events] == ["comment 3", "comment 4"]


async def test_subscribe_earliest(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        await publish_all(conn, "t", 4)
        subscription = await conn.subscribe("t", Earliest())
        events = await take(subscription, 4)
    assert [e.offset for e in events] == [0, 1, 2, 3]


async def test_subscribe_since_broker_time(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        await publish_all(conn, "t", 3)
        history = await take(await conn.subscribe("t", Earliest()), 3)
        subscription = await conn.subscribe("t", Since(history[1].time_us + 1))
        await conn.publish("t", "comment 3")
        first = await subscription.receive(timeout=WAIT)
    assert first.offset > 1


async def test_subscribe_before_topic_exists(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        subscription = await conn.subscribe("not/yet", Latest())
        ack = await conn.publish("not/yet", "first")
        event = await subscription.receive(timeout=WAIT)
    assert subscription.subscribed.stream == 0
    assert event.offset == 0
    assert subscription.stream == ack.stream


async def test_invalid_topic_rejected_before_sending(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        with pytest.raises(chorus.InvalidTopic):
            await conn.publish("../etc", "x")
        with pytest.raises(chorus.InvalidTopic):
            await conn.subscribe("a//b")
        # Had either frame been sent, the broker would have closed the connection.
        ack = await conn.publish("fine", "x")
        assert not conn.closed
    assert ack.offset == 0


async def test_offset_past_end_raises_server_error(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        await publish_all(conn, "t", 2)
        with pytest.raises(chorus.ServerError) as raised:
            await conn.subscribe("t", Offset(100))
        ack = await conn.publish("t", "connection stays open")
    assert raised.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
    assert raised.value.topic == "t"
    assert raised.value.close is False
    assert ack.offset == 2


async def test_payload_above_max_rejected_locally(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        too_big = bytes(conn.welcome.max_payload + 1)
        with pytest.raises(chorus.PayloadTooLarge):
            await conn.publish("t", too_big)
        ack = await conn.publish("t", bytes(conn.welcome.max_payload))
    assert ack.offset == 0


async def test_small_max_frame_refused_by_server(broker: Chorusd) -> None:
    with pytest.raises(chorus.ServerError) as raised:
        await chorus.connect(broker.host, broker.port, max_frame=1024)
    assert raised.value.code == ErrorCode.FRAME_TOO_LARGE
    assert raised.value.close is True


async def test_unsubscribe_stops_delivery(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        subscription = await conn.subscribe("t")
        await subscription.unsubscribe()
        await publish_all(conn, "t", 3)
        remaining = [event async for event in subscription]
    assert remaining == []


async def test_idle_connection_answers_server_ping(
    make_broker: Callable[..., Chorusd],
) -> None:
    # The broker checks timeouts every 500 ms and PINGs after half the idle timeout.
    broker = make_broker(config="[limits]\nidle_timeout_ms = 1500\n")
    async with await chorus.connect(broker.host, broker.port) as conn:
        assert conn.welcome.idle_timeout_ms == 1500
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + WAIT
        # Two answered PINGs take longer than the idle timeout, so only the PONGs kept the
        # connection open.
        while conn._pongs_sent < 2:
            assert not conn.closed, "the broker closed the connection"
            assert loop.time() < deadline, "the broker sent fewer than 2 PINGs"
            await asyncio.sleep(0.05)
        assert loop.time() - started > 1.5
        ack = await conn.publish("t", "still here")
    assert ack.offset == 0


async def test_fanout_to_five_subscribers_exactly_once_in_order(broker: Chorusd) -> None:
    count = 1000
    connections = [await chorus.connect(broker.host, broker.port) for _ in range(5)]
    subscriptions = [await c.subscribe("event/final", Latest()) for c in connections]

    async def collect(subscription: chorus.Subscription) -> List[Event]:
        return [await subscription.receive(timeout=WAIT) for _ in range(count)]

    collectors = [asyncio.ensure_future(collect(s)) for s in subscriptions]
    async with await chorus.connect(broker.host, broker.port) as publisher:
        for start in range(0, count, 100):
            batch = range(start, start + 100)
            await asyncio.gather(*(publisher.publish("event/final", f"c{i}") for i in batch))
    received = await asyncio.gather(*collectors)

    # Nothing more arrives after the 1000th comment: no duplicates trail behind.
    for subscription in subscriptions:
        with pytest.raises(TimeoutError):
            await subscription.receive(timeout=0.3)
    for conn in connections:
        await conn.close()

    payloads_by_offset = {e.offset: e.payload for e in received[0]}
    for events in received:
        assert [e.offset for e in events] == list(range(count))
        assert {e.offset: e.payload for e in events} == payloads_by_offset
    assert sorted(payloads_by_offset.values()) == sorted(f"c{i}".encode() for i in range(count))


async def test_resume_after_restart_has_no_gap(broker: Chorusd) -> None:
    topic = "live/resume"
    backoff = Backoff(initial=0.05, max=0.5)
    async with await chorus.connect(broker.host, broker.port) as conn:
        await publish_all(conn, topic, 100)

    subscriber = chorus.Subscriber(broker.host, broker.port, topic, Earliest(), backoff=backoff)
    received = [await subscriber.receive(timeout=WAIT) for _ in range(40)]
    stream = subscriber.stream

    # The broker stops with 60 comments not yet returned, and comes back on the same port.
    await asyncio.get_running_loop().run_in_executor(None, broker.restart)
    async with await chorus.connect(broker.host, broker.port) as conn:
        await publish_all(conn, topic, 100, first=100)

    while len(received) < 200:
        received.append(await subscriber.receive(timeout=WAIT))
    with pytest.raises(TimeoutError):
        await subscriber.receive(timeout=0.3)
    await subscriber.close()

    assert [e.offset for e in received] == list(range(200))
    assert [e.text for e in received] == [f"comment {i}" for i in range(200)]
    assert subscriber.reconnects >= 1
    assert subscriber.stream == stream


async def test_resume_after_topic_recreated_reports_stream_change(broker: Chorusd) -> None:
    topic = "live/recreated"
    backoff = Backoff(initial=0.05, max=0.5)
    async with await chorus.connect(broker.host, broker.port) as conn:
        old = await conn.publish(topic, "old 0")

    subscriber = chorus.Subscriber(broker.host, broker.port, topic, Earliest(), backoff=backoff)
    assert (await subscriber.receive(timeout=WAIT)).text == "old 0"

    # Deleting the topic's directory while the broker is down makes the next publish create
    # the topic again, with a new stream id.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, broker.stop)
    shutil.rmtree(broker.data_dir / "topics" / topic.replace("/", "+"))
    await loop.run_in_executor(None, broker.start, broker.port)
    async with await chorus.connect(broker.host, broker.port) as conn:
        new = await conn.publish(topic, "new 0")

    with pytest.raises(chorus.StreamChanged) as raised:
        await subscriber.receive(timeout=WAIT)
    event = await subscriber.receive(timeout=WAIT)
    await subscriber.close()

    assert raised.value.old == old.stream
    assert new.stream != old.stream
    assert (event.offset, event.text) == (0, "new 0")
    assert subscriber.stream == new.stream


async def test_subscriber_gives_up_after_max_attempts(broker: Chorusd) -> None:
    backoff = Backoff(initial=0.01, max=0.05, max_attempts=2)
    async with await chorus.connect(broker.host, broker.port) as conn:
        await conn.publish("t", "x")
    subscriber = chorus.Subscriber(broker.host, broker.port, "t", Earliest(), backoff=backoff)
    await subscriber.receive(timeout=WAIT)
    await asyncio.get_running_loop().run_in_executor(None, broker.stop)
    with pytest.raises((chorus.ConnectError, chorus.ServerError, chorus.ConnectionClosed)):
        await subscriber.receive(timeout=WAIT)
    await subscriber.close()
