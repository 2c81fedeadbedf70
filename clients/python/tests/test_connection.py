"""Connection and Subscriber behaviour against a scripted server.

These cover what a real broker does not produce on demand: acknowledgements out of order,
server PINGs, damaged or unexpected frames, duplicates after a resume and recreated topics.
"""

from __future__ import annotations

import asyncio
import socket
from typing import List

import pytest

import chorus
from chorus import Backoff, ErrorCode, Offset
from chorus.protocol import (
    PREAMBLE,
    BadCrc,
    BadPreamble,
    ErrorFrame,
    Event,
    Events,
    Latest,
    Ping,
    Pong,
    Publish,
    PublishAck,
    Subscribe,
    Subscribed,
    TruncatedFrame,
    UnexpectedFrame,
    Unsubscribe,
    encode,
)

from fake_server import FakeServer, Peer

FAST = Backoff(initial=0.01, max=0.05, max_attempts=3)


def comment(offset: int) -> Event:
    return Event(offset, 1_700_000_000_000_000 + offset, 0, "p", f"c{offset}".encode())


async def answer_subscribe(peer: Peer, stream: int, start: int) -> Subscribe:
    request = await peer.recv()
    assert isinstance(request, Subscribe)
    peer.send(Subscribed(request.topic, stream, start, 0, start))
    return request


async def test_acks_matched_by_seq_out_of_order() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        publishes = [await peer.recv() for _ in range(3)]
        for publish in reversed(publishes):
            assert isinstance(publish, Publish)
            peer.send(PublishAck(publish.seq, ErrorCode.OK, publish.seq * 10, 4))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            acks = await asyncio.gather(*(conn.publish("t", f"m{i}") for i in range(3)))
    assert [ack.offset for ack in acks] == [ack.seq * 10 for ack in acks]
    assert sorted(ack.seq for ack in acks) == [1, 2, 3]


async def test_server_ping_answered_with_same_nonce() -> None:
    nonce = 2**63 + 5
    pongs: List[object] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        peer.send(Ping(nonce))
        pongs.append(await peer.recv())

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port):
            await asyncio.wait_for(server.done.wait(), 5)
    assert pongs == [Pong(nonce)]


async def test_ping_returns_round_trip_time() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        ping = await peer.recv()
        assert isinstance(ping, Ping)
        peer.send(Pong(ping.nonce))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            assert await conn.ping() >= 0.0


async def test_unexpected_frame_fails_connection() -> None:
    received: List[object] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.recv()
        peer.send(Publish(1, "t", b"servers do not publish"))
        received.extend(await peer.recv_until_closed())

    async with FakeServer(script) as server:
        conn = await chorus.connect("127.0.0.1", server.port)
        with pytest.raises(UnexpectedFrame):
            await conn.publish("t", "x")
        await conn.close()
        await asyncio.wait_for(server.done.wait(), 5)
    assert len(received) == 1
    error = received[0]
    assert isinstance(error, ErrorFrame)
    assert error.code == ErrorCode.UNEXPECTED_FRAME
    assert error.close is True


async def test_bad_crc_reported_to_server() -> None:
    received: List[object] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 1, 0)
        damaged = bytearray(encode(Events("t", 1, [comment(0)])))
        damaged[-1] ^= 0xFF
        peer.send_raw(bytes(damaged))
        received.extend(await peer.recv_until_closed())

    async with FakeServer(script) as server:
        conn = await chorus.connect("127.0.0.1", server.port)
        subscription = await conn.subscribe("t")
        with pytest.raises(BadCrc):
            await subscription.receive(timeout=5)
        assert conn.closed
        await asyncio.wait_for(server.done.wait(), 5)
    assert len(received) == 1
    error = received[0]
    assert isinstance(error, ErrorFrame)
    assert error.code == ErrorCode.BAD_CRC


async def test_stream_ending_inside_frame_is_truncated() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.recv()
        peer.send_raw(encode(PublishAck(1, ErrorCode.OK, 0, 1))[:10])

    async with FakeServer(script) as server:
        conn = await chorus.connect("127.0.0.1", server.port)
        with pytest.raises(TruncatedFrame):
            await conn.publish("t", "x")
        await conn.close()


