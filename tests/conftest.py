"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import MosquittoBroker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A real mosquitto on 127.0.0.1 with a free port, killed at teardown."""
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        yield broker
