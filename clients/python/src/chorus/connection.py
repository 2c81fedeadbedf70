"""One asyncio connection to a chorus server."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Optional, Tuple, Union

from .errors import (
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    ModerationRejected,
    PayloadTooLarge,
    PublishRejected,
    ServerError,
    TlsError,
)
from .protocol import (
    DEFAULT_MAX_FRAME,
    PREAMBLE,
    VERSION,
    Cap,
    ErrorCode,
    ErrorFrame,
    Events,
    Frame,
    FrameDecoder,
    Hello,
    Latest,
    Moderate,
    ModerateAck,
    ModerationAction,
    Ping,
    Pong,
    ProtocolError,
    Publish,
    PublishAck,
    React,
    Skipped,
    StartAt,
    Subscribe,
    Subscribed,
    UnexpectedFrame,
    Unsubscribe,
    UnsupportedVersion,
    Welcome,
    encode,
    validate_topic,
)
from .subscription import Subscription
from .tls import TlsOptions, handshake_error, is_tls_record, server_hostname, ssl_context
from .version import __version__

log = logging.getLogger("chorus")

#: Client name sent in HELLO unless the caller gives one.
DEFAULT_CLIENT_NAME = f"chorus-python/{__version__}"

#: Comments a subscription buffers before the connection stops reading its socket.
DEFAULT_MAX_BUFFERED = 10_000

_READ_SIZE = 64 * 1024

# PUBLISH body bytes besides the topic and payload: seq, topic length, payload length.
_PUBLISH_OVERHEAD = 8 + 1 + 4


@dataclass(frozen=True)
class Ack:
    """A publish the server stored: its sequence number, offset and the topic's stream id."""

    seq: int
    offset: int
    stream: int


async def connect(
    host: str,
    port: int,
    *,
    client_name: str = DEFAULT_CLIENT_NAME,
    token: str = "",
    connect_timeout: float = 5.0,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_buffered: int = DEFAULT_MAX_BUFFERED,
    tls: Optional[TlsOptions] = None,
) -> Connection:
    """Open a connection, exchange preambles, send HELLO and wait for WELCOME.

    ``connect_timeout`` (seconds) bounds the TCP connection, the TLS handshake and the chorus
    handshake together. ``max_frame`` is the largest frame body the client accepts, announced
    in HELLO. ``max_buffered`` is the number of comments each subscription buffers (see
    :class:`~chorus.Subscription`). ``tls`` connects over TLS with those settings; ``None``
    connects over plain TCP.

    Raises :class:`~chorus.errors.ConnectError` when no TCP connection opens,
    :class:`~chorus.errors.ConnectTimeout` when the time runs out,
    :class:`~chorus.errors.TlsError` when a TLS file cannot be loaded, the TLS handshake fails
    or only one side uses TLS, :class:`~chorus.errors.ServerError` when the server answers HELLO
    with ERROR, and a :class:`~chorus.protocol.ProtocolError` when the server does not speak
    protocol version 1 or ``client_name`` or ``token`` is too long (255 and 65,535 UTF-8 bytes).
    """
    hello = encode(Hello(VERSION, max_frame, client_name, token))
    address = f"{host}:{port}"
    # Built before connecting, so that an unreadable certificate file fails without a connection.
    context = ssl_context(tls, address) if tls is not None else None
    name = server_hostname(tls, host) if tls is not None else None
    try:
        return await asyncio.wait_for(
            _open(host, port, hello, max_frame, max_buffered, context, name), connect_timeout
        )
    except asyncio.TimeoutError:
        raise ConnectTimeout(
            f"connecting to {address} did not finish within {connect_timeout} s"
        ) from None


async def _open(
    host: str,
    port: int,
    hello: bytes,
    max_frame: int,
    max_buffered: int,
    context: Optional[ssl.SSLContext],
    name: Optional[str],
) -> Connection:
    reader, writer = await _open_stream(host, port, context, name)
    try:
        writer.write(PREAMBLE + hello)
        decoder = FrameDecoder(max_frame, expect_preamble=True)
        welcome = await _read_welcome(reader, writer, decoder, f"{host}:{port}", context is None)
    except BaseException:
        writer.close()
        raise
    log.debug(
        "connected to %s:%d, server %r, max_payload %d",
        host,
        port,
        welcome.server_name,
        welcome.max_payload,
    )
    return Connection(reader, writer, decoder, welcome, max_buffered)


