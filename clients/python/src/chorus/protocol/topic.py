"""Topic naming rules.

A topic name is also a relative path under the broker's data directory, so only safe file names
are valid. A name is 1 to 255 bytes long and made of segments of 1 to 64 bytes separated by
``/``. Each segment contains only ASCII letters, digits, ``_``, ``-`` and ``.``, and does not
start with ``.``.
"""

from __future__ import annotations

from typing import Optional

from .errors import InvalidTopic

#: Maximum length of a topic name, in bytes.
MAX_TOPIC_BYTES = 255

#: Maximum length of one segment of a topic name, in bytes.
MAX_SEGMENT_BYTES = 64

_SEGMENT_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


def topic_problem(name: bytes) -> Optional[str]:
    """Return why the UTF-8 bytes ``name`` are not a valid topic, or ``None`` when they are."""
    if not name:
        return "topic is empty"
    if len(name) > MAX_TOPIC_BYTES:
        return f"topic is {len(name)} bytes long, the maximum is {MAX_TOPIC_BYTES}"
    for segment in name.split(b"/"):
        problem = _segment_problem(segment)
        if problem is not None:
            return f"topic {name!r} is invalid: {problem}"
    return None


def _segment_problem(segment: bytes) -> Optional[str]:
    if not segment:
        return "it has an empty segment (a leading, trailing or doubled '/')"
    if len(segment) > MAX_SEGMENT_BYTES:
        return f"segment of {len(segment)} bytes, the maximum is {MAX_SEGMENT_BYTES}"
    if segment[0] == ord("."):
        return "a segment starts with '.'"
    for byte in segment:
        if byte not in _SEGMENT_CHARS:
            return (
                f"byte 0x{byte:02x} is not allowed; "
                "use ASCII letters, digits, '_', '-', '.' and '/'"
            )
    return None


def validate_topic(name: str) -> str:
    """Check ``name`` against the topic naming rules and return it unchanged.

    Raises :class:`~chorus.protocol.errors.InvalidTopic` when ``name`` is not a ``str`` or
    breaks a rule; the message names the rule.
    """
    if not isinstance(name, str):
        raise InvalidTopic(f"topic must be a str, not {type(name).__name__}")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTopic(f"topic {name!r} is not valid Unicode") from None
    problem = topic_problem(raw)
    if problem is not None:
        raise InvalidTopic(problem)
    return name


def is_valid_topic(name: str) -> bool:
    """Return whether ``name`` follows the topic naming rules."""
    try:
        validate_topic(name)
    except InvalidTopic:
        return False
    return True