async def test_error_close_fails_waiting_publish() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.recv()
        peer.send(ErrorFrame(ErrorCode.SHUTTING_DOWN, True, "", "bye"))

    async with FakeServer(script) as server:
        conn = await chorus.connect("127.0.0.1", server.port)
        with pytest.raises(chorus.ServerError) as raised:
            await conn.publish("t", "x")
        await conn.close()
    assert raised.value.code == ErrorCode.SHUTTING_DOWN
    assert raised.value.close is True
    assert raised.value.message == "bye"


async def test_publish_after_failure_raises_connection_closed() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        peer.send(ErrorFrame(ErrorCode.TIMEOUT, True, "", "idle"))

    async with FakeServer(script) as server:
        conn = await chorus.connect("127.0.0.1", server.port)
        await asyncio.wait_for(conn.wait_closed(), 5)
        with pytest.raises(chorus.ConnectionClosed):
            await conn.publish("t", "x")
        await conn.close()


async def test_topic_error_ends_only_its_subscription() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 1, 0)
        peer.send(ErrorFrame(ErrorCode.STORAGE_FAILED, False, "t", "disk"))
        publish = await peer.recv()
        assert isinstance(publish, Publish)
        peer.send(PublishAck(publish.seq, ErrorCode.OK, 0, 1))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            subscription = await conn.subscribe("t")
            with pytest.raises(chorus.ServerError) as raised:
                await subscription.receive(timeout=5)
            ack = await conn.publish("t", "still open")
    assert raised.value.code == ErrorCode.STORAGE_FAILED
    assert raised.value.topic == "t"
    assert ack.offset == 0


async def test_rejected_ack_raises_publish_rejected() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        publish = await peer.recv()
        assert isinstance(publish, Publish)
        peer.send(PublishAck(publish.seq, ErrorCode.PAYLOAD_TOO_LARGE, 0, 0))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            with pytest.raises(chorus.PublishRejected) as raised:
                await conn.publish("t", "x")
    assert raised.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert raised.value.topic == "t"


async def test_handshake_error_raises_server_error() -> None:
    async def script(peer: Peer) -> None:
        await peer.recv()
        peer.send_raw(PREAMBLE)
        peer.send(ErrorFrame(ErrorCode.FRAME_TOO_LARGE, True, "", "max_frame too small"))

    async with FakeServer(script) as server:
        with pytest.raises(chorus.ServerError) as raised:
            await chorus.connect("127.0.0.1", server.port)
    assert raised.value.code == ErrorCode.FRAME_TOO_LARGE


async def test_server_without_chorus_preamble_rejected() -> None:
    async def script(peer: Peer) -> None:
        await peer.recv()
        peer.send_raw(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async with FakeServer(script) as server:
        with pytest.raises(BadPreamble):
            await chorus.connect("127.0.0.1", server.port)


async def test_silent_server_times_out() -> None:
    async def script(peer: Peer) -> None:
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        with pytest.raises(chorus.ConnectTimeout):
            await chorus.connect("127.0.0.1", server.port, connect_timeout=0.2)


async def test_refused_connection_raises_connect_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    with pytest.raises(chorus.ConnectError):
        await chorus.connect("127.0.0.1", port)


async def test_receive_timeout_loses_nothing() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 1, 0)
        await peer.recv()  # the client's PING, sent after its timeout
        peer.send(Events("t", 1, [comment(0)]))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            subscription = await conn.subscribe("t")
            with pytest.raises(TimeoutError):
                await subscription.receive(timeout=0.05)
            await conn._send(Ping(1))
            event = await subscription.receive(timeout=5)
    assert event == comment(0)


async def test_full_subscription_buffer_delays_reading() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 1, 0)
        for offset in range(20):
            peer.send(Events("t", 1, [comment(offset)]))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        conn = await chorus.connect("127.0.0.1", server.port, max_buffered=3)
        subscription = await conn.subscribe("t")
        offsets = [(await subscription.receive(timeout=5)).offset for _ in range(20)]
        await conn.close()
    assert offsets == list(range(20))


async def test_unsubscribe_ends_iteration_and_sends_frame() -> None:
    received: List[object] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 1, 0)
        peer.send(Events("t", 1, [comment(0)]))
        received.extend(await peer.recv_until_closed())

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            subscription = await conn.subscribe("t")
            await subscription.unsubscribe()
            remaining = [event async for event in subscription]
        await asyncio.wait_for(server.done.wait(), 5)
    assert remaining == []
    assert received == [Unsubscribe("t")]


