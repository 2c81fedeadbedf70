"""The reconnect schedule."""

from __future__ import annotations

import random

import pytest

from chorus import Backoff


def test_ceiling_doubles_per_attempt() -> None:
    backoff = Backoff(initial=0.1, max=5.0)
    assert [backoff.ceiling(n) for n in range(4)] == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_ceiling_stops_at_max() -> None:
    backoff = Backoff(initial=0.1, max=5.0)
    assert backoff.ceiling(6) == 5.0
    assert backoff.ceiling(10_000) == 5.0


def test_delay_stays_within_ceiling() -> None:
    backoff = Backoff(initial=0.1, max=5.0)
    rng = random.Random(1)
    for attempt in range(12):
        delay = backoff.delay(attempt, rng)
        assert 0.0 <= delay <= backoff.ceiling(attempt)


def test_delay_is_jittered() -> None:
    backoff = Backoff(initial=1.0, max=1.0)
    rng = random.Random(2)
    delays = {backoff.delay(0, rng) for _ in range(20)}
    assert len(delays) == 20


def test_max_attempts_limits_retries() -> None:
    backoff = Backoff(max_attempts=3)
    assert backoff.allows(2)
    assert not backoff.allows(3)


def test_no_max_attempts_retries_forever() -> None:
    assert Backoff().allows(10**9)


def test_negative_delay_rejected() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=-1.0)


def test_negative_max_attempts_rejected() -> None:
    with pytest.raises(ValueError):
        Backoff(max_attempts=-1)
