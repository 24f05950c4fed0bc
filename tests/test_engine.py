"""The face engine on real images with the real models: detect, align, embed, match."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import celeb_image
from facegate.evaluation import Sample, embed_samples, pair_distances, scan_dataset
from facegate.imageio import load_image
from facegate.matching import Matcher, triplet_loss
from facegate.vision.engine import FaceEngine, pipeline_fingerprint
from facegate.vision.quality import Gate
from facegate.vision.types import FaceEncoding, ImageArray

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")


Embedded = tuple[list[Sample], np.ndarray, list[tuple[str, str]]]


@pytest.fixture(scope="module")
def embedded_pass(
    engine: FaceEngine, celeb_dir: Path
) -> tuple[Embedded, dict[Path, list[FaceEncoding]]]:
    """Every photo of the data set through the int8 engine once (facegate evaluate's path):
    the tests below take the split or the people they need from it. The engine.encode result
    of each photo (every face found, as embed_samples' encode_one saw it) is kept too."""
    samples = scan_dataset(celeb_dir)
    faces: list[list[FaceEncoding]] = []
    encode = engine.encode

    def recording(image: ImageArray, gate: Gate | None = None, plan: Any = None) -> Any:
        faces.append(encode(image, gate, plan))
        return faces[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "encode", recording)
        result = embed_samples(engine, samples)
    assert len(faces) == len(samples)  # one engine.encode per photo, in order
    return result, {s.path.resolve(): f for s, f in zip(samples, faces, strict=True)}


@pytest.fixture(scope="module")
def embedded(embedded_pass: tuple[Embedded, dict[Path, list[FaceEncoding]]]) -> Embedded:
    return embedded_pass[0]


def subset(embedded: Embedded, keep: Callable[[Sample], bool]) -> tuple[list[Sample], np.ndarray]:
    kept, vectors, _ = embedded
    rows = [i for i, sample in enumerate(kept) if keep(sample)]
    return [kept[i] for i in rows], vectors[rows]


@pytest.fixture(scope="module")
def train_matcher(embedded: Embedded) -> Matcher:
    kept, vectors = subset(embedded, lambda s: s.split == "train")
    return Matcher.from_embeddings(vectors, [s.person for s in kept])


def test_detector_finds_one_face_with_keypoints_inside_the_box(engine: FaceEngine) -> None:
    image = load_image(celeb_image("madonna"))
    faces = engine.detect(image)
    assert len(faces) == 1
    face = faces[0]
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    assert face.score > 0.7
    eyes = face.keypoints[:2]
    assert np.all((eyes[:, 0] > x0) & (eyes[:, 0] < x1) & (eyes[:, 1] > y0) & (eyes[:, 1] < y1))
    # Keypoint 0 is the subject's right eye: it appears on the image's left.
    assert eyes[0, 0] < eyes[1, 0]


def test_embeddings_are_unit_128d(engine: FaceEngine) -> None:
    encoding = engine.encode_one(load_image(celeb_image("elton_john")), "elton")
    assert encoding.embedding is not None
    assert encoding.embedding.shape == (128,)
    assert encoding.embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(encoding.embedding)) - 1.0) < 1e-4


def test_same_person_is_closer_than_different_people(embedded: Embedded) -> None:
    kept, vectors = subset(embedded, lambda s: s.split == "val")
    assert len(kept) == 25  # every val photo holds one usable face
    genuine, impostor = pair_distances(vectors, np.array([s.person for s in kept]))
    assert np.median(genuine) + 0.3 < np.median(impostor)
    assert np.mean(genuine < 0.9) > 0.4
    # No impostor pair at the default door threshold.
    assert np.min(impostor) > 0.9


def test_identify_every_val_image_top1(embedded: Embedded, train_matcher: Matcher) -> None:
    _, _, failures = embedded
    assert not [path for path, _ in failures if "/val/" in path], failures
    kept, vectors = subset(embedded, lambda s: s.split == "val")
    assert {s.person for s in kept} == set(PEOPLE)
    wrong = []
    for sample, vector in zip(kept, vectors, strict=True):
        distances = train_matcher.distances(vector)
        if train_matcher.identities[int(np.argmin(distances))] != sample.person:
            wrong.append(sample.path.name)
    assert wrong == []


def test_verify_accepts_self_and_rejects_others(engine: FaceEngine, train_matcher: Matcher) -> None:
    probe = engine.encode_one(load_image(celeb_image("jerry_seinfeld", index=1)), "probe")
    assert probe.embedding is not None
    assert train_matcher.verify(probe.embedding, "jerry_seinfeld", 0.9).accepted
    for other in PEOPLE:
        if other != "jerry_seinfeld":
            result = train_matcher.verify(probe.embedding, other, 0.9)
            assert not result.accepted and result.distance > 0.9
    unknown = train_matcher.verify(probe.embedding, "nobody", 0.9)
    assert not unknown.accepted and "not enrolled" in unknown.reason


def test_stranger_stays_unknown(embedded: Embedded) -> None:
    """A gallery without madonna must not identify her as anyone at the door threshold."""
    kept, vectors = subset(embedded, lambda s: s.split == "train" and s.person != "madonna")
    matcher = Matcher.from_embeddings(vectors, [s.person for s in kept])
    probes, probe_vectors = subset(embedded, lambda s: s.split == "val" and s.person == "madonna")
    assert len(probes) == 5
    for sample, probe in zip(probes, probe_vectors, strict=True):
        assert not matcher.identify(probe, 0.9, 0.1).accepted, sample.path.name


