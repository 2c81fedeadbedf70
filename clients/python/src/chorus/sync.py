"""A blocking wrapper around the asyncio client, for code that does not run an event loop.

Each :class:`Connection` and :class:`Subscriber` runs its own asyncio event loop in a daemon
thread and hands every call to it, so the blocking API behaves exactly like the asyncio one:
the same reading task answers PING, matches acknowledgements and buffers comments while the
caller's thread does something else. Calls may come from several threads at once. Close the
objects (or use them as context managers) to stop their threads.

Example::

    from chorus import sync, Last

    with sync.connect("127.0.0.1", 7400) as conn:
        ack = conn.publish("event/final", "what a goal")
        for event in conn.subscribe("event/final", Last(10)):
            print(event.offset, event.text)
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Coroutine, Iterator, Optional, TypeVar, Union

from . import connection as _connection
from . import subscriber as _subscriber
from .backoff import Backoff
from .connection import DEFAULT_CLIENT_NAME, DEFAULT_MAX_BUFFERED, Ack
from .errors import ConnectionClosed
from .protocol import (
    DEFAULT_MAX_FRAME,
    Event,
    Latest,
    ModerationAction,
    Skipped,
    StartAt,
    Subscribed,
    Welcome,
)
from .subscription import Subscription as _AsyncSubscription
from .tls import TlsOptions

__all__ = ["Connection", "Subscriber", "Subscription", "connect"]

T = TypeVar("T")

# Time allowed for a loop thread to finish after it was asked to stop.
_STOP_TIMEOUT = 5.0


class _LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        """Run ``coroutine`` on the loop and block until it finishes.

        ``timeout`` is applied inside the loop, so the coroutine is cancelled when it runs out
        and ``TimeoutError`` is raised.
        """
        if timeout is not None:
            coroutine = _with_timeout(coroutine, timeout)
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result()

    def stop(self) -> None:
        """Stop the loop and wait for its thread to end."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()