async def test_second_subscribe_replaces_first() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 1, 0)
        peer.send(Events("t", 1, [comment(0)]))
        await answer_subscribe(peer, 1, 5)
        peer.send(Events("t", 1, [comment(5)]))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with await chorus.connect("127.0.0.1", server.port) as conn:
            first = await conn.subscribe("t")
            second = await conn.subscribe("t", Offset(5))
            old = [event.offset async for event in first]
            new = await second.receive(timeout=5)
    assert old == [0]
    assert new.offset == 5


async def test_subscriber_drops_duplicates_after_resume() -> None:
    resumes: List[Subscribe] = []

    async def first(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 7, 0)
        peer.send(Events("t", 7, [comment(0), comment(1), comment(2)]))

    async def second(peer: Peer) -> None:
        await peer.handshake()
        resumes.append(await answer_subscribe(peer, 7, 1))
        # A misbehaving server repeats comments the subscriber already returned.
        peer.send(Events("t", 7, [comment(1), comment(2), comment(3), comment(4)]))
        await peer.recv_until_closed()

    async with FakeServer(first, second) as server:
        subscriber = chorus.Subscriber("127.0.0.1", server.port, "t", backoff=FAST)
        offsets = [(await subscriber.receive(timeout=5)).offset for _ in range(5)]
        await subscriber.close()
    assert offsets == [0, 1, 2, 3, 4]
    assert resumes == [Subscribe("t", Offset(3), 7)]
    assert subscriber.reconnects == 1


async def test_subscriber_reports_stream_change_in_events() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 7, 0)
        peer.send(Events("t", 7, [comment(0), comment(1)]))
        peer.send(Events("t", 9, [comment(0), comment(1)]))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with chorus.Subscriber("127.0.0.1", server.port, "t", backoff=FAST) as subscriber:
            before = [(await subscriber.receive(timeout=5)).offset for _ in range(2)]
            with pytest.raises(chorus.StreamChanged) as raised:
                await subscriber.receive(timeout=5)
            after = [(await subscriber.receive(timeout=5)).offset for _ in range(2)]
    assert before == [0, 1]
    assert (raised.value.old, raised.value.new) == (7, 9)
    assert after == [0, 1]
    assert subscriber.stream == 9


async def test_subscriber_reports_stream_change_on_resume() -> None:
    async def first(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 7, 0)
        peer.send(Events("t", 7, [comment(0), comment(1)]))

    async def second(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 9, 0)
        peer.send(Events("t", 9, [comment(0)]))
        await peer.recv_until_closed()

    async with FakeServer(first, second) as server:
        subscriber = chorus.Subscriber("127.0.0.1", server.port, "t", backoff=FAST)
        before = [(await subscriber.receive(timeout=5)).offset for _ in range(2)]
        with pytest.raises(chorus.StreamChanged) as raised:
            await subscriber.receive(timeout=5)
        after = await subscriber.receive(timeout=5)
        await subscriber.close()
    assert before == [0, 1]
    assert (raised.value.old, raised.value.new, raised.value.start) == (7, 9, 0)
    assert after.offset == 0


async def test_subscriber_adopts_stream_of_new_topic_silently() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 0, 0)
        peer.send(Events("t", 5, [comment(0)]))
        await peer.recv_until_closed()

    async with FakeServer(script) as server:
        async with chorus.Subscriber("127.0.0.1", server.port, "t", backoff=FAST) as subscriber:
            event = await subscriber.receive(timeout=5)
    assert event.offset == 0
    assert subscriber.stream == 5


async def test_subscriber_raises_after_max_attempts() -> None:
    async def first(peer: Peer) -> None:
        await peer.handshake()
        await answer_subscribe(peer, 7, 0)
        peer.send(Events("t", 7, [comment(0)]))

    server = FakeServer(first)
    async with server:
        subscriber = chorus.Subscriber("127.0.0.1", server.port, "t", Latest(), backoff=FAST)
        assert (await subscriber.receive(timeout=5)).offset == 0
        await asyncio.wait_for(server.done.wait(), 5)
        await server.stop()
        with pytest.raises(chorus.ConnectError):
            await subscriber.receive(timeout=5)
        await subscriber.close()
