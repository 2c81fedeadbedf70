"""Exceptions of the client.

Every exception the package raises on purpose derives from :class:`ChorusError`. Bad bytes from
the server and bad values from the caller (an invalid topic, an out-of-range offset) raise
:class:`~chorus.protocol.ProtocolError` subclasses, which derive from it too.
"""

from __future__ import annotations

from .protocol.errors import ChorusError, Code, ErrorCode, ProtocolError, code_name

__all__ = [
    "ChorusError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "ModerationRejected",
    "PayloadTooLarge",
    "ProtocolError",
    "PublishRejected",
    "ServerError",
    "StreamChanged",
    "TlsError",
    "is_transient",
]


class ConnectError(ChorusError):
    """No TCP connection could be opened; the ``OSError`` is the ``__cause__``."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"failed to connect to {host}:{port}: {reason}")
        self.host = host
        self.port = port


class ConnectTimeout(ChorusError, TimeoutError):
    """The TCP connection and handshake did not finish within the connect timeout."""


class ConnectionClosed(ChorusError):
    """The connection is closed: by :meth:`Connection.close`, by the server, or by a failure.

    When a failure closed it, the exception that did so is the ``__cause__``.
    """


class ServerError(ChorusError):
    """The server sent an ERROR frame.

    ``code`` is an :class:`~chorus.protocol.ErrorCode`, or a plain ``int`` for a code that
    version 1 does not name. ``topic`` is empty when the error concerns the whole connection.
    With ``close`` set the server closes the connection after the frame; otherwise only the
    named topic's subscription or request failed.
    """

    def __init__(self, code: Code, topic: str, message: str, close: bool) -> None:
        where = f" on topic {topic!r}" if topic else ""
        super().__init__(f"server error {code_name(code)}{where}: {message}")
        self.code = code
        self.topic = topic
        self.message = message
        self.close = close


class PublishRejected(ChorusError):
    """The server rejected a publish with a PUBLISH_ACK code other than OK, so it stored nothing.

    The connection stays open.
    """

    def __init__(self, seq: int, topic: str, code: Code) -> None:
        super().__init__(f"publish {seq} to {topic!r} rejected by the server: {code_name(code)}")
        self.seq = seq
        self.topic = topic
        self.code = code


class ModerationRejected(ChorusError):
    """The server rejected a moderation action: its MODERATE_ACK carries a code other than OK.

    ``code`` is the reason, for example ``FORBIDDEN`` for a session that may not moderate or
    ``COMMENT_NOT_FOUND`` for an offset the topic does not keep. The connection stays open.
    """

    def __init__(self, seq: int, action: object, code: Code) -> None:
        super().__init__(f"moderation {seq} ({action!r}) rejected by the server: {code_name(code)}")
        self.seq = seq
        self.action = action
        self.code = code


class TlsError(ChorusError):
    """TLS failed: its files could not be loaded, or the handshake failed.

    Also raised when one side uses TLS and the other does not. The message names the cause and
    what to change; the ``ssl.SSLError`` or ``OSError`` behind it, if any, is the ``__cause__``.
    """


class PayloadTooLarge(ChorusError):
    """A publish payload exceeds what the server announced it accepts, so it was not sent."""

    def __init__(self, size: int, maximum: int) -> None:
        super().__init__(f"payload of {size} bytes exceeds the server's maximum of {maximum} bytes")
        self.size = size
        self.maximum = maximum


class StreamChanged(ChorusError):
    """The topic was deleted and created again, so its offsets restarted under a new stream id.

    :class:`~chorus.Subscriber` raises it once per change, then continues with the new stream
    on the next call. ``new`` is 0 when the topic did not exist at the moment of the resume.
    """

    def __init__(self, topic: str, old: int, new: int, start: int) -> None:
        super().__init__(
            f"topic {topic!r} was recreated: stream {old} was replaced by stream {new}, "
            f"delivery continues at offset {start}"
        )
        self.topic = topic
        self.old = old
        self.new = new
        self.start = start


_TRANSIENT_SERVER_CODES = frozenset(
    {
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.SLOW_CONSUMER,
        ErrorCode.TIMEOUT,
        ErrorCode.STORAGE_FAILED,
    }
)


def is_transient(error: BaseException) -> bool:
    """Return whether reconnecting after ``error`` can succeed.

    Lost and refused connections, timeouts, damaged frames and the server errors
    SHUTTING_DOWN, SLOW_CONSUMER, TIMEOUT and STORAGE_FAILED are transient. A server that speaks
    another protocol version, an invalid topic or offset and every other server error are not.
    """
    if isinstance(error, (ConnectError, ConnectTimeout, ConnectionClosed, OSError)):
        return True
    if isinstance(error, ServerError):
        return error.code in _TRANSIENT_SERVER_CODES
    if isinstance(error, ProtocolError):
        return error.code not in (
            ErrorCode.BAD_PREAMBLE,
            ErrorCode.UNSUPPORTED_VERSION,
            ErrorCode.INVALID_TOPIC,
        )
    return False
