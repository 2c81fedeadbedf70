"""Frame types of protocol version 1, as immutable dataclasses.

Field names and order follow the field tables of the specification. Integers are Python ints,
so u64 values (offsets, stream ids, nonces) keep their full 64-bit range exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Sequence, Tuple, Union

from .errors import Code

#: Protocol version this package speaks.
VERSION = 1

#: Magic bytes at the start of every preamble.
MAGIC = b"CHORUS"

#: The version 1 preamble each side sends first: ``CHORUS`` and the version as a big-endian u16.
PREAMBLE = MAGIC + VERSION.to_bytes(2, "big")

#: Length of the frame header, in bytes.
HEADER_LEN = 12

#: Default maximum frame body length, in bytes (1 MiB).
DEFAULT_MAX_FRAME = 1 << 20

#: Largest value of a u64 field.
U64_MAX = (1 << 64) - 1


class FrameType(enum.IntEnum):
    """Type byte of each frame."""

    HELLO = 0x01
    WELCOME = 0x02
    SUBSCRIBE = 0x03
    SUBSCRIBED = 0x04
    UNSUBSCRIBE = 0x05
    PUBLISH = 0x06
    PUBLISH_ACK = 0x07
    EVENTS = 0x08
    PING = 0x09
    PONG = 0x0A
    ERROR = 0x0B


@dataclass(frozen=True)
class Latest:
    """Start a subscription at the next comment published after it."""

    mode: ClassVar[int] = 0

    @property
    def value(self) -> int:
        """The start value on the wire, always 0."""
        return 0


@dataclass(frozen=True)
class Offset:
    """Start a subscription at ``offset``; an offset already removed starts at the earliest kept."""

    offset: int
    mode: ClassVar[int] = 1

    @property
    def value(self) -> int:
        """The start value on the wire: the offset."""
        return self.offset


@dataclass(frozen=True)
class Last:
    """Start a subscription with the last ``count`` comments kept, then everything after them."""

    count: int
    mode: ClassVar[int] = 2

    @property
    def value(self) -> int:
        """The start value on the wire: the count."""
        return self.count


@dataclass(frozen=True)
class Earliest:
    """Start a subscription at the oldest comment the topic still keeps."""

    mode: ClassVar[int] = 3

    @property
    def value(self) -> int:
        """The start value on the wire, always 0."""
        return 0


@dataclass(frozen=True)
class Since:
    """Start a subscription at the first comment kept whose broker time is ``time_us`` or later.

    ``time_us`` is in microseconds since the Unix epoch and is compared with the time the origin
    stored in each comment (an event's ``time_us``), not with the client's clock. When no kept
    comment is that recent, the subscription starts at the next comment published.
    """

    time_us: int
    mode: ClassVar[int] = 4

    @property
    def value(self) -> int:
        """The start value on the wire: the time in microseconds."""
        return self.time_us


#: Start position of a subscription.
StartAt = Union[Latest, Offset, Last, Earliest, Since]


@dataclass(frozen=True)
class Hello:
    """HELLO (0x01), client to server: opens the session."""

    version: int
    max_frame: int
    client_name: str
    token: str
    TYPE: ClassVar[FrameType] = FrameType.HELLO


@dataclass(frozen=True)
class Welcome:
    """WELCOME (0x02), server to client: accepts the session and announces the server's limits."""

    version: int
    max_frame: int
    server_name: str
    max_payload: int
    idle_timeout_ms: int
    TYPE: ClassVar[FrameType] = FrameType.WELCOME


@dataclass(frozen=True)
class Subscribe:
    """SUBSCRIBE (0x03), client to server: starts a subscription to one topic.

    ``stream`` is the stream id the client last saw on the topic, or 0 when it has none.
    """

    topic: str
    start: StartAt
    stream: int
    TYPE: ClassVar[FrameType] = FrameType.SUBSCRIBE


@dataclass(frozen=True)
class Subscribed:
    """SUBSCRIBED (0x04), server to client: confirms a subscription and where it starts.

    ``earliest <= start <= end``; ``stream`` is 0 when the topic does not exist yet.
    """

    topic: str
    stream: int
    start: int
    earliest: int
    end: int
    TYPE: ClassVar[FrameType] = FrameType.SUBSCRIBED


@dataclass(frozen=True)
class Unsubscribe:
    """UNSUBSCRIBE (0x05), client to server: ends a subscription; the server does not reply."""

    topic: str
    TYPE: ClassVar[FrameType] = FrameType.UNSUBSCRIBE


@dataclass(frozen=True)
class Publish:
    """PUBLISH (0x06), client to server: one comment; ``seq`` is echoed in its PUBLISH_ACK."""

    seq: int
    topic: str
    payload: bytes
    TYPE: ClassVar[FrameType] = FrameType.PUBLISH


@dataclass(frozen=True)
class PublishAck:
    """PUBLISH_ACK (0x07), server to client: accepts (``code`` OK) or rejects one PUBLISH.

    ``offset`` and ``stream`` are 0 when the publish was rejected.
    """

    seq: int
    code: Code
    offset: int
    stream: int
    TYPE: ClassVar[FrameType] = FrameType.PUBLISH_ACK


@dataclass(frozen=True)
class Event:
    """One comment of a topic, as carried in an EVENTS frame.

    ``time_us`` is when the origin accepted it, in microseconds since the Unix epoch (UTC).
    ``flags`` has no meaning in version 1. ``publisher`` is empty when the broker has no id.
    """

    offset: int
    time_us: int
    flags: int
    publisher: str
    payload: bytes

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8, with invalid bytes replaced by U+FFFD."""
        return self.payload.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Events:
    """EVENTS (0x08), server to client: a batch of comments of one topic, in offset order."""

    topic: str
    stream: int
    events: Tuple[Event, ...]
    TYPE: ClassVar[FrameType] = FrameType.EVENTS

    def __init__(self, topic: str, stream: int, events: Sequence[Event]) -> None:
        # Stored as a tuple so that equal batches compare equal whatever sequence was passed.
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "stream", stream)
        object.__setattr__(self, "events", tuple(events))


@dataclass(frozen=True)
class Ping:
    """PING (0x09), either direction: asks the peer for a PONG with the same nonce."""

    nonce: int
    TYPE: ClassVar[FrameType] = FrameType.PING


@dataclass(frozen=True)
class Pong:
    """PONG (0x0a), either direction: answers a PING."""

    nonce: int
    TYPE: ClassVar[FrameType] = FrameType.PONG


@dataclass(frozen=True)
class ErrorFrame:
    """ERROR (0x0b), either direction: an error, and whether the sender closes the connection.

    ``topic`` is free text, empty when the error concerns the whole connection.
    """

    code: Code
    close: bool
    topic: str
    message: str
    TYPE: ClassVar[FrameType] = FrameType.ERROR


#: Any frame of protocol version 1.
Frame = Union[
    Hello,
    Welcome,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Publish,
    PublishAck,
    Events,
    Ping,
    Pong,
    ErrorFrame,
]
