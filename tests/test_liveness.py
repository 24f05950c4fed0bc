"""The passive liveness stage (issue 13): the structure test on exact synthetic point motion,
the stage on seeded rendered sequences (5-celebrity *train* photos: the thresholds were set
on them; the reported rates use val), and the real captures as smoke tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import GifImagePlugin, Image, ImageOps

from facegate.decisions import Decision
from facegate.pad.scene import Camera, Pose, hallway
from facegate.pad.species import FaceSource, load_source, render
from facegate.tracking import FaceTracker, TrackedFace
from facegate.vision.engine import LIVENESS_STAGES, FaceEngine
from facegate.vision.liveness import OffLiveness, PassiveLiveness
from facegate.vision.liveness.actions import signed_yaw
from facegate.vision.liveness.structure import PairEvidence, analyse
from facegate.vision.liveness.texture import PointPair, fit_homography
from facegate.vision.types import FaceEncoding, LivenessEvidence

PAD = Path(__file__).resolve().parent / "data" / "pad"
TRAIN = Path(__file__).resolve().parent.parent / "models" / "data" / "5-celebrity" / "train"
CAMERA = Camera()
IOD_M = 0.063
START = 1_750_000_000.0


# --- the structure test on exact point motion ------------------------------------------------


def face_relief(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A face-like relief in IOD (+ away from the camera): cheeks and forehead curving
    away in both directions, a nose 0.45 IOD proud below the eyes."""
    nose = 0.45 * np.exp(-(u**2 + (v - 0.55) ** 2) / 0.06)
    return 0.35 * u**2 + 0.2 * v**2 - nose


