"""Less work where the answer cannot change (issue 17, item 1): a face standing still is
embedded about once a second instead of every frame, its landmarks are placed only while
liveness reads them, and still nobody is let in on someone else's face.

Real models, real photos and rendered live sequences, a fake clock; the engine's own
embedder and landmark model are counted, not replaced."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Self

import cv2
import numpy as np
import pytest

from facegate.config import load_config
from facegate.decisions import Decision, ReasonCode
from facegate.pad.species import FaceSource, load_source, render
from facegate.pipeline import RECHECK_S, DoorPipeline, Recognition, StepResult
from facegate.policy import DoorPolicy
from facegate.service import load_recognition
from facegate.tracking import FaceTracker
from facegate.vision.engine import FaceEngine
from facegate.vision.liveness import PassiveLiveness
from facegate.vision.stages import Embedder, Landmarker
from facegate.vision.types import Detection, FaceLandmarks, FloatArray, ImageArray
from scenes import CELEB, empty_frame, fit, photo, write_config, write_enrollment, write_key

RESIDENT = "jerry_seinfeld"
OTHER = "elton_john"
STRANGER = "madonna"
START = 1_750_000_000.0  # a Wednesday
FRAME_S = 0.1  # 10 fps


class CountingEmbedder(Embedder):
    """The engine's embedder, counted: how many faces a step really embedded."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.calls = inner, 0
        self.fingerprint, self.dim = inner.fingerprint, inner.dim

    @classmethod
    def load(cls, models_dir: Path, threads: int) -> Self:
        raise NotImplementedError("wraps a loaded embedder")

    def embed(self, face: ImageArray) -> FloatArray:
        self.calls += 1
        return self.inner.embed(face)


class CountingLandmarker(Landmarker):
    def __init__(self, inner: Landmarker) -> None:
        self.inner, self.calls = inner, 0
        self.fingerprint = inner.fingerprint

    @classmethod
    def load(cls, models_dir: Path, threads: int) -> Self:
        raise NotImplementedError("wraps a loaded landmarker")

    def locate(self, image: ImageArray, detection: Detection) -> FaceLandmarks:
        self.calls += 1
        return self.inner.locate(image, detection)


@pytest.fixture
def counted(
    engine: FaceEngine, monkeypatch: pytest.MonkeyPatch
) -> tuple[CountingEmbedder, CountingLandmarker]:
    embedder = CountingEmbedder(engine.embedder)
    landmarker = CountingLandmarker(engine.landmarker)
    monkeypatch.setattr(engine, "embedder", embedder)
    monkeypatch.setattr(engine, "landmarker", landmarker)
    monkeypatch.setattr(engine, "liveness", PassiveLiveness())  # the daemon composes it
    return embedder, landmarker


def site(
    root: Path, engine: FaceEngine, gallery: Path | None = None, **recognition: object
) -> Recognition:
    """A door site of the two residents; `gallery`: a gallery of them to start from (its
    embeddings are reused by image hash, as a re-run of `facegate enroll` would)."""
    root.mkdir()
    if gallery is not None:
        shutil.copy2(gallery, root / "gallery.fgg")
    write_key(root / "hmac.key")
    write_enrollment(root / "enrollment.yaml", {RESIDENT: ["front"], OTHER: ["front"]})
    (root / "journal").mkdir()
    config = write_config(
        root / "facegate.yaml", port=1883, cameras=[{"door": "front", "source": "cam/"}],
        recognition={"unknown_event_interval_s": 5.0, **recognition},
    )  # fmt: skip
    return load_recognition(load_config(config), engine)


@pytest.fixture(scope="module")
def gallery_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embed-skip")


@pytest.fixture(scope="module")
def gallery(gallery_root: Path, engine: FaceEngine) -> Path:
    """The residents' photos embedded once for the module: every site below starts from
    this gallery (the same enrollment.yaml, so each reuses all of its embeddings)."""
    return site(gallery_root / "enrolled", engine, liveness="off").config.gallery


