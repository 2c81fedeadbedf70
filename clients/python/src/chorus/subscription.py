"""One subscription on one connection."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, AsyncIterator, Deque, Optional, Tuple, Union

from .errors import ConnectionClosed
from .protocol import Event, Events, Skipped, Subscribed

if TYPE_CHECKING:
    from .connection import Connection


class Subscription(AsyncIterator[Event]):
    """The comments of one topic on one :class:`~chorus.Connection`, as an async iterator.

    Iteration yields :class:`~chorus.protocol.Event` objects in offset order. It stops
    (``StopAsyncIteration``) after :meth:`unsubscribe`, after the connection is closed with
    :meth:`Connection.close`, and when a new subscribe call for the same topic replaces this
    subscription. It raises :class:`~chorus.errors.ServerError` when the server ends the
    subscription with an ERROR, and :class:`~chorus.errors.ConnectionClosed` when the connection
    fails. Comments received before such an end are yielded first.

    A capped subscription (see :meth:`Connection.cap`) also receives SKIPPED frames, which
    count the comments the server left out. They are kept in order with the comments, and
    :attr:`skipped` and :attr:`last_skipped` take each one into account once the comments
    received before it have been returned.

    The subscription buffers at most ``max_buffered`` comments. While it is full the connection
    stops reading from its socket, so a subscription that is never read also holds up publish
    acknowledgements and the other subscriptions of its connection. The server meanwhile keeps
    the comments in its log and sends them once reading resumes.
    """

    def __init__(self, connection: Connection, subscribed: Subscribed, max_buffered: int) -> None:
        self._connection = connection
        self._subscribed = subscribed
        self._stream = subscribed.stream
        self._max_buffered = max(1, max_buffered)
        # Comments with their stream id, and SKIPPED frames in the order they arrived. The first
        # item is never a SKIPPED frame, because those are counted as soon as they reach the
        # front.
        self._buffer: Deque[Union[Tuple[int, Event], Skipped]] = deque()
        self._skipped = 0
        self._last_skipped: Optional[Skipped] = None
        self._end: Optional[BaseException] = None
        self._ended = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def topic(self) -> str:
        """Topic of the subscription."""
        return self._subscribed.topic

    @property
    def subscribed(self) -> Subscribed:
        """The server's SUBSCRIBED frame: stream id and start, earliest and end offsets."""
        return self._subscribed

    @property
    def stream(self) -> int:
        """Stream id of the last comment returned, or of the SUBSCRIBED frame before any.

        It differs from ``subscribed.stream`` when the topic was created (from stream 0) or
        recreated during the subscription.
        """
        return self._stream

    @property
    def skipped(self) -> int:
        """Comments the server left out of this capped subscription so far.

        The sum of the counts of the SKIPPED frames that arrived before the next comment to be
        returned; 0 for a subscription that was never capped.
        """
        return self._skipped

    @property
    def last_skipped(self) -> Optional[Skipped]:
        """The latest SKIPPED frame counted in :attr:`skipped`, or ``None``.

        Its ``through`` is the offset after the last comment it accounts for.
        """
        return self._last_skipped

    @property
    def ended(self) -> bool:
        """Whether the subscription ended; buffered comments may still be returned."""
        return self._ended

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive(None)
        except _EndOfSubscription:
            raise StopAsyncIteration from None

    async def receive(self, timeout: Optional[float] = None) -> Event:
        """Return the next comment, waiting at most ``timeout`` seconds (forever when ``None``).

        Raises ``TimeoutError`` when the time passes with no comment, and
        :class:`~chorus.errors.ConnectionClosed` once the subscription ended without an error.
        A timeout or cancellation never loses a comment.
        """
        try:
            return await self._receive(timeout)
        except _EndOfSubscription:
            raise ConnectionClosed(f"subscription to {self.topic!r} ended") from None

    async def unsubscribe(self) -> None:
        """End the subscription and send UNSUBSCRIBE; buffered comments are dropped."""
        await self._connection._unsubscribe_subscription(self)

    async def _receive(self, timeout: Optional[float]) -> Event:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._buffer:
            if self._ended:
                if self._end is not None:
                    raise self._end
                raise _EndOfSubscription
            self._readable.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no comment on {self.topic!r} within {timeout} s")
            try:
                # Waiting on the flag, not on the buffer, is what makes a timeout safe: the
                # comment is taken below, after the wait, with no await in between.
                await asyncio.wait_for(self._readable.wait(), remaining)
            except asyncio.TimeoutError:
                continue
        item = self._buffer.popleft()
        assert not isinstance(item, Skipped), "SKIPPED frames are counted at the front"
        self._stream, event = item
        self._count_leading_skipped()
        if len(self._buffer) < self._max_buffered:
            self._writable.set()
        return event

    def _deliver(self, events: Events) -> None:
        """Buffer a batch received by the connection."""
        if self._ended:
            return
        self._buffer.extend((events.stream, event) for event in events.events)
        if len(self._buffer) >= self._max_buffered:
            self._writable.clear()
        self._readable.set()

    def _deliver_skipped(self, skipped: Skipped) -> None:
        """Queue a SKIPPED frame behind the comments received before it."""
        if self._ended:
            return
        self._buffer.append(skipped)
        self._count_leading_skipped()

    def _count_leading_skipped(self) -> None:
        while self._buffer:
            head = self._buffer[0]
            if not isinstance(head, Skipped):
                return
            self._buffer.popleft()
            self._skipped += head.count
            self._last_skipped = head

    async def _wait_writable(self) -> None:
        await self._writable.wait()

    def _finish(self, error: Optional[BaseException], *, discard: bool = False) -> None:
        """End the subscription, with ``error`` raised after the buffered comments."""
        if self._ended:
            return
        self._ended = True
        self._end = error
        if discard:
            self._buffer.clear()
        self._readable.set()
        self._writable.set()


class _EndOfSubscription(Exception):
    """Internal signal that a subscription ended without an error."""
