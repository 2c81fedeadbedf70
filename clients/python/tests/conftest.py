"""Fixtures shared by the test modules: real chorusd brokers on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from chorusd import Chorusd, find_chorusd


@pytest.fixture(scope="session")
def chorusd_binary() -> Path:
    """Path of the chorusd binary; skips the test when there is none and none can be built."""
    return find_chorusd()


@pytest.fixture
def make_broker(chorusd_binary: Path, tmp_path: Path) -> Iterator[Callable[..., Chorusd]]:
    """Factory of started brokers, each with its own data directory; all stopped at the end.

    ``make_broker(config="...")`` writes the TOML text to a file and passes it with --config.
    """
    brokers: List[Chorusd] = []

    def make(config: Optional[str] = None) -> Chorusd:
        index = len(brokers)
        config_path = None
        if config is not None:
            config_path = tmp_path / f"chorusd-{index}.toml"
            config_path.write_text(config)
        broker = Chorusd(chorusd_binary, tmp_path / f"data-{index}", config_path)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()
        # pytest shows this output only for a failed test.
        print(f"--- chorusd log, {broker.data_dir.name} ---\n{broker.tail(80)}")


@pytest.fixture
def broker(make_broker: Callable[..., Chorusd]) -> Chorusd:
    """A started broker with default settings."""
    return make_broker()
