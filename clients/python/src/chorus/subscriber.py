"""A subscription that survives lost connections."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Optional

from .backoff import Backoff
from .connection import DEFAULT_CLIENT_NAME, DEFAULT_MAX_BUFFERED, Connection, connect
from .errors import ConnectionClosed, StreamChanged, is_transient
from .protocol import (
    DEFAULT_MAX_FRAME,
    VERSION,
    Event,
    Hello,
    Latest,
    Offset,
    StartAt,
    Subscribe,
    Subscribed,
    encode,
    validate_topic,
)
from .subscription import Subscription
from .tls import TlsOptions

log = logging.getLogger("chorus")


class Subscriber(AsyncIterator[Event]):
    """The comments of one topic, each exactly once and in offset order, across reconnects.

    The subscriber tracks the offset of the next comment it expects. When the connection is
    lost, or the server ends it with a transient error (see :func:`chorus.errors.is_transient`),
    it reconnects after a :class:`~chorus.Backoff` delay and subscribes again from that offset
    with the stream id it holds. It drops comments below that offset, so the caller sees no
    comment twice and, as long as the server still keeps them, misses none.

    When the topic was deleted and created again, the subscriber raises
    :class:`~chorus.errors.StreamChanged` once (an exception, not an item), then continues with
    the new stream on the next call. With ``async for`` that ends the loop, so a caller that
    wants to go on wraps the loop::

        while True:
            try:
                async for event in subscriber:
                    handle(event)
            except chorus.StreamChanged:
                clear_comments()

    The first subscription is tried once: its errors are raised as they are, without retries.
    Later, permanent errors (an invalid topic, an offset past the end, a server that speaks
    another version) are raised, and so is the last transient error once ``max_attempts``
    reconnects failed. Calling again after either tries to reconnect.

    ``start`` applies to the first subscription only. ``stream`` is a stream id saved from an
    earlier run, to resume with ``start=Offset(n)``; leave it 0 otherwise. The other keyword
    arguments are passed to :func:`chorus.connect`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        start: StartAt = Latest(),
        *,
        stream: int = 0,
        backoff: Backoff = Backoff(),
        client_name: str = DEFAULT_CLIENT_NAME,
        token: str = "",
        connect_timeout: float = 5.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        tls: Optional[TlsOptions] = None,
    ) -> None:
        # Invalid settings fail here, once, rather than on every reconnect.
        encode(Subscribe(validate_topic(topic), start, stream))
        encode(Hello(VERSION, max_frame, client_name, token))

        self._host = host
        self._port = port
        self._topic = topic
        self._start = start
        self._stream = stream
        self._backoff = backoff
        self._client_name = client_name
        self._token = token
        self._connect_timeout = connect_timeout
        self._max_frame = max_frame
        self._max_buffered = max_buffered
        self._tls = tls

        self._connection: Optional[Connection] = None
        self._subscription: Optional[Subscription] = None
        self._subscribed: Optional[Subscribed] = None
        self._next_offset: Optional[int] = None
        self._held: Optional[Event] = None
        self._notice: Optional[StreamChanged] = None
        self._cause: Optional[BaseException] = None
        self._reconnects = 0
        self._closed = False

    @property
    def topic(self) -> str:
        """Topic of the subscription."""
        return self._topic

    @property
    def next_offset(self) -> Optional[int]:
        """Offset of the next comment to return; ``None`` before the first subscription."""
        return self._next_offset

    @property
    def stream(self) -> int:
        """Stream id of the topic as last seen; 0 while the topic does not exist."""
        return self._stream

    @property
    def subscribed(self) -> Optional[Subscribed]:
        """SUBSCRIBED frame of the latest subscription, or ``None`` before the first."""
        return self._subscribed

    @property
    def reconnects(self) -> int:
        """Number of times the subscriber reconnected and subscribed again."""
        return self._reconnects

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Event:
        return await self.receive()

    async def start(self) -> Subscribed:
        """Make the first subscription, if not made yet, and return its SUBSCRIBED frame."""
        if self._subscribed is None:
            connection, subscription = await self._subscribe(self._start)
            self._next_offset = subscription.subscribed.start
            self._adopt(connection, subscription)
        assert self._subscribed is not None  # set by _adopt
        return self._subscribed

    async def receive(self, timeout: Optional[float] = None) -> Event:
        """Return the next comment, reconnecting as needed.

        ``timeout`` bounds, in seconds, the wait for a comment on a live connection; it raises
        ``TimeoutError`` and loses nothing. Reconnecting is bounded by the backoff schedule and
        the connect timeout instead.
        """
        while True:
            if self._closed:
                raise ConnectionClosed(f"subscriber to {self._topic!r} is closed")
            if self._notice is not None:
                notice, self._notice = self._notice, None
                raise notice
            if self._held is not None:
                held, self._held = self._held, None
                event = self._accept(held)
            elif self._subscription is None:
                await self._connect_again()
                continue
            else:
                event = await self._receive_live(timeout)
            if event is not None:
                return event

    async def close(self) -> None:
        """Close the connection and stop; later calls raise ConnectionClosed."""
        self._closed = True
        await self._drop_connection()

    async def _receive_live(self, timeout: Optional[float]) -> Optional[Event]:
        assert self._subscription is not None
        try:
            event = await self._subscription.receive(timeout)
        except TimeoutError:
            # Checked first because TimeoutError is an OSError, which counts as transient.
            raise
        except Exception as e:
            await self._drop_connection()
            if not is_transient(e):
                raise
            log.info("subscriber to %r lost its connection: %s", self._topic, e)
            self._cause = e
            return None
        return self._accept(event)

    def _accept(self, event: Event) -> Optional[Event]:
        """Return ``event`` if it is the next one to deliver; track stream and offset."""
        assert self._subscription is not None and self._next_offset is not None
        stream = self._subscription.stream
        if stream != self._stream:
            if self._stream != 0:
                # The topic was recreated during the subscription: report it before its events.
                self._stream_changed(stream, event.offset)
                self._held = event
                return None
            self._stream = stream
        if event.offset < self._next_offset:
            log.debug("dropped comment %d of %r, already returned", event.offset, self._topic)
            return None
        if event.offset > self._next_offset:
            log.info(
                "comments %d to %d of %r are no longer kept by the server",
                self._next_offset,
                event.offset - 1,
                self._topic,
            )
        self._next_offset = event.offset + 1
        return event

    async def _connect_again(self) -> None:
        """Make the first subscription, or reconnect with backoff after a lost connection."""
        if self._subscribed is None:
            await self.start()
            return
        cause = self._cause
        attempt = 0
        while self._backoff.allows(attempt):
            await asyncio.sleep(self._backoff.delay(attempt))
            try:
                await self._resubscribe()
                return
            except Exception as e:
                if not is_transient(e):
                    raise
                log.info("reconnect attempt %d for %r failed: %s", attempt + 1, self._topic, e)
                cause = e
            attempt += 1
        if cause is None:
            cause = ConnectionClosed(f"subscriber to {self._topic!r} has no connection")
        raise cause

    async def _resubscribe(self) -> None:
        assert self._next_offset is not None
        connection, subscription = await self._subscribe(Offset(self._next_offset))
        self._reconnects += 1
        log.info(
            "subscriber to %r resumed at offset %d after %d reconnects",
            self._topic,
            subscription.subscribed.start,
            self._reconnects,
        )
        self._adopt(connection, subscription)

    async def _subscribe(self, start: StartAt) -> tuple[Connection, Subscription]:
        connection = await connect(
            self._host,
            self._port,
            client_name=self._client_name,
            token=self._token,
            connect_timeout=self._connect_timeout,
            max_frame=self._max_frame,
            max_buffered=self._max_buffered,
            tls=self._tls,
        )
        try:
            subscription = await connection.subscribe(self._topic, start, stream=self._stream)
        except BaseException:
            await connection.close()
            raise
        return connection, subscription

    def _adopt(self, connection: Connection, subscription: Subscription) -> None:
        """Take over a new subscription and check its stream id against the one held."""
        assert self._next_offset is not None
        subscribed = subscription.subscribed
        if subscribed.stream != self._stream and self._stream != 0:
            self._stream_changed(subscribed.stream, subscribed.start)
        elif subscribed.stream != self._stream:
            self._stream = subscribed.stream
        elif subscribed.start > self._next_offset:
            log.info(
                "comments %d to %d of %r are no longer kept by the server",
                self._next_offset,
                subscribed.start - 1,
                self._topic,
            )
        self._connection = connection
        self._subscription = subscription
        self._subscribed = subscribed
        self._cause = None

    def _stream_changed(self, new: int, start: int) -> None:
        log.info("topic %r was recreated: stream %d replaced by %d", self._topic, self._stream, new)
        self._notice = StreamChanged(self._topic, self._stream, new, start)
        self._stream = new
        self._next_offset = start

    async def _drop_connection(self) -> None:
        connection = self._connection
        self._connection = None
        self._subscription = None
        if connection is not None:
            await connection.close()
