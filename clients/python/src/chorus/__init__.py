"""Python client for the chorus live-comment broker.

:func:`connect` opens an asyncio :class:`Connection` to publish comments and subscribe to
topics; :class:`Subscriber` follows one topic across lost connections and returns each comment
once, in offset order. :mod:`chorus.sync` wraps both for blocking code, and
:mod:`chorus.protocol` is the wire codec, with no I/O.

Example::

    import asyncio
    import chorus

    async def main() -> None:
        async with await chorus.connect("127.0.0.1", 7400) as conn:
            ack = await conn.publish("event/final", "what a goal")
            print("stored at offset", ack.offset)

        async with chorus.Subscriber("127.0.0.1", 7400, "event/final", chorus.Last(10)) as sub:
            async for event in sub:
                print(event.offset, event.text)

    asyncio.run(main())
"""

from .backoff import Backoff
from .connection import DEFAULT_CLIENT_NAME, DEFAULT_MAX_BUFFERED, Ack, Connection, connect
from .errors import (
    ChorusError,
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    ModerationRejected,
    PayloadTooLarge,
    PublishRejected,
    ServerError,
    StreamChanged,
    TlsError,
    is_transient,
)
from .protocol import (
    DEFAULT_MAX_FRAME,
    Ban,
    DeleteComment,
    Earliest,
    EntryFlag,
    ErrorCode,
    Event,
    InvalidTopic,
    Last,
    Latest,
    ModerationAction,
    Offset,
    ProtocolError,
    Since,
    Skipped,
    SlowMode,
    StartAt,
    Subscribed,
    Unban,
    Welcome,
    is_valid_topic,
    validate_topic,
)
from .subscriber import Subscriber
from .subscription import Subscription
from .tls import TlsOptions
from .version import __version__

__all__ = [
    "Ack",
    "Backoff",
    "Ban",
    "ChorusError",
    "ConnectError",
    "ConnectTimeout",
    "Connection",
    "ConnectionClosed",
    "DEFAULT_CLIENT_NAME",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_FRAME",
    "DeleteComment",
    "Earliest",
    "EntryFlag",
    "ErrorCode",
    "Event",
    "InvalidTopic",
    "Last",
    "Latest",
    "ModerationAction",
    "ModerationRejected",
    "Offset",
    "PayloadTooLarge",
    "ProtocolError",
    "PublishRejected",
    "ServerError",
    "Since",
    "Skipped",
    "SlowMode",
    "StartAt",
    "StreamChanged",
    "Subscribed",
    "Subscriber",
    "Subscription",
    "TlsError",
    "TlsOptions",
    "Unban",
    "Welcome",
    "__version__",
    "connect",
    "is_transient",
    "is_valid_topic",
    "validate_topic",
]