async def _with_timeout(coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
    try:
        return await asyncio.wait_for(coroutine, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"operation did not finish within {timeout} s") from None


def connect(
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
    """Open a blocking connection; the arguments and errors are those of :func:`chorus.connect`."""
    loop = _LoopThread(f"chorus {host}:{port}")
    try:
        inner = loop.run(
            _connection.connect(
                host,
                port,
                client_name=client_name,
                token=token,
                connect_timeout=connect_timeout,
                max_frame=max_frame,
                max_buffered=max_buffered,
                tls=tls,
            )
        )
    except BaseException:
        loop.stop()
        raise
    return Connection(loop, inner)


class Connection:
    """Blocking counterpart of :class:`chorus.Connection`; create it with :func:`connect`."""

    def __init__(self, loop: _LoopThread, inner: _connection.Connection) -> None:
        self._loop = loop
        self._inner = inner
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def welcome(self) -> Welcome:
        """The server's WELCOME frame."""
        return self._inner.welcome

    @property
    def closed(self) -> bool:
        """Whether the connection is closed or failed."""
        return self._inner.closed

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def publish(
        self, topic: str, payload: Union[bytes, str], *, timeout: Optional[float] = None
    ) -> Ack:
        """Publish one comment and block until the server stores it.

        ``timeout`` (seconds) raises ``TimeoutError`` when the acknowledgement takes longer; the
        comment may still be stored.
        """
        return self._run(self._inner.publish(topic, payload), timeout)

    def subscribe(self, topic: str, start: StartAt = Latest(), *, stream: int = 0) -> Subscription:
        """Subscribe to ``topic`` and block until the server confirms; see
        :meth:`chorus.Connection.subscribe`."""
        inner = self._run(self._inner.subscribe(topic, start, stream=stream), None)
        return Subscription(self, inner)

    def unsubscribe(self, topic: str) -> None:
        """End the subscription to ``topic`` and send UNSUBSCRIBE."""
        self._run(self._inner.unsubscribe(topic), None)

    def moderate(self, action: ModerationAction, *, timeout: Optional[float] = None) -> None:
        """Ask for a moderation action and block until it is carried out; see
        :meth:`chorus.Connection.moderate`.

        ``timeout`` (seconds) raises ``TimeoutError`` when the acknowledgement takes longer; the
        server may still carry the action out.
        """
        self._run(self._inner.moderate(action), timeout)

    def react(self, topic: str, kind: str, count: int = 1) -> None:
        """Send reactions to ``topic``; see :meth:`chorus.Connection.react`."""
        self._run(self._inner.react(topic, kind, count), None)

    def cap(self, topic: str, max_per_sec: int) -> None:
        """Cap the subscription to ``topic``; see :meth:`chorus.Connection.cap`."""
        self._run(self._inner.cap(topic, max_per_sec), None)

    def ping(self, *, timeout: Optional[float] = None) -> float:
        """Send PING and return the round trip time in seconds."""
        return self._run(self._inner.ping(), timeout)

    def close(self) -> None:
        """Close the connection and stop its event loop thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._loop.run(self._inner.close())
        finally:
            self._loop.stop()

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: Optional[float]) -> T:
        if self._stopped:
            coroutine.close()
            raise ConnectionClosed("connection is closed")
        return self._loop.run(coroutine, timeout)


class Subscription(Iterator[Event]):
    """Blocking iterator over one subscription; see :class:`chorus.Subscription`.

    Iteration stops after :meth:`unsubscribe` or :meth:`Connection.close`, and raises the
    error that ended the subscription otherwise.
    """

    def __init__(self, connection: Connection, inner: _AsyncSubscription) -> None:
        self._connection = connection
        self._inner = inner

    @property
    def topic(self) -> str:
        """Topic of the subscription."""
        return self._inner.topic

    @property
    def subscribed(self) -> Subscribed:
        """The server's SUBSCRIBED frame."""
        return self._inner.subscribed

    @property
    def stream(self) -> int:
        """Stream id of the last comment returned."""
        return self._inner.stream

    @property
    def skipped(self) -> int:
        """Comments the server left out of this capped subscription; see
        :attr:`chorus.Subscription.skipped`."""
        return self._inner.skipped

    @property
    def last_skipped(self) -> Optional[Skipped]:
        """The latest SKIPPED frame counted in :attr:`skipped`, or ``None``."""
        return self._inner.last_skipped

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        if self._connection._stopped:
            raise StopIteration
        try:
            return self._connection._run(self._inner.__anext__(), None)
        except StopAsyncIteration:
            raise StopIteration from None

    def receive(self, timeout: Optional[float] = None) -> Event:
        """Return the next comment; ``TimeoutError`` after ``timeout`` seconds loses nothing."""
        # The timeout goes to the subscription itself, which takes no comment once it expires.
        return self._connection._run(self._inner.receive(timeout), None)

    def unsubscribe(self) -> None:
        """End the subscription and send UNSUBSCRIBE."""
        self._connection._run(self._inner.unsubscribe(), None)


class Subscriber(Iterator[Event]):
    """Blocking counterpart of :class:`chorus.Subscriber`, with the same arguments.

    Iterating yields each comment once, in offset order, across reconnects; a recreated topic
    raises :class:`~chorus.errors.StreamChanged` once, and the next call continues.
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
        self._inner = _subscriber.Subscriber(
            host,
            port,
            topic,
            start,
            stream=stream,
            backoff=backoff,
            client_name=client_name,
            token=token,
            connect_timeout=connect_timeout,
            max_frame=max_frame,
            max_buffered=max_buffered,
            tls=tls,
        )
        self._loop = _LoopThread(f"chorus subscriber {topic}")
        self._stopped = False

    @property
    def inner(self) -> _subscriber.Subscriber:
        """The asyncio subscriber, for its offset, stream and reconnect count."""
        return self._inner

    def __enter__(self) -> Subscriber:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Subscriber:
        return self

    def __next__(self) -> Event:
        return self.receive()

    def start(self) -> Subscribed:
        """Make the first subscription and return its SUBSCRIBED frame."""
        return self._run(self._inner.start())

    def receive(self, timeout: Optional[float] = None) -> Event:
        """Return the next comment; see :meth:`chorus.Subscriber.receive`."""
        return self._run(self._inner.receive(timeout))

    def close(self) -> None:
        """Close the connection and stop the event loop thread."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._loop.run(self._inner.close())
        finally:
            self._loop.stop()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._stopped:
            coroutine.close()
            raise ConnectionClosed("subscriber is closed")
        return self._loop.run(coroutine)
