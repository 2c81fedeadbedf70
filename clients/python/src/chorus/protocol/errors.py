"""Error codes of the chorus protocol and the exceptions the codec raises."""

from __future__ import annotations

import enum
from typing import Union


class ErrorCode(enum.IntEnum):
    """Error codes of protocol version 1, with the names the specification uses.

    Codes are carried in ERROR, PUBLISH_ACK and MODERATE_ACK frames as a u16. A peer may send a
    code that version 1 does not name, so decoded frames hold an ``ErrorCode`` member when the
    value is known and a plain ``int`` otherwise (see :func:`error_code`).
    """

    OK = 0
    BAD_PREAMBLE = 1
    UNSUPPORTED_VERSION = 2
    FRAME_TOO_LARGE = 3
    BAD_CRC = 4
    UNKNOWN_FRAME_TYPE = 5
    MALFORMED_FRAME = 6
    INVALID_TOPIC = 7
    TRUNCATED_FRAME = 8
    UNEXPECTED_FRAME = 9
    PAYLOAD_TOO_LARGE = 10
    OFFSET_OUT_OF_RANGE = 11
    SLOW_CONSUMER = 12
    STORAGE_FAILED = 13
    SHUTTING_DOWN = 14
    TIMEOUT = 15
    TOO_MANY_SUBSCRIPTIONS = 16
    TOPIC_NOT_FOUND = 17
    WRONG_ORIGIN = 18
    UPSTREAM_UNAVAILABLE = 19
    UNAUTHENTICATED = 20
    TOKEN_EXPIRED = 21
    FORBIDDEN = 22
    BANNED = 23
    RATE_LIMITED = 24
    SLOW_MODE = 25
    DUPLICATE_COMMENT = 26
    BLOCKED_CONTENT = 27
    COMMENT_NOT_FOUND = 28


#: An error code as decoded from the wire: a named member, or the plain value of an unknown code.
Code = Union[ErrorCode, int]


def error_code(value: int) -> Code:
    """Return the ``ErrorCode`` member for ``value``, or ``value`` itself when it has no name."""
    try:
        return ErrorCode(value)
    except ValueError:
        return value


def code_name(code: int) -> str:
    """Return the specification's name of ``code``, or its decimal value when it has none."""
    named = error_code(code)
    if isinstance(named, ErrorCode):
        return named.name
    return str(code)


class ChorusError(Exception):
    """Base class of every exception the ``chorus`` package raises on purpose."""


class ProtocolError(ChorusError):
    """Bytes or values that break the wire format.

    Each subclass carries the protocol error code of its failure in ``code``. The codec raises
    only these exceptions on bad input, whether the input is bytes to decode or a frame to
    encode.
    """

    code: ErrorCode = ErrorCode.MALFORMED_FRAME

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class BadPreamble(ProtocolError):
    """The preamble does not start with the magic bytes ``CHORUS``."""

    code = ErrorCode.BAD_PREAMBLE


class UnsupportedVersion(ProtocolError):
    """The preamble, HELLO or WELCOME names a protocol version other than 1."""

    code = ErrorCode.UNSUPPORTED_VERSION

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


class FrameTooLarge(ProtocolError):
    """A frame length above the receiver's maximum, or an encoded body above 2^32 - 1 bytes."""

    code = ErrorCode.FRAME_TOO_LARGE


class BadCrc(ProtocolError):
    """A frame's CRC does not match its header and body."""

    code = ErrorCode.BAD_CRC


class UnknownFrameType(ProtocolError):
    """A frame's type byte is not one of the types version 1 defines."""

    code = ErrorCode.UNKNOWN_FRAME_TYPE


class MalformedFrame(ProtocolError):
    """A body does not follow its type's layout, or flags or reserved bits are set.

    The encoder raises it too, for a value that its field cannot hold (an integer out of range,
    a string longer than its length prefix allows, text that is not valid Unicode).
    """

    code = ErrorCode.MALFORMED_FRAME


class InvalidTopic(ProtocolError):
    """A topic name breaks the naming rules."""

    code = ErrorCode.INVALID_TOPIC


class TruncatedFrame(ProtocolError):
    """The stream ended in the middle of a preamble or a frame."""

    code = ErrorCode.TRUNCATED_FRAME


class UnexpectedFrame(ProtocolError):
    """A frame arrived that is not allowed in the connection's state or direction."""

    code = ErrorCode.UNEXPECTED_FRAME
