"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from broker import MosquittoBroker
from door_site import Daemon, Subscriber
from facegate.vision.engine import FaceEngine
from shared_engine import sharing

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
CELEB = MODELS / "data" / "5-celebrity"


#: The slowest files first (about 10 s and more each, CPU or waiting): `make test` hands
#: whole files to its workers in collection order, so a long file collected last would
#: keep one worker busy while the others have nothing left (longest first balances them).
#: The rest follow in the usual order. Only the order changes: every test still runs.
SLOW_FILES_FIRST: Final = (
    "test_daemon.py", "test_walkup.py", "test_install_pi.py", "test_hardening_config.py",
    "test_liveness.py", "test_hardening_images.py", "test_hardening_daemon.py",
    "test_mqtt_broker.py", "test_liveness_daemon.py", "test_fleet_daemon.py",
    "test_cli_engine.py", "test_engine.py", "test_hardening_mqtt_parsers.py",
    "test_review.py", "test_embed_skip.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The folder `make models` fills (the test target builds it first)."""
    if not (MODELS / "facenet_int8.tflite").is_file():
        pytest.fail("models missing: run `make models` (make test does it for you)")
    return MODELS


@pytest.fixture(scope="session")
def celeb_dir(models_dir: Path) -> Path:
    """The 5-celebrity images shipped with the FaceNet sdist: train/ and val/ per person."""
    return CELEB


@pytest.fixture(scope="session")
def engine(models_dir: Path) -> FaceEngine:
    """The real int8 engine, loaded once per test session (per worker). One interpreter
    thread: `make test` runs three workers on two cores, where XNNPACK's second thread only
    waits for a core (10-20 % more CPU for the same embeddings, no faster)."""
    return FaceEngine.load(models_dir, "int8", threads=1)


@pytest.fixture(scope="session")
def float_engine(models_dir: Path) -> FaceEngine:
    """The float32 reference engine, one thread like `engine`."""
    return FaceEngine.load(models_dir, "float32", threads=1)


@pytest.fixture
def share_the_engine(engine: FaceEngine, models_dir: Path) -> Iterator[None]:
    """In-process CLI calls get the session engine instead of loading their own."""
    with sharing(engine, models_dir):
        yield


def celeb_image(person: str, split: str = "val", index: int = 0) -> Path:
    """A deterministic image of one person (sorted file order)."""
    return sorted((CELEB / split / person).glob("*.jpg"))[index]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A real mosquitto on 127.0.0.1 with a free port, killed at teardown."""
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Started daemons are appended here; any still running at teardown is killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    opened: list[Subscriber] = []
    yield opened
    for sub in opened:
        sub.close()
