"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import MosquittoBroker
from door_site import Daemon, Subscriber
from facegate.vision.engine import FaceEngine

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
CELEB = MODELS / "data" / "5-celebrity"


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
    """The real int8 engine, loaded once per test session."""
    return FaceEngine.load(models_dir, "int8")


@pytest.fixture(scope="session")
def float_engine(models_dir: Path) -> FaceEngine:
    return FaceEngine.load(models_dir, "float32")


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
