"""The door's pure step in-process: real models and real photos, scripted frames, a fake
clock, decisions read straight from the step (issue 12, item 6). The end-to-end tests in
test_daemon keep what only a process and a broker show (signals, outages, TLS, systemd)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from facegate.config import load_config
from facegate.decisions import Decision, ReasonCode
from facegate.pipeline import DoorPipeline, Recognition, StepResult
from facegate.policy import DoorPolicy
from facegate.service import load_recognition
from facegate.vision.engine import FaceEngine
from scenes import empty_frame, fit, photo, write_config, write_enrollment, write_key

RESIDENT = "jerry_seinfeld"
OTHER = "elton_john"
STRANGER = "madonna"
START = 1_750_000_000.0  # a Wednesday


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Path:
    """Config and a gallery of two residents, enrolled once for the module."""
    root = tmp_path_factory.mktemp("pipeline")
    write_key(root / "hmac.key")
    write_enrollment(root / "enrollment.yaml", {RESIDENT: ["front", "desk"], OTHER: ["front"]})
    (root / "journal").mkdir()
    return write_config(
        root / "facegate.yaml",
        port=1883,
        cameras=[{"door": "front", "source": "cam/"}, {"door": "desk", "source": "cam2/",
                  "mode": "card_and_face"}],
        recognition={"cooldown_s": 10.0, "unknown_event_interval_s": 5.0},
    )  # fmt: skip


@pytest.fixture(scope="module")
def recognition(site: Path, engine: FaceEngine) -> Recognition:
    return load_recognition(load_config(site), engine)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def door(name: str, engine: FaceEngine, state: Recognition, clock: Clock) -> DoorPipeline:
    camera = state.config.camera(name)
    policy = DoorPolicy(name, camera.mode, state.config.recognition, state.enrollment, clock)
    return DoorPipeline(name, engine, state, policy)


@pytest.fixture
def front(engine: FaceEngine, recognition: Recognition, clock: Clock) -> DoorPipeline:
    return door("front", engine, recognition, clock)


def rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[:, :, ::-1])


def visitor(person: str, index: int = 0) -> np.ndarray:
    return rgb(fit(photo(person, index=index)))


def side_by_side(left: str, right: str) -> np.ndarray:
    halves = [cv2.resize(fit(photo(p)), (320, 240)) for p in (left, right)]
    frame = empty_frame()
    frame[120:360, :320], frame[120:360, 320:] = halves
    return rgb(frame)


def feed(pipe: DoorPipeline, clock: Clock, frames: Sequence[np.ndarray]) -> Iterator[StepResult]:
    for frame in frames:
        yield pipe.step(frame)
        clock.now += 0.1


def decisions(results: Iterator[StepResult]) -> list[Decision]:
    return [d for r in results for d in r.decisions]


def test_a_resident_at_the_door_is_granted_once(front: DoorPipeline, clock: Clock) -> None:
    out = decisions(feed(front, clock, [visitor(RESIDENT)] * 8))
    assert [(d.kind, d.person, d.code, d.unlock) for d in out] == [
        ("granted", RESIDENT, ReasonCode.MATCH, True)
    ]
    assert out[0].distance < 0.9 and out[0].frames >= 3 and out[0].track_id is not None


def test_a_stranger_gets_unknown_and_no_unlock(front: DoorPipeline, clock: Clock) -> None:
    out = decisions(feed(front, clock, [visitor(STRANGER)] * 8))
    assert out and all((d.kind, d.person, d.unlock) == ("unknown", None, False) for d in out)
    assert {d.code for d in out} == {ReasonCode.UNKNOWN_FACE}


def test_an_empty_hallway_decides_nothing(front: DoorPipeline, clock: Clock) -> None:
    results = list(feed(front, clock, [rgb(empty_frame())] * 5))
    assert all(not r.faces and not r.decisions for r in results)


def test_two_residents_side_by_side_get_a_track_and_a_grant_each(
    front: DoorPipeline, clock: Clock
) -> None:
    results = list(feed(front, clock, [side_by_side(RESIDENT, OTHER)] * 8))
    granted = sorted(d.person or "" for r in results for d in r.decisions if d.kind == "granted")
    assert granted == sorted([RESIDENT, OTHER])
    assert len(set(results[-1].track_ids)) == 2


def test_refused_faces_travel_on_with_their_track(front: DoorPipeline, clock: Clock) -> None:
    blurred = rgb(cv2.GaussianBlur(fit(photo(RESIDENT)), (0, 0), 4))
    for frame in [blurred] * 3:
        [result] = list(feed(front, clock, [frame]))
        refused = [f for f in result.faces if f.embedding is None]
        assert refused, "the refused face must be in the step's result"
        assert len(result.track_ids) == len(result.faces)
        assert "blurred" in refused[0].quality.reason
        assert not result.decisions


def test_card_and_face_needs_the_claim(
    engine: FaceEngine, recognition: Recognition, clock: Clock
) -> None:
    desk = door("desk", engine, recognition, clock)
    out = decisions(feed(desk, clock, [visitor(RESIDENT)] * 5))
    assert [(d.kind, d.code) for d in out] == [("denied", ReasonCode.NO_CLAIM)]

    clock.now += 60
    assert desk.claim("r1", RESIDENT, 5.0) == []
    results = list(feed(desk, clock, [visitor(RESIDENT)] * 5))
    out = [d for r in results for d in r.decisions]
    assert [(d.kind, d.person, d.request_id) for d in out] == [("granted", RESIDENT, "r1")]
    [outcome] = [o for r in results for o in r.claim_outcomes]
    assert (outcome.match, outcome.code) == (True, ReasonCode.MATCH)


def test_a_claim_for_someone_else_is_a_mismatch(
    engine: FaceEngine, recognition: Recognition, clock: Clock
) -> None:
    desk = door("desk", engine, recognition, clock)
    desk.claim("r2", OTHER, 5.0)
    results = list(feed(desk, clock, [visitor(RESIDENT)] * 5))
    out = [d for r in results for d in r.decisions]
    assert [(d.kind, d.person, d.code) for d in out] == [
        ("denied", RESIDENT, ReasonCode.CLAIM_MISMATCH)
    ]
    [outcome] = [o for r in results for o in r.claim_outcomes]
    assert (outcome.match, outcome.code) == (False, ReasonCode.CLAIM_MISMATCH)


def test_a_claim_without_a_face_times_out(
    engine: FaceEngine, recognition: Recognition, clock: Clock
) -> None:
    desk = door("desk", engine, recognition, clock)
    desk.claim("r3", RESIDENT, 2.0)
    list(feed(desk, clock, [rgb(empty_frame())] * 5))
    clock.now += 2.0
    [outcome] = desk.expired_claims()
    assert (outcome.request_id, outcome.match, outcome.code) == ("r3", False, ReasonCode.TIMEOUT)