def test_int8_agrees_with_float32(
    embedded_pass: tuple[Embedded, dict[Path, list[FaceEncoding]]],
    float_engine: FaceEngine,
    celeb_dir: Path,
) -> None:
    """Same aligned faces through both embedders: cosine mean >= 0.995, min >= 0.99.

    Every other photo of each person (train and val alike): 59 of the 118, all five people.
    The int8 side is the module's pass over the data set (engine.encode: every detection,
    then encode_detection of each), not a second run of the same int8 models.
    """
    _, int8_faces = embedded_pass
    cosines = []
    people = set()
    photos = [p for d in sorted(celeb_dir.glob("*/*")) for p in sorted(d.glob("*.jpg"))[::2]]
    for path in photos:
        faces = int8_faces[path.resolve()]
        if len(faces) != 1:
            continue
        a = faces[0].embedding
        b = float_engine.encode_detection(load_image(path), faces[0].detection).embedding
        if a is not None and b is not None:
            cosines.append(float(a @ b))
            people.add(path.parent.name)
    assert len(cosines) >= 50 and people == set(PEOPLE)
    assert np.mean(cosines) >= 0.995
    assert np.min(cosines) >= 0.99


def test_several_faces_yield_one_result_each(engine: FaceEngine, tmp_path: Path) -> None:
    left = Image.open(celeb_image("ben_afflek")).convert("RGB").resize((300, 380))
    right = Image.open(celeb_image("mindy_kaling")).convert("RGB").resize((300, 380))
    both = Image.new("RGB", (640, 400), (128, 128, 128))
    both.paste(left, (10, 10))
    both.paste(right, (330, 10))
    faces = engine.encode(np.asarray(both))
    assert len([f for f in faces if f.embedding is not None]) == 2


def test_triplet_loss_matches_the_seed() -> None:
    a = np.array([[1.0, 1.0]])
    # Identical anchor, positive, negative: the loss is exactly alpha.
    assert triplet_loss(a, a, a, alpha=5.0) == pytest.approx(5.0)
    # Positive 1 away, negative 3 away: 1 - 9 + 0.2 < 0, clipped to 0.
    assert triplet_loss(a, a + [1.0, 0.0], a + [3.0, 0.0]) == 0.0
    # Positive 2 away, negative 1 away: 4 - 1 + 0.2.
    assert triplet_loss(a, a + [0.0, 2.0], a + [1.0, 0.0]) == pytest.approx(3.2)
    # Batch: per-example hinge, then summed.
    anchors = np.zeros((3, 128), np.float32)
    positives = np.zeros((3, 128), np.float32)
    negatives = np.zeros((3, 128), np.float32)
    negatives[0, 0] = 1.0  # 0 - 1 + 0.2 -> 0
    positives[1, 0] = 1.0  # 1 - 0 + 0.2 -> 1.2
    assert triplet_loss(anchors, positives, negatives) == pytest.approx(0.0 + 1.2 + 0.2)
    # A well-trained embedding: the loss falls as the negative moves away.
    rng = np.random.default_rng(1)
    anchor = rng.normal(6, 0.1, (3, 128)).astype(np.float32)
    far = triplet_loss(anchor, anchor + 0.01, anchor + 1.0)
    near = triplet_loss(anchor, anchor + 0.01, anchor + 0.02)
    assert far == 0.0 < near


def test_landmark_eyes_agree_with_the_detector_eyes(engine: FaceEngine, celeb_dir: Path) -> None:
    """FaceMesh refines BlazeFace's eye points: same eyes (right on the image's left), a
    few percent of the eye distance apart, never a different feature."""
    offsets = []
    for path in sorted((celeb_dir / "val").glob("*/*.jpg")):
        image = load_image(path)
        for face in engine.detect(image):
            marks = engine.landmarker.locate(image, face)
            assert marks.right_eye[0] < marks.left_eye[0], path.name
            eyes = np.array([marks.right_eye, marks.left_eye])
            offsets.append(np.linalg.norm(eyes - face.keypoints[:2], axis=1) / face.eye_distance)
    assert len(offsets) >= 25
    assert np.median(offsets) < 0.12
    assert np.max(offsets) < 0.35


def test_rolled_head_gives_the_same_embedding(engine: FaceEngine) -> None:
    """A head tilted 25 deg sideways (camera mounted askew) is aligned back upright."""
    image = Image.open(celeb_image("jerry_seinfeld")).convert("RGB")
    upright = engine.encode_one(np.asarray(image), "upright").embedding
    rolled = engine.encode_one(np.asarray(image.rotate(25, expand=True)), "rolled").embedding
    assert upright is not None and rolled is not None
    assert float(np.linalg.norm(upright - rolled)) < 0.35


def test_fingerprint_covers_embedder_landmarks_and_alignment(
    engine: FaceEngine, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gallery made with another embedder, landmark model or eye template is refused."""
    from facegate.vision import engine as engine_module

    assert pipeline_fingerprint(models_dir, "int8") == engine.fingerprint
    assert pipeline_fingerprint(models_dir, "float32") != engine.fingerprint
    embedder_sha, landmarks_sha = engine.embedder.fingerprint, engine.landmarker.fingerprint
    assert engine_module._combine(embedder_sha, landmarks_sha) == engine.fingerprint
    assert engine_module._combine(embedder_sha, "0" * 64) != engine.fingerprint
    monkeypatch.setattr(engine_module, "RIGHT_EYE_XY", (0.30, 0.40))
    assert engine_module._combine(embedder_sha, landmarks_sha) != engine.fingerprint
