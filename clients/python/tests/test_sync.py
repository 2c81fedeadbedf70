"""The blocking wrapper, against a real chorusd."""

from __future__ import annotations

import threading
from typing import List

import pytest

import chorus
from chorus import Earliest, ErrorCode, Event, Offset, sync

from chorusd import Chorusd

WAIT = 10.0


def test_sync_publish_and_subscribe(broker: Chorusd) -> None:
    with sync.connect(broker.host, broker.port) as conn:
        acks = [conn.publish("sync/t", f"m{i}") for i in range(3)]
        subscription = conn.subscribe("sync/t", Earliest())
        events = [subscription.receive(timeout=WAIT) for _ in range(3)]
    assert [a.offset for a in acks] == [0, 1, 2]
    assert [e.text for e in events] == ["m0", "m1", "m2"]


def test_sync_iteration_stops_after_close(broker: Chorusd) -> None:
    conn = sync.connect(broker.host, broker.port)
    conn.publish("sync/t", "only")
    seen: List[Event] = []
    for event in conn.subscribe("sync/t", Earliest()):
        seen.append(event)
        conn.close()
    assert [e.text for e in seen] == ["only"]
    assert conn.closed


def test_sync_receive_timeout(broker: Chorusd) -> None:
    with sync.connect(broker.host, broker.port) as conn:
        subscription = conn.subscribe("sync/quiet")
        with pytest.raises(TimeoutError):
            subscription.receive(timeout=0.1)
        conn.publish("sync/quiet", "late")
        event = subscription.receive(timeout=WAIT)
    assert event.text == "late"


def test_sync_server_error(broker: Chorusd) -> None:
    with sync.connect(broker.host, broker.port) as conn:
        with pytest.raises(chorus.ServerError) as raised:
            conn.subscribe("sync/t", Offset(5))
    assert raised.value.code == ErrorCode.OFFSET_OUT_OF_RANGE


def test_sync_publish_from_many_threads(broker: Chorusd) -> None:
    offsets: List[int] = []
    lock = threading.Lock()
    with sync.connect(broker.host, broker.port) as conn:

        def publish_some() -> None:
            for i in range(25):
                ack = conn.publish("sync/threads", f"m{i}")
                with lock:
                    offsets.append(ack.offset)

        threads = [threading.Thread(target=publish_some) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    assert sorted(offsets) == list(range(100))


def test_sync_calls_after_close_raise(broker: Chorusd) -> None:
    conn = sync.connect(broker.host, broker.port)
    conn.close()
    with pytest.raises(chorus.ConnectionClosed):
        conn.publish("sync/t", "x")


def test_sync_subscriber_resumes_after_restart(broker: Chorusd) -> None:
    with sync.connect(broker.host, broker.port) as conn:
        for i in range(5):
            conn.publish("sync/resume", f"m{i}")
    backoff = chorus.Backoff(initial=0.05, max=0.5)
    with sync.Subscriber(
        broker.host, broker.port, "sync/resume", Earliest(), backoff=backoff
    ) as subscriber:
        first = [subscriber.receive(timeout=WAIT) for _ in range(3)]
        broker.restart()
        with sync.connect(broker.host, broker.port) as conn:
            conn.publish("sync/resume", "m5")
        rest = [subscriber.receive(timeout=WAIT) for _ in range(3)]
    assert [e.text for e in first + rest] == [f"m{i}" for i in range(6)]
