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
    PayloadTooLarge,
    PublishRejected,
    ServerError,
    StreamChanged,
    is_transient,
)
from .protocol import (
    DEFAULT_MAX_FRAME,
    Earliest,
    ErrorCode,
    Event,
    InvalidTopic,
    Last,
    Latest,
    Offset,
    ProtocolError,
    Since,
    StartAt,
    Subscribed,
    Welcome,
    is_valid_topic,
    validate_topic,
)
from .subscriber import Subscriber
from .subscription import Subscription
from .version import __version__

__all__ = [
    "Ack",
    "Backoff",
    "ChorusError",
    "ConnectError",
    "ConnectTimeout",
    "Connection",
    "ConnectionClosed",
    "DEFAULT_CLIENT_NAME",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_FRAME",
    "Earliest",
    "ErrorCode",
    "Event",
    "InvalidTopic",
    "Last",
    "Latest",
    "Offset",
    "PayloadTooLarge",
    "ProtocolError",
    "PublishRejected",
    "ServerError",
    "Since",
    "StartAt",
    "StreamChanged",
    "Subscribed",
    "Subscriber",
    "Subscription",
    "Welcome",
    "__version__",
    "connect",
    "is_transient",
    "is_valid_topic",
    "validate_topic",
]