@pytest.fixture(scope="module")
def no_cooldown(gallery_root: Path, engine: FaceEngine, gallery: Path) -> Recognition:
    """Liveness off and no cooldown: a resident standing in view is granted again and again,
    so every frame could decide (the hardest case for reusing a face)."""
    return site(gallery_root / "no-cooldown", engine, gallery, liveness="off", cooldown_s=0.0)


@pytest.fixture(scope="module")
def door_defaults(gallery_root: Path, engine: FaceEngine, gallery: Path) -> Recognition:
    return site(gallery_root / "defaults", engine, gallery, liveness="off", cooldown_s=10.0)


class Door:
    def __init__(self, engine: FaceEngine, state: Recognition) -> None:
        self.now = START
        rec = state.config.recognition
        policy = DoorPolicy("front", "face", rec, state.enrollment, lambda: self.now)
        self.pipe = DoorPipeline("front", engine, state, policy)

    def feed(self, frames: Sequence[np.ndarray], *, reuse: bool = True) -> Iterator[StepResult]:
        for frame in frames:
            yield self.pipe.step(frame, reuse=reuse)
            self.now += FRAME_S


def rgb(bgr: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))  # a fresh array, channels swapped


@functools.cache
def visitor(person: str) -> np.ndarray:
    """`person`'s photo as the camera frame (read-only: one array serves every test)."""
    frame = rgb(fit(photo(person)))
    frame.flags.writeable = False
    return frame


def granted(results: Sequence[StepResult]) -> list[Decision]:
    return [d for r in results for d in r.decisions if d.kind == "granted"]


# --- a standing face ---------------------------------------------------------------------------


def test_a_standing_resident_is_embedded_about_once_a_second(
    engine: FaceEngine, door_defaults: Recognition, counted: tuple[CountingEmbedder, ...]
) -> None:
    embedder = counted[0]
    frames = [visitor(RESIDENT)] * 50  # 5 s in view
    door = Door(engine, door_defaults)
    results = list(door.feed(frames))
    reusing = embedder.calls
    assert [d.person for d in granted(results)] == [RESIDENT]  # one grant, as before
    # 3 frames to settle, then one embedding per RECHECK_S: 3 + 5 - 1 of 50.
    assert reusing <= 3 + 50 * FRAME_S / RECHECK_S
    assert sum(r.reused[0] for r in results) == 50 - reusing

    embedder.calls = 0
    every = list(Door(engine, door_defaults).feed(frames, reuse=False))
    assert embedder.calls == 50 and not any(r.reused[0] for r in every)
    assert [d.person for d in granted(every)] == [RESIDENT]


def test_the_periodic_recheck_embeds_a_standing_face_again(
    engine: FaceEngine, door_defaults: Recognition, counted: tuple[CountingEmbedder, ...]
) -> None:
    embedder = counted[0]
    door = Door(engine, door_defaults)
    embedded_at: list[float] = []
    for _ in door.feed([visitor(RESIDENT)] * 40):
        if embedder.calls > len(embedded_at):
            embedded_at.append(round(door.now - START, 1))
    settled = embedded_at[3:]
    gaps = [round(b - a, 1) for a, b in zip(embedded_at[2:], settled, strict=False)]
    # Once RECHECK_S has passed: at the first frame at or after it (float steps of 0.1 s).
    assert settled and all(RECHECK_S <= gap <= RECHECK_S + FRAME_S for gap in gaps), embedded_at


def test_a_moved_or_resized_face_is_embedded_at_once(
    engine: FaceEngine, door_defaults: Recognition, counted: tuple[CountingEmbedder, ...]
) -> None:
    embedder = counted[0]
    still = fit(photo(RESIDENT))
    shifted = np.roll(still, 60, axis=1)  # the head moved 60 px sideways
    closer = cv2.resize(still, None, fx=1.25, fy=1.25)[60:540, 80:720]  # stepped closer
    door = Door(engine, door_defaults)
    list(door.feed([rgb(still)] * 5))
    for frame in (shifted, closer):
        before = embedder.calls
        [result] = list(door.feed([rgb(frame)]))
        assert embedder.calls == before + 1 and result.reused == [False]


