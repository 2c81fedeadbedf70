"""Moderation, reactions and capped delivery against a scripted server.

The scripted server checks the exact frames the client sends, replies to MODERATE with chosen
codes, and sends SKIPPED frames between comments, which a real broker does only under load.
"""

from __future__ import annotations

import asyncio
from typing import List

import pytest

import chorus
from chorus import Ban, DeleteComment, ErrorCode, SlowMode, Unban
from chorus.protocol import (
    Cap,
    Event,
    Events,
    Frame,
    MalformedFrame,
    Moderate,
    ModerateAck,
    Ping,
    Pong,
    React,
    Skipped,
    Subscribe,
    Subscribed,
)

from fake_server import FakeServer, Peer


def comment(offset: int) -> Event:
    return Event(offset, 1_700_000_000_000_000 + offset, 0, "p", f"c{offset}".encode())


async def answer_subscribe(peer: Peer) -> Subscribe:
    request = await peer.recv()
    assert isinstance(request, Subscribe)
    peer.send(Subscribed(request.topic, 1, 0, 0, 0))
    return request


async def test_moderate_returns_on_ok() -> None:
    received: List[Frame] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        request = await peer.recv()
        received.append(request)
        assert isinstance(request, Moderate)
        peer.send(ModerateAck(request.seq, ErrorCode.OK))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            await conn.moderate(DeleteComment("live/final", 1042))
    assert len(received) == 1
    request = received[0]
    assert isinstance(request, Moderate)
    assert request.action == DeleteComment("live/final", 1042)


async def test_moderate_raises_server_code() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        request = await peer.recv()
        assert isinstance(request, Moderate)
        peer.send(ModerateAck(request.seq, ErrorCode.COMMENT_NOT_FOUND))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            with pytest.raises(chorus.ModerationRejected) as raised:
                await conn.moderate(DeleteComment("live/final", 7))
            assert not conn.closed
    assert raised.value.code == ErrorCode.COMMENT_NOT_FOUND
    assert raised.value.action == DeleteComment("live/final", 7)
    assert "COMMENT_NOT_FOUND" in str(raised.value)


async def test_moderate_acks_matched_by_seq() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        requests = [await peer.recv() for _ in range(3)]
        for request in reversed(requests):
            assert isinstance(request, Moderate)
            forbidden = isinstance(request.action, Unban)
            code = ErrorCode.FORBIDDEN if forbidden else ErrorCode.OK
            peer.send(ModerateAck(request.seq, code))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            results = await asyncio.gather(
                conn.moderate(Ban("u-81", "live/final", 300)),
                conn.moderate(Unban("u-81")),
                conn.moderate(SlowMode("live/final", 5000)),
                return_exceptions=True,
            )
    assert results[0] is None
    assert isinstance(results[1], chorus.ModerationRejected)
    assert results[1].code == ErrorCode.FORBIDDEN
    assert results[2] is None


async def test_moderate_rejects_action_outside_table_before_sending() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        assert await peer.recv_until_closed() == []

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            with pytest.raises(MalformedFrame):
                await conn.moderate(Ban("u-81", "live/final", 0))


async def test_moderate_fails_when_connection_closes() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.recv()

    async with FakeServer(script) as server:
        conn = await chorus.connect("127.0.0.1", server.port)
        with pytest.raises(chorus.ConnectionClosed):
            await conn.moderate(Unban("u-81"))
        await conn.close()


async def test_react_and_cap_send_their_frames() -> None:
    received: List[Frame] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        received.extend(await peer.recv_until_closed())

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            await conn.react("live/final", "heart")
            await conn.react("live/final", "clap", 3)
            await conn.cap("live/final", 5)
            await conn.cap("live/final", 0)
        await asyncio.wait_for(server.done.wait(), 5)
    assert received == [
        React("live/final", "heart", 1),
        React("live/final", "clap", 3),
        Cap("live/final", 5),
        Cap("live/final", 0),
    ]


async def test_react_rejects_long_kind_before_sending() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        assert await peer.recv_until_closed() == []

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            with pytest.raises(MalformedFrame):
                await conn.react("live/final", "k" * 33)


async def test_skipped_counted_in_order_with_comments() -> None:
    # Each PONG follows the frames sent before it, so after ping() the client has read them.
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer)
        peer.send(Events("t", 1, [comment(0)]))
        peer.send(Skipped("t", 40, 41))
        peer.send(Events("t", 1, [comment(41)]))
        await answer_ping(peer, [])
        await answer_ping(peer, [Skipped("t", 9, 51)])
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            subscription = await conn.subscribe("t")
            await conn.ping()
            assert subscription.skipped == 0
            assert (await subscription.receive(timeout=5)).offset == 0
            assert subscription.skipped == 40
            assert subscription.last_skipped == Skipped("t", 40, 41)
            assert (await subscription.receive(timeout=5)).offset == 41
            assert subscription.skipped == 40
            await conn.ping()
            assert subscription.skipped == 49
            assert subscription.last_skipped == Skipped("t", 9, 51)


async def answer_ping(peer: Peer, before: List[Frame]) -> None:
    """Wait for the client's PING, then send ``before`` and the PONG."""
    ping = await peer.recv()
    assert isinstance(ping, Ping)
    for frame in before:
        peer.send(frame)
    peer.send(Pong(ping.nonce))


async def test_skipped_for_other_topic_is_dropped() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer)
        peer.send(Skipped("other", 5, 10))
        peer.send(Events("t", 1, [comment(0)]))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            subscription = await conn.subscribe("t")
            assert (await subscription.receive(timeout=5)).offset == 0
            assert subscription.skipped == 0
            assert not conn.closed