def cylinder_relief(radius_iod: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def relief(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return radius_iod - np.sqrt(radius_iod**2 - u**2)

    return relief


def moved_pair(
    relief: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    turn_deg: float = 8.0,
    noise_px: float = 0.05,
    template: bool = True,
    seed: int = 0,
) -> tuple[PointPair, float]:
    """Points on a surface 0.6 m away, seen before and after it turned about its vertical
    axis; the FaceMesh-like depth template is the face relief (what FaceMesh predicts for
    anything that looks like a face, a print included)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1.0, 1.0, 90)
    v = rng.uniform(-0.8, 1.5, 90)
    points = np.stack([u, v, relief(u, v)]) * IOD_M

    def seen(pose: Pose) -> np.ndarray:
        cam = pose.rotation @ points + pose.translation[:, None]
        x, y = CAMERA.project(cam[0], cam[1], cam[2])
        return np.column_stack([x, y]) + rng.normal(0, noise_px, (len(u), 2))

    before = seen(Pose(0, 0, 0, 0.0, 0.0, 0.6))
    still = turn_deg == 0
    after = seen(Pose(0, 0, 0, 0.0, 0.0, 0.6) if still else Pose(turn_deg, 2, 1, 0.01, 0.0, 0.6))
    iod_px = CAMERA.focal_px * IOD_M / 0.6
    depth = face_relief(u, v) * iod_px if template else None
    pair = PointPair(before.astype(np.float32), after.astype(np.float32), 3, depth)
    return pair, iod_px


def scored(pair: PointPair, iod: float) -> PairEvidence:
    found = analyse(pair, iod, CAMERA.matrix)
    assert found is not None
    return found


def test_the_least_squares_homography_is_exact_on_a_plane() -> None:
    h = np.array([[1.05, 0.02, 3.0], [-0.01, 0.98, -2.0], [1e-4, -2e-4, 1.0]])
    before = np.random.default_rng(1).uniform(100, 300, (40, 2))
    after = np.asarray(cv2.perspectiveTransform(before[:, None], h)[:, 0], dtype=np.float64)
    found = fit_homography(before, after)
    assert found is not None and np.allclose(found, h, atol=1e-9)


def test_a_turning_sheet_shows_no_relief_where_a_face_would_have() -> None:
    evidence = scored(*moved_pair(lambda u, v: 0 * u))
    assert evidence.relief_f < 4 and evidence.curved_f < 4
    assert evidence.expected_relief_f > 40  # a face turning so would have shown plenty


def test_a_sheet_bent_on_a_cylinder_shows_relief_but_only_in_one_direction() -> None:
    # A print bent to a radius of 10 cm (1.6 IOD): as deep as a face across, flat down.
    evidence = scored(*moved_pair(cylinder_relief(1.6)))
    assert evidence.relief_f > 20
    assert evidence.curved_f < 4


def test_a_face_shows_relief_curved_in_two_directions() -> None:
    evidence = scored(*moved_pair(face_relief))
    assert evidence.relief_f > 20 and evidence.curved_f > 20


def test_without_motion_nothing_is_evident() -> None:
    evidence = scored(*moved_pair(face_relief, turn_deg=0.0))
    assert evidence.curved_f < 4


# --- the stage on rendered sequences ----------------------------------------------------------


def train_photo(person: str, prefix: str) -> Path:
    return next(p for p in sorted((TRAIN / person).iterdir()) if p.name.startswith(prefix))


@pytest.fixture(scope="module")
def sources(engine: FaceEngine) -> dict[str, FaceSource]:
    found = {
        "ben": load_source(engine, train_photo("ben_afflek", "httpsuploadwikimedia"), "ben"),
        "jerry": load_source(engine, train_photo("jerry_seinfeld", "httpgraphicsnytimes"), "jerry"),
    }
    assert all(source is not None for source in found.values())
    return {name: source for name, source in found.items() if source is not None}


@pytest.fixture(scope="module")
def rendered(sources: dict[str, FaceSource]) -> Callable[[str, str, int], list[np.ndarray]]:
    """Each (kind, source, seed) rendered once for the module (a sequence takes ~1 s)."""
    cache: dict[tuple[str, str, int], list[np.ndarray]] = {}

    def frames(kind: str, name: str, seed: int) -> list[np.ndarray]:
        key = (kind, name, seed)
        if key not in cache:
            cache[key] = render(kind, sources[name], seed).frames
        return cache[key]

    return frames


Encoded = Callable[[str, str, int], list[list[FaceEncoding]]]


@pytest.fixture(scope="module")
def encoded(engine: FaceEngine, rendered: Callable[[str, str, int], list[np.ndarray]]) -> Encoded:
    """Each rendered sequence's faces, frame by frame, encoded once for the module (the
    engine is stateless: a frame always encodes the same)."""
    cache: dict[tuple[str, str, int], list[list[FaceEncoding]]] = {}

    def faces(kind: str, name: str, seed: int) -> list[list[FaceEncoding]]:
        key = (kind, name, seed)
        if key not in cache:
            cache[key] = [engine.encode(frame) for frame in rendered(kind, name, seed)]
        return cache[key]

    return faces


def watch(
    engine: FaceEngine,
    frames: Sequence[np.ndarray],
    stage: PassiveLiveness | None = None,
    encoded: Sequence[list[FaceEncoding]] | None = None,
) -> list[LivenessEvidence]:
    """The evidence on the frames' (one) face track, frame by frame (`encoded`: the
    frames' faces, if already encoded)."""
    stage = stage or PassiveLiveness()
    tracker = FaceTracker()
    seen = []
    for index, frame in enumerate(frames):
        faces = engine.encode(frame) if encoded is None else encoded[index]
        tracks = tracker.update([TrackedFace(f.detection.box, f.embedding) for f in faces])
        seen += [stage.observe(t, f, frame) for f, t in zip(faces, tracks, strict=True)]
    return seen


def test_a_print_waved_at_the_camera_is_an_attack_and_never_live(
    engine: FaceEngine, rendered: Callable[[str, str, int], list[np.ndarray]], encoded: Encoded
) -> None:
    evidence = watch(engine, rendered("print", "ben", 2), encoded=encoded("print", "ben", 2))
    assert not any(e.live for e in evidence)
    attack = next(e for e in evidence if e.live is False)
    assert attack.method == "passive" and attack.score == 0.0
    assert dict(attack.scores)["sheet_pairs"] >= 2
    assert "sheet" in attack.reason


def test_a_live_head_walking_up_is_live_within_a_second(
    engine: FaceEngine, rendered: Callable[[str, str, int], list[np.ndarray]], encoded: Encoded
) -> None:
    frames = rendered("live_moving", "jerry", 100008)
    evidence = watch(engine, frames, encoded=encoded("live_moving", "jerry", 100008))
    assert not any(e.live is False for e in evidence)
    verdicts = [e.live for e in evidence]
    assert True in verdicts
    # The face is embedded from frame 13 of this sequence; live 0.5 s later (10 fps).
    first_live = verdicts.index(True)
    assert first_live <= 13 + 10
    assert 0.5 <= evidence[first_live].score <= 1.0


def test_a_person_standing_still_is_undecided_never_an_attack(
    engine: FaceEngine, rendered: Callable[[str, str, int], list[np.ndarray]]
) -> None:
    evidence = watch(engine, rendered("live_still", "jerry", 200011))
    assert all(e.live is None for e in evidence)
    assert evidence[-1].reason.startswith("not enough motion")


def test_tracks_are_kept_apart_and_forgotten(
    rendered: Callable[[str, str, int], list[np.ndarray]], encoded: Encoded
) -> None:
    frames = rendered("live_moving", "jerry", 100008)
    stage = PassiveLiveness()
    faces = encoded("live_moving", "jerry", 100008)
    for frame, found in zip(frames, faces, strict=True):
        for face in found:
            stage.observe(1, face, frame)
    live = stage.observe(1, faces[-1][0], frames[-1])
    assert live.live is True
    other = stage.observe(2, faces[-1][0], frames[-1])
    assert other.live is None and other.frames == 1
    stage.forget(1)
    assert stage.observe(1, faces[-1][0], frames[-1]).frames == 1


def test_each_camera_gets_its_own_stage() -> None:
    stage = PassiveLiveness()
    assert stage.for_camera(hfov_deg=75.0) is not stage
    off = OffLiveness()
    assert off.for_camera(hfov_deg=75.0) is off
    assert set(LIVENESS_STAGES) == {"off", "passive"}


def test_turns_are_signed_by_the_subjects_own_left(
    engine: FaceEngine, sources: dict[str, FaceSource]
) -> None:
    from facegate.pad.species import _draw, _head, _light

    source = sources["jerry"]
    head, light = _head(source, 1.0), _light(np.random.default_rng(0))
    background = hallway(np.random.default_rng(0))
    yaws = {}
    for turn in (-20.0, 20.0):  # > 0: the subject turns to their left (image right)
        canvas = background.copy()
        _draw(canvas, head, Pose(turn, 0, 0, 0.0, 0.0, 0.55), CAMERA, light)
        frame = np.asarray(np.clip(canvas * 255 + 0.5, 0, 255), dtype=np.uint8)
        face = engine.encode(frame)[0]
        assert face.landmarks is not None
        yaws[turn] = signed_yaw(face.landmarks.mesh)
    assert yaws[20.0] - yaws[-20.0] > 20


# --- real captures: smoke, not rates -----------------------------------------------------------


def letterboxed(rgb: np.ndarray) -> np.ndarray:
    scale = min(640 / rgb.shape[1], 480 / rgb.shape[0])
    resized = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    frame = np.full((480, 640, 3), 60, dtype=np.uint8)
    y, x = (480 - resized.shape[0]) // 2, (640 - resized.shape[1]) // 2
    frame[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return frame


def still(name: str) -> np.ndarray:
    with Image.open(PAD / name) as image:
        return letterboxed(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))


def test_the_real_head_turning_clip_is_never_an_attack(engine: FaceEngine) -> None:
    frames = []
    with Image.open(PAD / "live_head_turns_female.gif") as gif:
        assert isinstance(gif, GifImagePlugin.GifImageFile)  # for n_frames
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(letterboxed(np.asarray(gif.convert("RGB"))))
    evidence = watch(engine, frames)
    assert evidence and not any(e.live is False for e in evidence)


@pytest.mark.parametrize(
    ("name", "never"), [("attack_tablet_still_F2.jpg", True), ("live_still_T1.jpg", False)]
)
def test_real_stills_held_in_view(engine: FaceEngine, name: str, never: bool) -> None:
    """A still image gives no motion: the tablet replay is never live, the live still
    never an attack; both wait (undecided)."""
    evidence = watch(engine, [still(name)] * 12)
    assert evidence and all(e.live is None for e in evidence)
    assert not math.isnan(evidence[-1].score)


# --- the door's step with liveness on ----------------------------------------------------------


def test_the_door_lets_the_live_resident_in_and_refuses_her_print(
    engine: FaceEngine,
    rendered: Callable[[str, str, int], list[np.ndarray]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In-process, real models: a moving print of an enrolled resident gives no unlock and
    one `presentation_attack` naming her; a live sequence of her is let in once."""
    from facegate.config import load_config
    from facegate.decisions import ReasonCode
    from facegate.pipeline import DoorPipeline
    from facegate.policy import DoorPolicy
    from facegate.service import load_recognition
    from scenes import write_config, write_enrollment, write_key

    write_key(tmp_path / "hmac.key")
    write_enrollment(tmp_path / "enrollment.yaml", {"jerry_seinfeld": ["front"]})
    (tmp_path / "journal").mkdir()
    config = write_config(
        tmp_path / "facegate.yaml", port=1883, cameras=[{"door": "front", "source": "cam/"}],
        recognition={"liveness": "passive", "min_face_px": 40},
    )  # fmt: skip
    state = load_recognition(load_config(config), engine)
    monkeypatch.setattr(engine, "liveness", PassiveLiveness())  # the daemon composes it

    def visit(frames: Sequence[np.ndarray]) -> list[Decision]:
        clock = [START]
        policy = DoorPolicy("front", "face", state.config.recognition, state.enrollment,
                            lambda: clock[0])  # fmt: skip
        pipeline = DoorPipeline("front", engine, state, policy)
        decisions = []
        for frame in frames:
            decisions += pipeline.step(frame).decisions
            clock[0] += 0.1
        return decisions

    attack = visit(rendered("print", "jerry", 5))
    assert [(d.kind, d.code, d.person) for d in attack] == [
        ("denied", ReasonCode.PRESENTATION_ATTACK, "jerry_seinfeld")
    ]
    live = visit(rendered("live_moving", "jerry", 100008))
    (granted,) = [d for d in live if d.kind == "granted"]
    assert granted.unlock and granted.person == "jerry_seinfeld"
    assert granted.liveness is not None and granted.liveness.method == "passive"


def test_a_nir_camera_seeing_colour_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    from facegate.vision.types import Detection, FaceEncoding, FaceQuality

    stage = PassiveLiveness().for_camera(hfov_deg=60.0, nir=True)
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[100:300, 200:400] = (200, 60, 40)  # a colourful patch where the face is
    detection = Detection((200.0, 100.0, 400.0, 300.0), np.zeros((6, 2), np.float32), 0.9)
    face = FaceEncoding(detection, FaceQuality(200.0, 0.05, True), None, None)
    with caplog.at_level("WARNING"):
        for _ in range(3):
            stage.observe(1, face, frame)
    assert sum("spectrum nir" in r.message for r in caplog.records) == 1


def test_turns_away_from_the_camera_count_and_coming_back_does_not() -> None:
    from facegate.vision.liveness.actions import TURN_LEFT, TURN_RIGHT, ActionDetector

    detector = ActionDetector()
    grey = np.zeros((4, 4), dtype=np.uint8)
    yaws = [25.0] * 4 + [9.0] * 4 + [40.0] * 3 + [2.0] * 4 + [-20.0] * 2

    def mesh_with_yaw(yaw: float) -> np.ndarray:
        mesh = np.zeros((468, 3), dtype=np.float32)
        # Mirror pairs one unit apart across, turned by `yaw` (the subject's left away).
        for left in (263, 362, 291, 454, 356, 323, 288):
            mesh[left] = (math.cos(math.radians(yaw)), 0.0, math.sin(math.radians(yaw)))
        return mesh

    for frame, yaw in enumerate(yaws):
        detector.observe(frame, mesh_with_yaw(yaw), grey, (0, 0))
    turns = [action for _, action in detector.actions if action != "blink"]
    assert turns == [TURN_LEFT, TURN_RIGHT]  # 25 -> 9 is a return; 40 and -20 are turns