def test_no_face_is_embedded_twice_in_one_frame(
    engine: FaceEngine, door_defaults: Recognition, counted: tuple[CountingEmbedder, ...]
) -> None:
    embedder = counted[0]
    two = empty_frame()
    halves = [cv2.resize(fit(photo(p)), (320, 240)) for p in (RESIDENT, OTHER)]
    two[120:360, :320], two[120:360, 320:] = halves
    door = Door(engine, door_defaults)
    calls = 0
    for result in door.feed([rgb(two)] * 20):
        fresh = sum(1 for f, old in zip(result.faces, result.reused, strict=True)
                    if f.embedding is not None and not old)  # fmt: skip
        assert len(result.faces) == 2 and len(set(result.track_ids)) == 2
        assert embedder.calls - calls == fresh  # one embedding per fresh face, no more
        calls = embedder.calls
    assert calls <= 2 * (3 + 20 * FRAME_S / RECHECK_S)


# --- someone else in the same place ------------------------------------------------------------


def same_box_as(
    person: str, model: str, engine: FaceEngine, scene: np.ndarray | None = None
) -> np.ndarray:
    """`person`'s photo scaled and moved so that the detector boxes their face where it
    boxes `model`'s face (in `scene`, RGB, or their own photo): another person stepping
    into the very same place."""
    target = engine.detect(visitor(model) if scene is None else scene)[0]
    frame = fit(photo(person))
    face = engine.detect(rgb(frame))[0]
    scale = target.width / face.width
    shift_x = target.box[0] - face.box[0] * scale
    shift_y = target.box[1] - face.box[1] * scale
    warp = np.array([[scale, 0.0, shift_x], [0.0, scale, shift_y]])
    moved = cv2.warpAffine(frame, warp, (frame.shape[1], frame.shape[0]), borderValue=(60,) * 3)
    return rgb(moved)


@pytest.mark.parametrize("newcomer", [STRANGER, OTHER])
def test_a_person_swap_in_place_is_embedded_and_never_opens_for_the_first(
    engine: FaceEngine,
    no_cooldown: Recognition,
    counted: tuple[CountingEmbedder, ...],
    newcomer: str,
) -> None:
    embedder = counted[0]
    swapped = same_box_as(newcomer, RESIDENT, engine)
    door = Door(engine, no_cooldown)
    before = list(door.feed([visitor(RESIDENT)] * 12))
    assert {d.person for d in granted(before)} == {RESIDENT}
    calls = embedder.calls
    after = list(door.feed([swapped] * 30))
    # Re-embedded within one re-check period (at once when the detector saw any change).
    first = next(i for i, r in enumerate(after) if not r.reused[0])
    assert first * FRAME_S < RECHECK_S and embedder.calls > calls
    # The resident is never let in again once someone else stands there.
    assert RESIDENT not in {d.person for d in granted(after)}
    if newcomer == STRANGER:
        assert not granted(after)
    else:
        assert {d.person for d in granted(after)} == {OTHER}  # on their own face only


def test_a_decision_waits_for_a_fresh_face(
    engine: FaceEngine, no_cooldown: Recognition, counted: tuple[CountingEmbedder, ...]
) -> None:
    """With no cooldown a standing resident is granted again and again: each grant is
    made on a frame whose face was embedded in that frame."""
    door = Door(engine, no_cooldown)
    results = list(door.feed([visitor(RESIDENT)] * 40))
    grants = [(i, d) for i, r in enumerate(results) for d in r.decisions if d.kind == "granted"]
    assert len(grants) >= 5
    assert all(not results[i].reused[0] for i, _ in grants)
    assert counted[0].calls < 40


