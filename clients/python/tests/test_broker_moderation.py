"""Moderation, reactions and capped delivery against a real chorusd on loopback.

The broker runs without authentication, so every session may moderate and every publisher has
the empty user id.
"""

from __future__ import annotations

import asyncio
import json
from typing import List

import pytest

import chorus
from chorus import DeleteComment, Earliest, ErrorCode, Event, SlowMode, Unban

from chorusd import Chorusd

# Time any single wait for the broker may take before the test fails.
WAIT = 10.0


async def take(subscription: chorus.Subscription, count: int) -> List[Event]:
    return [await subscription.receive(timeout=WAIT) for _ in range(count)]


async def test_deleted_comment_reads_back_deleted(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        deleted = await conn.publish("mod/delete", "rude")
        kept = await conn.publish("mod/delete", "fine")
        await conn.moderate(DeleteComment("mod/delete", deleted.offset))
        subscription = await conn.subscribe("mod/delete", Earliest())
        first, second, tombstone = await take(subscription, 3)
    assert first.offset == deleted.offset
    assert first.is_deleted
    assert first.payload == b""
    assert second.offset == kept.offset
    assert second.text == "fine"
    assert tombstone.is_tombstone
    assert tombstone.tombstone_target == deleted.offset


async def test_live_subscriber_receives_tombstone(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        subscription = await conn.subscribe("mod/live")
        ack = await conn.publish("mod/live", "soon gone")
        await conn.moderate(DeleteComment("mod/live", ack.offset))
        comment, tombstone = await take(subscription, 2)
    assert comment.text == "soon gone"
    assert tombstone.tombstone_target == ack.offset


async def test_delete_unknown_offset_is_comment_not_found(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        await conn.publish("mod/missing", "only one")
        with pytest.raises(chorus.ModerationRejected) as raised:
            await conn.moderate(DeleteComment("mod/missing", 99))
        assert not conn.closed
    assert raised.value.code == ErrorCode.COMMENT_NOT_FOUND


async def test_slow_mode_rejects_then_lifts(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        await conn.moderate(SlowMode("mod/slow", 60_000))
        await conn.publish("mod/slow", "first")
        with pytest.raises(chorus.PublishRejected) as raised:
            await conn.publish("mod/slow", "too soon")
        await conn.moderate(SlowMode("mod/slow", 0))
        ack = await conn.publish("mod/slow", "allowed again")
    assert raised.value.code == ErrorCode.SLOW_MODE
    assert ack.offset == 1


async def test_unban_of_unknown_user_is_ok(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        await conn.moderate(Unban("nobody"))
        assert not conn.closed


async def test_reaction_reaches_reactions_stream(broker: Chorusd) -> None:
    async with await chorus.connect(broker.host, broker.port) as conn:
        # chorusd counts the reactions of sessions subscribed to an existing topic only.
        await conn.publish("mod/react", "a comment to react to")
        await conn.subscribe("mod/react")
        reactions = await conn.subscribe("_reactions/mod/react", Earliest())
        await conn.react("mod/react", "heart")
        event = await reactions.receive(timeout=WAIT)
    summary = json.loads(event.text)
    assert summary["reactions"] == {"heart": 1}


async def test_capped_subscription_counts_skipped(broker: Chorusd) -> None:
    total = 30
    async with await chorus.connect(broker.host, broker.port) as conn:
        subscription = await conn.subscribe("mod/capped")
        await conn.cap("mod/capped", 1)
        # The server handles frames in order, so the PONG to a PING sent after the CAP shows
        # that the cap is in place.
        await conn.ping()
        for i in range(total):
            await conn.publish("mod/capped", f"comment {i}")
        delivered = await receive_until_accounted(subscription, total)
    assert delivered + subscription.skipped == total
    assert subscription.skipped > 0
    last = subscription.last_skipped
    assert last is not None
    assert last.through == total


async def receive_until_accounted(subscription: chorus.Subscription, total: int) -> int:
    """Receive until delivered and skipped comments add up to ``total``; return delivered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    delivered = 0
    while delivered + subscription.skipped < total:
        assert loop.time() < deadline, f"{delivered} delivered, {subscription.skipped} skipped"
        try:
            await subscription.receive(timeout=0.2)
            delivered += 1
        except TimeoutError:
            pass
    return delivered
