"""The reconnect schedule: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

# Doublings beyond this change nothing for any sane ``max`` and would overflow a float.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnect attempts of a :class:`~chorus.Subscriber`.

    Before attempt ``n`` (counted from 0) the delay is drawn uniformly from 0 to
    ``min(max, initial * 2**n)`` seconds, so that clients that lost their connections at the
    same moment do not all come back at the same moment. ``max_attempts`` is the number of
    attempts allowed after a connection is lost; ``None`` retries forever.
    """

    initial: float = 0.1
    max: float = 5.0
    max_attempts: Optional[int] = None

    def __post_init__(self) -> None:
        if self.initial < 0 or self.max < 0:
            raise ValueError(f"backoff delays must not be negative, got {self}")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError(f"max_attempts must be None or at least 0, got {self.max_attempts}")

    def ceiling(self, attempt: int) -> float:
        """Return the largest delay before attempt ``attempt``, in seconds."""
        doublings = min(max(attempt, 0), _MAX_DOUBLINGS)
        return float(min(self.max, self.initial * (1 << doublings)))

    def delay(self, attempt: int, rng: Optional[random.Random] = None) -> float:
        """Draw the delay before attempt ``attempt``, in seconds."""
        draw = rng.uniform if rng is not None else random.uniform
        return draw(0.0, self.ceiling(attempt))

    def allows(self, attempts: int) -> bool:
        """Return whether another attempt is allowed after ``attempts`` failed ones."""
        return self.max_attempts is None or attempts < self.max_attempts