def test_a_claim_embeds_every_frame(
    engine: FaceEngine, door_defaults: Recognition, counted: tuple[CountingEmbedder, ...]
) -> None:
    embedder = counted[0]
    door = Door(engine, door_defaults)
    list(door.feed([visitor(RESIDENT)] * 10))
    door.pipe.claim("r1", RESIDENT, 5.0)
    calls = embedder.calls
    results = list(door.feed([visitor(RESIDENT)] * 5))
    assert embedder.calls - calls >= 3 and not any(r.reused[0] for r in results[:3])


# --- liveness ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_source(engine: FaceEngine) -> FaceSource:
    path = next(p for p in sorted((CELEB / "train" / RESIDENT).iterdir()) if "nytimes" in p.name)
    source = load_source(engine, path, RESIDENT)
    assert source is not None
    return source


@pytest.fixture(scope="module")
def live(live_source: FaceSource) -> list[np.ndarray]:
    """The resident walking up (rendered once for the module's tests; read-only, so no
    test can change what the next one sees)."""
    frames = render("live_moving", live_source, 100008).frames
    for frame in frames:
        frame.flags.writeable = False
    return frames


@pytest.fixture(scope="module")
def passive(gallery_root: Path, engine: FaceEngine, gallery: Path) -> Recognition:
    return site(gallery_root / "passive", engine, gallery, liveness="passive", min_face_px=40)


def test_liveness_reads_landmarks_until_its_verdict_then_nothing(
    engine: FaceEngine,
    passive: Recognition,
    counted: tuple[CountingEmbedder, CountingLandmarker],
    live: list[np.ndarray],
) -> None:
    embedder, landmarker = counted
    door = Door(engine, passive)
    walked = list(door.feed(live))
    assert [d.person for d in granted(walked)] == [RESIDENT]  # judged live, let in
    # Standing still afterwards (the last frame held): no landmarks but the re-checks.
    embeds, marks = embedder.calls, landmarker.calls
    held = list(door.feed([live[-1]] * 30))
    assert all(r.faces for r in held)
    assert embedder.calls - embeds <= 1 + 30 * FRAME_S / RECHECK_S
    assert landmarker.calls - marks == embedder.calls - embeds


def test_a_still_photo_keeps_liveness_reading_and_never_opens(
    engine: FaceEngine, passive: Recognition, counted: tuple[CountingEmbedder, CountingLandmarker]
) -> None:
    embedder, landmarker = counted
    door = Door(engine, passive)
    results = list(door.feed([visitor(RESIDENT)] * 30))
    assert not granted(results)
    assert landmarker.calls == 30  # liveness has no verdict: it reads every frame
    assert embedder.calls <= 3 + 30 * FRAME_S / RECHECK_S


def test_a_live_track_that_shows_someone_else_proves_liveness_again(
    engine: FaceEngine,
    passive: Recognition,
    counted: tuple[CountingEmbedder, CountingLandmarker],
    live: list[np.ndarray],
) -> None:
    """A resident judged live, then another resident's still photo held up in the same
    place. Tracks split on a jump in the embedding; a lookalike may not jump that far, so
    here the track never splits (the hardest case): the verdict on the live face must not
    carry over to the photo."""
    door = Door(engine, passive)
    door.pipe._tracker = FaceTracker(max_embedding_jump=2.0)  # one track, whoever it shows
    walked = list(door.feed(live))
    assert [d.person for d in granted(walked)] == [RESIDENT]
    photo_of_other = same_box_as(OTHER, RESIDENT, engine, live[-1])
    held = list(door.feed([photo_of_other] * 40))
    assert {t for r in held for t in r.track_ids} == {walked[-1].track_ids[0]}  # same track
    assert not granted(held)  # undecided again: a still photo never proves a live face
    assert any(d.code == ReasonCode.LIVENESS_UNDECIDED and d.person == OTHER
               for r in held for d in r.decisions)  # fmt: skip
