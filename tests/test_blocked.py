"""Negative identities (issue 14, item 2): people enrollment.yaml lists under `blocked:`
take part in matching and are never let in.

In-process through DoorPipeline with real photos and a fake clock. Two lookalikes of the
resident (jerry_seinfeld): a celebrity (ben_afflek), and a closer one made by blending
half of another face (elton_john) into the resident's, so close that the door, without the
negative identity, takes one of its photos for the resident.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from facegate.config import load_config, load_enrollment
from facegate.decisions import Decision, ReasonCode
from facegate.errors import ConfigError
from facegate.gallery import Gallery
from facegate.matching import Matcher
from facegate.pipeline import DoorPipeline, Recognition
from facegate.policy import DoorPolicy
from facegate.service import load_recognition
from facegate.vision.engine import FaceEngine
from facegate.vision.types import ImageArray
from scenes import CELEB, fit, photo, write_config, write_key
from test_policy import FakeClock, policy, run, seen

RESIDENT = "jerry_seinfeld"
OTHER_RESIDENT = "madonna"
CELEBRITY_LOOKALIKE = "ben_afflek"
BLEND_LOOKALIKE = "jerrys_lookalike"
BLENDED_IN = "elton_john"
#: How much of the other face is blended into the resident's (inside the face outline).
BLEND: float = 0.5
FRAMES_PER_VISIT = 8


def frame_of(path: Path) -> ImageArray:
    """A door-camera frame (RGB, 640x480) of one photo."""
    return np.ascontiguousarray(fit(path)[:, :, ::-1])


def blend(engine: FaceEngine, base: Path, other: Path, share: float = BLEND) -> ImageArray:
    """`other`'s face, aligned by the eyes, blended into `base`'s face outline: a person who
    resembles the person in `base` (hair, head and background stay theirs)."""
    a, b = frame_of(base), frame_of(other)
    # The largest face's landmarks, as engine.encode places them (no gate, no embedding).
    face_a, face_b = (engine.landmarker.locate(f, engine.detect(f)[0]) for f in (a, b))
    eyes_a = np.array([face_a.right_eye, face_a.left_eye], np.float32)
    eyes_b = np.array([face_b.right_eye, face_b.left_eye], np.float32)
    transform, _ = cv2.estimateAffinePartial2D(eyes_b, eyes_a)
    moved = cv2.warpAffine(b, transform, (a.shape[1], a.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    outline = cv2.convexHull(face_a.mesh[:, :2].astype(np.int32))
    mask = np.zeros(a.shape[:2], np.float32)
    cv2.fillConvexPoly(mask, outline, 1.0)
    weight = cv2.GaussianBlur(mask, (0, 0), 6) * share
    # Mixed only where the weight is not exactly 0 (the face, blurred): elsewhere `a` as is.
    rows, cols = np.flatnonzero(weight.any(axis=1)), np.flatnonzero(weight.any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    mixed, inside = a.copy(), weight[box][..., None]
    mixed[box] = (a[box] * (1 - inside) + moved[box] * inside).astype(np.uint8)
    return mixed


def lookalike_frames(engine: FaceEngine, split: str, count: int) -> list[ImageArray]:
    return [
        blend(engine, photo(RESIDENT, split, i), photo(BLENDED_IN, split, i)) for i in range(count)
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Recognition:
    """Two residents; blocked: a celebrity and the blended lookalike (8 train photos)."""
    root = tmp_path_factory.mktemp("blocked")
    photos = root / "lookalike"
    photos.mkdir()
    for i, image in enumerate(lookalike_frames(engine, "train", 8)):
        cv2.imwrite(str(photos / f"{i}.png"), image[:, :, ::-1])
    write_key(root / "hmac.key")
    (root / "journal").mkdir()
    (root / "enrollment.yaml").write_text(
        "people:\n"
        f"  - {{id: {RESIDENT}, images: ['{CELEB / 'train' / RESIDENT}/'], doors: [front]}}\n"
        f"  - {{id: {OTHER_RESIDENT}, images: ['{CELEB / 'train' / OTHER_RESIDENT}/'],"
        " doors: [front]}\n"
        "blocked:  # never let in\n"
        f"  - {{id: {CELEBRITY_LOOKALIKE}, images: ['{CELEB / 'train' / CELEBRITY_LOOKALIKE}/']}}\n"
        f"  - {{id: {BLEND_LOOKALIKE}, name: Resembles Jerry, images: [lookalike/]}}\n"
    )
    config = write_config(
        root / "facegate.yaml", port=1883, cameras=[{"door": "front", "source": "cam/"}]
    )
    return load_recognition(load_config(config), engine)


def door(engine: FaceEngine, state: Recognition, clock: FakeClock) -> DoorPipeline:
    rules = DoorPolicy("front", "face", state.config.recognition, state.enrollment, clock)
    return DoorPipeline("front", engine, state, rules)


def visit(pipe: DoorPipeline, clock: FakeClock, frame: ImageArray) -> list[Decision]:
    """One person in front of the camera for FRAMES_PER_VISIT frames, then a long gap."""
    out = []
    for _ in range(FRAMES_PER_VISIT):
        out += pipe.step(frame).decisions
        clock.advance(0.1)
    clock.advance(60)  # past every cooldown
    return out


def grants(decisions: Sequence[Decision], person: str) -> int:
    return sum(d.kind == "granted" and d.person == person for d in decisions)


def residents_only(state: Recognition) -> Recognition:
    """The same gallery without the blocked people: the door before they were added."""
    gallery = Gallery.load(state.config.gallery, None)
    rows = [e for e in gallery.entries() if not state.enrollment.is_blocked(e.person_id)]
    matcher = Matcher.from_embeddings(
        np.stack([e.embedding for e in rows]), [e.person_id for e in rows]
    )
    return Recognition(state.config, state.enrollment, matcher)


def test_blocked_people_are_enrolled_and_matched(site: Recognition) -> None:
    assert set(site.matcher.identities) == {
        RESIDENT, OTHER_RESIDENT, CELEBRITY_LOOKALIKE, BLEND_LOOKALIKE
    }  # fmt: skip
    people = {p.id: p for p in Gallery.load(site.config.gallery, None).people}
    assert people[BLEND_LOOKALIKE].disabled and people[BLEND_LOOKALIKE].doors == ()
    assert not people[RESIDENT].disabled


def test_a_celebrity_lookalike_is_denied_by_name_never_granted(
    site: Recognition, engine: FaceEngine
) -> None:
    clock = FakeClock()
    pipe = door(engine, site, clock)
    out = [
        d
        for i in range(5)
        for d in visit(pipe, clock, frame_of(photo(CELEBRITY_LOOKALIKE, "val", i)))
    ]
    assert grants(out, RESIDENT) == 0 and not any(d.unlock for d in out)
    named = [d for d in out if d.person == CELEBRITY_LOOKALIKE]
    assert named and all((d.kind, d.code) == ("denied", ReasonCode.BLOCKED) for d in named)
    assert "blocked" in named[0].reason


def test_a_close_lookalike_gets_no_grant_and_the_resident_still_does(
    site: Recognition, engine: FaceEngine
) -> None:
    frames = lookalike_frames(engine, "val", 5)
    clock = FakeClock()
    before = door(engine, residents_only(site), clock)
    risk = [d for frame in frames for d in visit(before, clock, frame)]
    assert grants(risk, RESIDENT) >= 1, "the blend must be close enough to be taken for him"
    after = door(engine, site, clock)
    out = [d for frame in frames for d in visit(after, clock, frame)]
    assert grants(out, RESIDENT) == 0 and not any(d.unlock for d in out)
    assert any(
        (d.kind, d.person, d.code) == ("denied", BLEND_LOOKALIKE, ReasonCode.BLOCKED) for d in out
    )
    own = [visit(after, clock, frame_of(photo(RESIDENT, "val", i))) for i in range(5)]
    assert [grants(decisions, RESIDENT) for decisions in own] == [1] * 5


# --- the policy alone: tiny synthetic observations ------------------------------------------


def test_policy_denies_a_blocked_identity_at_face_and_card_doors(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")  # never read: the policy sees matches, not photos
    enrollment = tmp_path / "enrollment.yaml"
    enrollment.write_text(
        "people:\n  - {id: alice, images: a.jpg, doors: ['*']}\n"
        "blocked:\n  - {id: mallory, images: a.jpg}\n"
    )
    people = load_enrollment(enrollment)
    for mode in ("face", "card_and_face"):
        clock = FakeClock()
        rules = policy(people, clock, mode=mode)
        out = [d for frame in run(rules, clock, [[seen("mallory")]] * 3) for d in frame]
        assert [(d.kind, d.person, d.code, d.unlock) for d in out] == [
            ("denied", "mallory", ReasonCode.BLOCKED, False)
        ], mode
    noon = datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert policy(people, FakeClock()).permission_problem("alice", noon) is None
    assert policy(people, FakeClock()).permission_problem("mallory", noon) == (
        ReasonCode.BLOCKED, "blocked: never let in"
    )  # fmt: skip


def test_the_margin_rule_protects_the_resident_from_a_lookalike() -> None:
    """Probes within the threshold of the resident: alone in the gallery the resident would
    be matched; with the lookalike enrolled a probe is the lookalike (nearer to them) or
    nobody (too close to both: the margin rule)."""

    def at(degrees: float) -> np.ndarray:
        return np.array([np.cos(np.radians(degrees)), np.sin(np.radians(degrees)), 0], np.float32)

    resident, lookalike = at(0), at(37)  # L2 0.63 apart
    alone = Matcher(["resident"], resident[None, :])
    both = Matcher(["lookalike", "resident"], np.stack([lookalike, resident]))
    for probe, expected in ((at(33), "lookalike"), (at(18), None)):
        assert alone.identify(probe, 0.9, 0.1).identity == "resident"
        assert both.identify(probe, 0.9, 0.1).identity == expected


# --- enrollment.yaml ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blocked", "words"),
    [
        ("  - {id: alice, images: a.jpg}\n", "blocked[0].id: also a resident (people[0])"),
        ("  - {id: bob, images: a.jpg}\n  - {id: bob, images: a.jpg}\n", "duplicate blocked id"),
        ("  - {id: bob, images: a.jpg, doors: ['*']}\n", "blocked[0].doors: unknown key"),
        ("  - {id: bob}\n", "blocked[0].images"),
        ("  - {id: Bob!, images: a.jpg}\n", "blocked[0].id"),
    ],
)
def test_bad_blocked_entries_name_file_and_field(tmp_path: Path, blocked: str, words: str) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    path = tmp_path / "enrollment.yaml"
    path.write_text("people:\n  - {id: alice, images: a.jpg, doors: ['*']}\nblocked:\n" + blocked)
    with pytest.raises(ConfigError) as info:
        load_enrollment(path)
    assert str(path) in str(info.value) and words in str(info.value).replace(".0.", "[0].")


def test_an_empty_blocked_section_is_no_one(tmp_path: Path) -> None:
    path = tmp_path / "enrollment.yaml"
    path.write_text("people: []\nblocked:\n")
    assert load_enrollment(path).blocked == []


def test_a_bundle_carries_the_blocked_photos(tmp_path: Path) -> None:
    from facegate.fleet.bundle import build_bundle, read_bundle
    from facegate.keys import KeyType, PrivateKey

    admin = PrivateKey(KeyType.ED25519, bytes(range(32)))
    path = tmp_path / "enrollment.yaml"
    path.write_text(
        f"people:\n  - {{id: a, images: ['{photo(RESIDENT, 'train', 0)}'], doors: ['*']}}\n"
        f"blocked:\n  - {{id: b, images: ['{photo(CELEBRITY_LOOKALIKE, 'train', 0)}']}}\n"
    )
    bundle = read_bundle(build_bundle(path, admin, "hq", version=1), admin.public(), "hq")
    raw = yaml.safe_load(bundle.enrollment_text)
    [name] = raw["blocked"][0]["images"]
    assert name.startswith("photos/b/")
    assert bundle.contents[name] == photo(CELEBRITY_LOOKALIKE, "train", 0).read_bytes()
