"""Frame types of protocol version 1, as immutable dataclasses.

Field names and order follow the field tables of the specification. Integers are Python ints,
so u64 values (offsets, stream ids, nonces) keep their full 64-bit range exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Sequence, Tuple, Union

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
    MODERATE = 0x0C
    MODERATE_ACK = 0x0D
    REACT = 0x0E
    CAP = 0x0F
    SKIPPED = 0x10
    AUDIENCE = 0x11
    RELAY_PUBLISH = 0x12
    EVENTS_ZSTD = 0x13


class Feature(enum.IntFlag):
    """Bits of the optional ``features`` field of HELLO and WELCOME."""

    #: The client accepts EVENTS_ZSTD frames; in WELCOME, the server may send them.
    ZSTD_EVENTS = 0x1


class EntryFlag(enum.IntFlag):
    """Bits of the ``flags`` byte of an EVENTS entry. Receivers ignore bits not listed here."""

    #: The origin gave the comment priority because of its publisher's role or token; a capped
    #: subscription always delivers it.
    PRIORITY = 0x01
    #: The entry deletes a comment: its payload is the 8-byte big-endian offset of the deleted
    #: comment in the same topic, and its publisher is the moderator.
    TOMBSTONE = 0x02
    #: The comment at this offset was deleted after it was published; its payload is empty.
    DELETED = 0x04


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
    #: Bits of :class:`Feature` the client asks for; encoded only when not 0.
    features: int = 0
    TYPE: ClassVar[FrameType] = FrameType.HELLO


@dataclass(frozen=True)
class Welcome:
    """WELCOME (0x02), server to client: accepts the session and announces the server's limits."""

    version: int
    max_frame: int
    server_name: str
    max_payload: int
    idle_timeout_ms: int
    #: Bits of :class:`Feature` granted on this connection; encoded only when not 0.
    features: int = 0
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
    """One entry of a topic, as carried in an EVENTS frame: a comment, or a tombstone.

    ``time_us`` is when the origin accepted it, in microseconds since the Unix epoch (UTC).
    ``flags`` holds :class:`EntryFlag` bits and possibly bits of later versions, which receivers
    ignore. ``publisher`` is empty when the broker has no id.
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

    @property
    def is_priority(self) -> bool:
        """Whether the origin gave the comment priority (flag ``PRIORITY``)."""
        return bool(self.flags & EntryFlag.PRIORITY)

    @property
    def is_tombstone(self) -> bool:
        """Whether the entry deletes an earlier comment instead of being one (``TOMBSTONE``)."""
        return bool(self.flags & EntryFlag.TOMBSTONE)

    @property
    def is_deleted(self) -> bool:
        """Whether the comment was deleted, so its payload is empty (flag ``DELETED``)."""
        return bool(self.flags & EntryFlag.DELETED)

    @property
    def tombstone_target(self) -> Optional[int]:
        """Offset of the comment a tombstone deletes, or ``None`` for any other entry.

        Also ``None`` for a tombstone whose payload is not the 8 bytes the protocol requires.
        """
        if not self.is_tombstone or len(self.payload) != 8:
            return None
        return int.from_bytes(self.payload, "big")


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


@dataclass(frozen=True)
class DeleteComment:
    """Moderation action 1: delete the comment at ``offset`` of ``topic``.

    The origin appends a tombstone entry naming the offset, and later reads of the offset
    return the entry with the ``DELETED`` flag and an empty payload.
    """

    topic: str
    offset: int
    action: ClassVar[int] = 1


@dataclass(frozen=True)
class Ban:
    """Moderation action 2: reject every later comment of ``user`` with ``BANNED``.

    With ``purge_topic`` and ``purge_seconds`` (both or neither), the origin also deletes the
    user's comments that it stored in that topic in the last ``purge_seconds`` seconds.
    """

    user: str
    purge_topic: Optional[str] = None
    purge_seconds: int = 0
    action: ClassVar[int] = 2


@dataclass(frozen=True)
class Unban:
    """Moderation action 3: lift the ban of ``user``."""

    user: str
    action: ClassVar[int] = 3


@dataclass(frozen=True)
class SlowMode:
    """Moderation action 4: set the minimum interval between one user's comments in ``topic``.

    ``interval_ms`` is in milliseconds; 0 turns slow mode off.
    """

    topic: str
    interval_ms: int
    action: ClassVar[int] = 4


#: A moderation action carried in MODERATE.
ModerationAction = Union[DeleteComment, Ban, Unban, SlowMode]


@dataclass(frozen=True)
class Moderate:
    """MODERATE (0x0c), client to server: one moderation action; ``seq`` is echoed in its ack."""

    seq: int
    action: ModerationAction
    TYPE: ClassVar[FrameType] = FrameType.MODERATE


@dataclass(frozen=True)
class ModerateAck:
    """MODERATE_ACK (0x0d), server to client: ``code`` is OK when the action was carried out."""

    seq: int
    code: Code
    TYPE: ClassVar[FrameType] = FrameType.MODERATE_ACK


#: Maximum length of a reaction kind, in UTF-8 bytes.
MAX_REACTION_KIND = 32


@dataclass(frozen=True)
class React:
    """REACT (0x0e), client to server: ``count`` reactions of ``kind`` (1 to 32 bytes) to a topic.

    ``count`` is at least 1; servers accept counts above 1 only from relays. There is no reply.
    """

    topic: str
    kind: str
    count: int
    TYPE: ClassVar[FrameType] = FrameType.REACT


@dataclass(frozen=True)
class Cap:
    """CAP (0x0f), client to server: deliver at most ``max_per_sec`` comments a second.

    It applies to the connection's subscription to ``topic``; 0 removes the cap. There is no
    reply.
    """

    topic: str
    max_per_sec: int
    TYPE: ClassVar[FrameType] = FrameType.CAP


@dataclass(frozen=True)
class Skipped:
    """SKIPPED (0x10), server to client: comments a capped subscription did not deliver.

    ``count`` comments were left out since the previous SKIPPED of the subscription, and
    ``through`` is the offset after the last comment this notice accounts for.
    """

    topic: str
    count: int
    through: int
    TYPE: ClassVar[FrameType] = FrameType.SKIPPED


@dataclass(frozen=True)
class AudienceEntry:
    """Subscriber count of one topic at a relay and at every relay below it."""

    topic: str
    viewers: int


@dataclass(frozen=True)
class Audience:
    """AUDIENCE (0x11), relay to upstream: subscriber counts per topic, replacing the last ones."""

    entries: Tuple[AudienceEntry, ...]
    TYPE: ClassVar[FrameType] = FrameType.AUDIENCE

    def __init__(self, entries: Sequence[AudienceEntry]) -> None:
        # Stored as a tuple so that equal reports compare equal whatever sequence was passed.
        object.__setattr__(self, "entries", tuple(entries))


@dataclass(frozen=True)
class RelayPublish:
    """RELAY_PUBLISH (0x12), relay to upstream: one comment of a user the relay verified.

    ``user`` is 1 to 255 bytes. ``priority`` is true when the user's comments get the PRIORITY
    flag. The server replies with a PUBLISH_ACK carrying ``seq``.
    """

    seq: int
    topic: str
    user: str
    priority: bool
    payload: bytes
    TYPE: ClassVar[FrameType] = FrameType.RELAY_PUBLISH


@dataclass(frozen=True)
class EventsZstd:
    """EVENTS_ZSTD (0x13), server to client: an EVENTS batch whose entries are zstd-compressed.

    ``events`` are the entries once decompressed and ``raw_len`` their length in bytes. ``data``
    is the zstd frame as received or to be sent. zstd encoders can compress the same entries to
    different bytes, so ``data`` takes no part in comparisons.
    """

    topic: str
    stream: int
    raw_len: int
    events: Tuple[Event, ...]
    data: bytes = field(default=b"", compare=False)
    TYPE: ClassVar[FrameType] = FrameType.EVENTS_ZSTD

    def __init__(
        self, topic: str, stream: int, raw_len: int, events: Sequence[Event], data: bytes = b""
    ) -> None:
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "stream", stream)
        object.__setattr__(self, "raw_len", raw_len)
        object.__setattr__(self, "events", tuple(events))
        object.__setattr__(self, "data", data)


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
    Moderate,
    ModerateAck,
    React,
    Cap,
    Skipped,
    Audience,
    RelayPublish,
    EventsZstd,
]