async def _open_stream(
    host: str, port: int, context: Optional[ssl.SSLContext], name: Optional[str]
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the TCP connection, and run the TLS handshake when ``context`` is set."""
    try:
        if context is None:
            return await asyncio.open_connection(host, port)
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=name
        )
    except ssl.SSLError as e:
        raise handshake_error(e, f"{host}:{port}") from e
    except OSError as e:
        raise ConnectError(host, port, e.strerror or str(e)) from e
    log.debug(
        "TLS handshake with %s:%d done: %s, ALPN %s",
        host,
        port,
        writer.get_extra_info("ssl_object").version(),
        writer.get_extra_info("ssl_object").selected_alpn_protocol(),
    )
    return reader, writer


async def _read_welcome(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    decoder: FrameDecoder,
    address: str,
    plaintext: bool,
) -> Welcome:
    """Read the server's preamble and frames until WELCOME, answering PING on the way."""
    while True:
        for frame in decoder:
            if isinstance(frame, Welcome):
                if frame.version != VERSION:
                    raise UnsupportedVersion(
                        f"server WELCOME names version {frame.version}", frame.version
                    )
                return frame
            if isinstance(frame, ErrorFrame):
                raise ServerError(frame.code, frame.topic, frame.message, frame.close)
            if isinstance(frame, Ping):
                writer.write(encode(Pong(frame.nonce)))
                continue
            raise UnexpectedFrame(f"{type(frame).__name__} frame before WELCOME")
        data = await _read(reader)
        if plaintext and decoder.version is None and decoder.buffered == 0 and data:
            _check_not_tls(data[0], address)
        if not data:
            decoder.end_of_stream()
            raise ConnectionClosed("server closed the connection during the handshake")
        decoder.feed(data)


def _check_not_tls(first_byte: int, address: str) -> None:
    """Raise TlsError when a plaintext connection's first byte from the server starts TLS."""
    if is_tls_record(first_byte):
        raise TlsError(
            f"the server at {address} responded with TLS instead of the chorus preamble, so the "
            "port expects TLS: connect with tls=chorus.TlsOptions(...)"
        )


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(_READ_SIZE)
    except OSError as e:
        raise ConnectionClosed(f"reading from the server failed: {e}") from e


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a failure the caller did not wait for as seen, so asyncio does not log it."""
    if future.done() and not future.cancelled():
        future.exception()


class Connection:
    """One connection after the handshake; create it with :func:`connect`.

    Calls may run concurrently from many tasks: publishes are matched to their
    acknowledgements by sequence number, and every frame is written whole. A background task
    reads the socket, answers PING with PONG, and routes frames to the waiting calls and
    subscriptions. Use the connection as an async context manager, or call :meth:`close`.

    When the connection fails (the server closes it, sends ERROR with close set, or sends bytes
    that fail to decode), every waiting call and subscription raises the cause, and later calls
    raise :class:`~chorus.errors.ConnectionClosed`. A decoding failure is reported to the
    server with ERROR close=1 before the socket is closed.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: FrameDecoder,
        welcome: Welcome,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = decoder
        self._welcome = welcome
        self._max_buffered = max_buffered
        self._seqs = itertools.count(1)
        self._acks: Dict[int, asyncio.Future[Ack]] = {}
        self._ack_topics: Dict[int, str] = {}
        self._moderations: Dict[int, Tuple[asyncio.Future[None], ModerationAction]] = {}
        self._pending_subscribes: Dict[str, Deque[asyncio.Future[Subscription]]] = {}
        self._subscriptions: Dict[str, Subscription] = {}
        self._pings: Dict[int, asyncio.Future[None]] = {}
        self._drain_lock = asyncio.Lock()
        self._failure: Optional[BaseException] = None
        self._closed = False
        self._pongs_sent = 0
        self._closed_event = asyncio.Event()
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def welcome(self) -> Welcome:
        """The server's WELCOME: its name, ``max_frame``, ``max_payload`` and idle timeout."""
        return self._welcome

    @property
    def closed(self) -> bool:
        """Whether the connection is closed or failed."""
        return self._closed

    @property
    def alpn_protocol(self) -> Optional[str]:
        """ALPN protocol the server selected in the TLS handshake; ``None`` over plain TCP.

        chorusd's TLS listener selects ``chorus/1``, which the client offers.
        """
        ssl_object = self._writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        selected: Optional[str] = ssl_object.selected_alpn_protocol()
        return selected

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def publish(self, topic: str, payload: Union[bytes, str]) -> Ack:
        """Publish one comment and wait for the server to store it.

        A ``str`` payload is sent as UTF-8. The topic is checked locally and an invalid one
        raises :class:`~chorus.protocol.InvalidTopic` before anything is sent, as does a
        payload above the server's ``max_payload`` (:class:`~chorus.errors.PayloadTooLarge`).
        A rejection by the server raises :class:`~chorus.errors.PublishRejected`. Cancelling
        the call does not withdraw the comment, which the server may still store.
        """
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        validate_topic(topic)
        self._check_payload(topic, data)
        self._check_open()

        seq = next(self._seqs)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._acks[seq] = future
        self._ack_topics[seq] = topic
        try:
            await self._send(Publish(seq, topic, data))
            return await future
        finally:
            self._acks.pop(seq, None)
            self._ack_topics.pop(seq, None)
            _consume(future)

    async def subscribe(
        self, topic: str, start: StartAt = Latest(), *, stream: int = 0
    ) -> Subscription:
        """Subscribe to ``topic`` from ``start`` and wait for the server to confirm.

        ``stream`` is the topic's stream id from an earlier subscription, or 0: with a stale
        one the server starts at the new stream's earliest offset whatever ``start`` says. A
        topic that does not exist yet is subscribed to with stream 0 and delivers its comments
        once created. A second subscription to the same topic replaces the first, whose
        iteration then stops. An ERROR about the topic, such as OFFSET_OUT_OF_RANGE for an
        offset past the end, raises :class:`~chorus.errors.ServerError`.
        """
        frame = Subscribe(validate_topic(topic), start, stream)
        data = encode(frame)
        self._check_open()

        future: asyncio.Future[Subscription] = asyncio.get_running_loop().create_future()
        self._pending_subscribes.setdefault(topic, deque()).append(future)
        try:
            await self._send_bytes(data)
            return await future
        finally:
            _consume(future)

    async def unsubscribe(self, topic: str) -> None:
        """End the subscription to ``topic``, if any, and send UNSUBSCRIBE.

        The server does not confirm it; comments it sent before reading the frame are dropped.
        """
        validate_topic(topic)
        subscription = self._subscriptions.pop(topic, None)
        if subscription is not None:
            subscription._finish(None, discard=True)
        await self._send(Unsubscribe(topic))

    async def moderate(self, action: ModerationAction) -> None:
        """Ask for a moderation action and wait until the server has carried it out.

        ``action`` is a :class:`~chorus.protocol.DeleteComment`, :class:`~chorus.protocol.Ban`,
        :class:`~chorus.protocol.Unban` or :class:`~chorus.protocol.SlowMode`. Returns when the
        MODERATE_ACK carries OK, and raises :class:`~chorus.errors.ModerationRejected` with the
        server's code otherwise, such as FORBIDDEN for a session that may not moderate. Fields
        that break the action table raise :class:`~chorus.protocol.MalformedFrame` before
        anything is sent.
        """
        self._check_open()
        seq = next(self._seqs)
        data = encode(Moderate(seq, action))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._moderations[seq] = (future, action)
        try:
            await self._send_bytes(data)
            await future
        finally:
            self._moderations.pop(seq, None)
            _consume(future)

    async def react(self, topic: str, kind: str, count: int = 1) -> None:
        """Send ``count`` reactions of ``kind`` (1 to 32 UTF-8 bytes, such as ``heart``).

        The server sends no reply. It accepts a count above 1 only from relay sessions; any
        other session gets ERROR FORBIDDEN and the server closes the connection.
        """
        await self._send(React(topic, kind, count))

    async def cap(self, topic: str, max_per_sec: int) -> None:
        """Cap the subscription to ``topic`` at ``max_per_sec`` comments a second; 0 removes it.

        The server sends no reply. It then delivers at most that many comments a second,
        always including those with the PRIORITY, TOMBSTONE or DELETED flag, and reports the
        ones it leaves out in SKIPPED frames, which :attr:`Subscription.skipped` adds up.
        """
        await self._send(Cap(topic, max_per_sec))

    async def ping(self) -> float:
        """Send PING, wait for the matching PONG and return the round trip time in seconds."""
        self._check_open()
        loop = asyncio.get_running_loop()
        nonce = random.getrandbits(64)
        future: asyncio.Future[None] = loop.create_future()
        self._pings[nonce] = future
        started = loop.time()
        try:
            await self._send(Ping(nonce))
            await future
        finally:
            self._pings.pop(nonce, None)
        return loop.time() - started

    async def close(self) -> None:
        """Close the connection; waiting calls raise ConnectionClosed and subscriptions stop."""
        self._fail(None)
        if self._read_task is not asyncio.current_task():
            self._read_task.cancel()
            try:
                await self._read_task
            except BaseException:  # noqa: BLE001 - the task's outcome is already recorded
                pass
        try:
            await self._writer.wait_closed()
        except (OSError, asyncio.CancelledError):
            pass

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, by either side."""
        await self._closed_event.wait()

    async def _unsubscribe_subscription(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.topic) is subscription:
            await self.unsubscribe(subscription.topic)
        else:
            subscription._finish(None, discard=True)

    def _check_payload(self, topic: str, data: bytes) -> None:
        max_payload = self._welcome.max_payload
        if max_payload and len(data) > max_payload:
            raise PayloadTooLarge(len(data), max_payload)
        overhead = _PUBLISH_OVERHEAD + len(topic)
        max_frame = self._welcome.max_frame
        if max_frame and overhead + len(data) > max_frame:
            raise PayloadTooLarge(len(data), max_frame - overhead)

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> ConnectionClosed:
        error = ConnectionClosed("connection is closed")
        error.__cause__ = self._failure
        return error

    async def _send(self, frame: Frame) -> None:
        await self._send_bytes(encode(frame))

    async def _send_bytes(self, data: bytes) -> None:
        """Write one whole frame, then wait while the socket's send buffer is full."""
        self._check_open()
        self._writer.write(data)
        # StreamWriter.drain() allows one waiter at a time before Python 3.10.
        async with self._drain_lock:
            try:
                await self._writer.drain()
            except OSError as e:
                self._fail(ConnectionClosed(f"writing to the server failed: {e}"))
                raise self._closed_error() from e

    async def _read_loop(self) -> None:
        try:
            while True:
                for frame in self._decoder:
                    await self._dispatch(frame)
                data = await _read(self._reader)
                if not data:
                    self._decoder.end_of_stream()
                    raise ConnectionClosed("server closed the connection")
                self._decoder.feed(data)
        except ProtocolError as e:
            log.warning("closing the connection: invalid data from the server: %s", e)
            self._send_error(ErrorFrame(e.code, True, "", e.message[:1000]))
            self._fail(e)
        except (ServerError, ConnectionClosed) as e:
            self._fail(e)
        except Exception as e:
            # A bug here must not leave every waiting call hanging, so it fails them instead.
            log.exception("connection reader failed")
            self._fail(e)

    async def _dispatch(self, frame: Frame) -> None:
        if isinstance(frame, Events):
            await self._on_events(frame)
        elif isinstance(frame, PublishAck):
            self._on_ack(frame)
        elif isinstance(frame, Subscribed):
            self._on_subscribed(frame)
        elif isinstance(frame, Ping):
            self._writer.write(encode(Pong(frame.nonce)))
            self._pongs_sent += 1
        elif isinstance(frame, Pong):
            future = self._pings.get(frame.nonce)
            if future is not None and not future.done():
                future.set_result(None)
        elif isinstance(frame, ErrorFrame):
            self._on_error(frame)
        elif isinstance(frame, ModerateAck):
            self._on_moderate_ack(frame)
        elif isinstance(frame, Skipped):
            self._on_skipped(frame)
        else:
            raise UnexpectedFrame(f"{type(frame).__name__} frame from the server")

    async def _on_events(self, events: Events) -> None:
        subscription = self._subscriptions.get(events.topic)
        if subscription is None:
            log.debug("dropped comments of %r, which has no subscription", events.topic)
            return
        subscription._deliver(events)
        await subscription._wait_writable()

    def _on_ack(self, ack: PublishAck) -> None:
        future = self._acks.get(ack.seq)
        if future is None or future.done():
            log.debug("dropped PUBLISH_ACK %d, whose publish is no longer waiting", ack.seq)
            return
        if ack.code == ErrorCode.OK:
            future.set_result(Ack(ack.seq, ack.offset, ack.stream))
        else:
            topic = self._ack_topics.get(ack.seq, "")
            future.set_exception(PublishRejected(ack.seq, topic, ack.code))

    def _on_moderate_ack(self, ack: ModerateAck) -> None:
        waiting = self._moderations.get(ack.seq)
        if waiting is None or waiting[0].done():
            log.debug("dropped MODERATE_ACK %d, whose request is no longer waiting", ack.seq)
            return
        future, action = waiting
        if ack.code == ErrorCode.OK:
            future.set_result(None)
        else:
            future.set_exception(ModerationRejected(ack.seq, action, ack.code))

    def _on_skipped(self, skipped: Skipped) -> None:
        subscription = self._subscriptions.get(skipped.topic)
        if subscription is None:
            log.debug("dropped SKIPPED for %r, which has no subscription", skipped.topic)
            return
        subscription._deliver_skipped(skipped)

    def _on_subscribed(self, subscribed: Subscribed) -> None:
        topic = subscribed.topic
        # The SUBSCRIBED ends the subscription it replaces: EVENTS after it belong to the new one.
        replaced = self._subscriptions.pop(topic, None)
        if replaced is not None:
            replaced._finish(None)

        future = self._pop_pending_subscribe(topic)
        if future is None or future.done():
            # No call waits for it (it was cancelled), so the server should stop sending.
            if not self._pending_subscribes.get(topic):
                self._writer.write(encode(Unsubscribe(topic)))
            return
        subscription = Subscription(self, subscribed, self._max_buffered)
        self._subscriptions[topic] = subscription
        future.set_result(subscription)

    def _on_error(self, frame: ErrorFrame) -> None:
        error = ServerError(frame.code, frame.topic, frame.message, frame.close)
        if frame.close:
            raise error
        # The server answers requests in order, so an ERROR naming a topic with a SUBSCRIBE
        # in flight answers that SUBSCRIBE; otherwise it ends the topic's subscription.
        future = self._pop_pending_subscribe(frame.topic)
        if future is not None:
            if not future.done():
                future.set_exception(error)
            return
        subscription = self._subscriptions.pop(frame.topic, None)
        if subscription is not None:
            subscription._finish(error)
            return
        log.warning("server error with no request or subscription to report it to: %s", error)

    def _pop_pending_subscribe(self, topic: str) -> Optional[asyncio.Future[Subscription]]:
        pending = self._pending_subscribes.get(topic)
        if not pending:
            return None
        future = pending.popleft()
        if not pending:
            del self._pending_subscribes[topic]
        return future

    def _send_error(self, frame: ErrorFrame) -> None:
        """Report a failure to the server, if the socket still takes data."""
        if self._writer.is_closing():
            return
        try:
            self._writer.write(encode(frame))
        except (OSError, ProtocolError) as e:
            log.debug("failed to send ERROR to the server: %s", e)

    def _fail(self, cause: Optional[BaseException]) -> None:
        """Close the connection and hand ``cause`` (None for a local close) to every waiter."""
        if self._closed:
            return
        self._closed = True
        self._failure = cause
        if cause is not None:
            log.debug("connection failed: %s", cause)
        error = cause if cause is not None else ConnectionClosed("connection closed by the client")

        for future in self._waiting_futures():
            if not future.done():
                future.set_exception(error)
        self._acks.clear()
        self._moderations.clear()
        self._pending_subscribes.clear()
        self._pings.clear()
        for subscription in self._subscriptions.values():
            subscription._finish(cause)
        self._subscriptions.clear()
        self._writer.close()
        self._closed_event.set()

    def _waiting_futures(self) -> list[asyncio.Future[object]]:
        futures: list[asyncio.Future[object]] = []
        futures.extend(self._acks.values())  # type: ignore[arg-type]
        futures.extend(self._pings.values())  # type: ignore[arg-type]
        futures.extend(future for future, _ in self._moderations.values())  # type: ignore[misc]
        for pending in self._pending_subscribes.values():
            futures.extend(pending)  # type: ignore[arg-type]
        return futures
