"""Walk-up enrollment's capture: N sharp photos of the one face in view, in varied poses.

Pure: fed one processed frame at a time (its faces as the engine encoded them, the image,
the time) by the daemon's loop (facegate.control) or by `facegate enroll --capture
--source` (facegate.walkup); no I/O, no threads, no clock of its own.

A frame is kept when it holds exactly one usable face (the door's live quality gate: size,
sharpness, head turn), eyes open, a head pose at least MIN_POSE_STEP from every kept one,
at least MIN_GAP_S after the last kept one, and its photo (the face cropped from the frame
as a JPEG) passes the photo gate enrollment will apply. The session refuses, and nothing is
kept, when two usable faces are in view, when the face is an enrolled person other than
the one being captured (or, for an update, clearly not the enrolled person), or when the
time runs out.

With a liveness stage (`recognition.liveness` not off; the caller passes a fresh one per
session), the photos must come from one face track that the stage judges live before the
capture completes: a print or a screen held to the camera enrolls nobody. A track judged
an attack refuses the capture (`presentation_attack`); a new track (the face left view)
starts the photos again; enough photos on a track not yet judged live wait, asking the
person to move their head, until it is or the time runs out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import cv2
import numpy as np

from facegate.config.app import MAX_THRESHOLD
from facegate.matching import Matcher
from facegate.tracking import FaceTracker, TrackedFace
from facegate.vision.stages import LivenessStage
from facegate.vision.types import (
    Detection,
    FaceEncoding,
    FaceLandmarks,
    FloatArray,
    ImageArray,
    LivenessEvidence,
    RefusalReason,
)

MAX_IMAGES: Final = 20
MAX_TIMEOUT_S: Final = 120.0
#: Head pose is the nose tip's offset from the eyes' midpoint in eye distances (x: turn,
#: y: nod); 0.03 is about 2 degrees of turn: consecutive frames of a still head differ less.
MIN_POSE_STEP: Final = 0.03
#: Kept photos are at least this far apart in time, so 8 photos span >= 2 s of movement.
MIN_GAP_S: Final = 0.25
#: Eye opening / eye width (FaceMesh lids and corners): ~0.3 open, < 0.1 closed.
MIN_EYE_OPENING: Final = 0.15
#: Frames that must agree the face is someone else before the capture is refused.
OTHER_PERSON_FRAMES: Final = 2
#: Consecutive frames whose face is farther than MAX_THRESHOLD from the photos kept so far
#: (their mean) before the capture is refused: the person in view changed.
CHANGED_PERSON_FRAMES: Final = 3
#: The saved photo is a square of the face box times this, cut from the frame.
PHOTO_SCALE: Final = 2.0
PHOTO_JPEG_QUALITY: Final = 95
#: FaceMesh indices: (upper lid, lower lid, outer corner, inner corner) per eye.
_EYES: Final = ((159, 145, 33, 133), (386, 374, 263, 362))
_NOSE_TIP: Final = 1
#: What the person is asked, in turn, after each kept photo.
POSE_PROMPTS: Final = (
    "look straight at the camera",
    "turn your head a little to your left",
    "turn your head a little to your right",
    "lift your chin a little",
    "lower your chin a little",
)
#: Asked when the photos are in hand but the face has not been judged live yet.
MOVE_PROMPT: Final = "turn your head slowly left and right"


class Refusal(StrEnum):
    """Why a capture ended without photos (machine-readable; the message is for people)."""

    TWO_FACES = "two_faces"
    OTHER_PERSON = "other_person"  # the face is another enrolled (or blocked) person
    PERSON_CHANGED = "person_changed"  # someone else stepped in during the capture
    NOT_THEM = "not_them"  # updating a person, but the face is clearly not them
    TIMEOUT = "timeout"
    BUSY = "busy"  # another capture runs at this door
    UNKNOWN_DOOR = "unknown_door"
    BAD_REQUEST = "bad_request"
    STOPPED = "stopped"  # the daemon is shutting down
    PRESENTATION_ATTACK = "presentation_attack"  # a photo or a screen, not a live face


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """Collect `images` photos of `person` at `door` within `timeout_s` seconds."""

    door: str
    person: str
    images: int = 8
    timeout_s: float = 30.0

    @classmethod
    def parse(cls, raw: Mapping[str, object]) -> CaptureRequest:
        """From a control message; ValueError naming the field on anything wrong."""
        door, person = raw.get("door"), raw.get("person")
        images, timeout_s = raw.get("images", 8), raw.get("timeout_s", 30.0)
        if not isinstance(door, str) or not door:
            raise ValueError("door: a door id is required")
        if not isinstance(person, str) or not person:
            raise ValueError("person: a person id is required")
        if isinstance(images, bool) or not isinstance(images, int):
            raise ValueError("images: an integer is required")
        if not 1 <= images <= MAX_IMAGES:
            raise ValueError(f"images: 1..{MAX_IMAGES}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise ValueError("timeout_s: a number is required")
        if not (math.isfinite(timeout_s) and 1 <= timeout_s <= MAX_TIMEOUT_S):
            raise ValueError(f"timeout_s: 1..{MAX_TIMEOUT_S:g} seconds")
        return cls(door, person, images, float(timeout_s))


@dataclass(frozen=True, slots=True)
class Progress:
    have: int
    need: int
    prompt: str
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class Captured:
    """The photos (JPEG bytes), in the order they were taken."""

    photos: tuple[bytes, ...]
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class Refused:
    code: Refusal
    message: str


Outcome = Progress | Captured | Refused
#: Why a photo (JPEG) would not enroll under the photo gate, or None if it would.
PhotoCheck = Callable[[bytes], str | None]


@dataclass(frozen=True, slots=True)
class _Kept:
    pose: tuple[float, float]
    at: float
    jpeg: bytes
    embedding: FloatArray


@dataclass
class CaptureSession:
    """One capture. `feed` each processed frame; it returns what changed (progress, the
    photos when done, or the refusal), None when nothing did; after a final outcome the
    session is `finished`."""

    request: CaptureRequest
    matcher: Matcher
    threshold: float
    check_photo: PhotoCheck
    started: float
    finished: bool = False
    _kept: list[_Kept] = field(default_factory=list)
    _other: dict[str, int] = field(default_factory=dict)
    _not_them: int = 0
    _strangers: int = 0
    _prompt: str = ""
    #: The door's liveness stage, a fresh one for this session; None: liveness off.
    liveness: LivenessStage | None = None
    _tracker: FaceTracker = field(default_factory=FaceTracker)
    _track: int | None = None  # the face track the kept photos come from
    _live: bool = False  # that track has been judged live

    def feed(self, image: ImageArray, faces: Sequence[FaceEncoding], now: float) -> Outcome | None:
        if self.finished:
            return None
        if expired := self.expire(now):
            return expired
        elapsed = now - self.started
        evidence = self._observe(image, faces)
        usable = [i for i, f in enumerate(faces) if f.embedding is not None]
        if len(usable) > 1:
            return self._finish_refused(
                Refusal.TWO_FACES, f"{len(usable)} faces in view: one person at a time"
            )
        if not usable:
            return self._ask(_hint(faces), elapsed)
        face = faces[usable[0]]
        if refusal := self._identity_refusal(face):
            return self._finish_refused(*refusal)
        if evidence is not None:
            track, found = evidence[usable[0]]
            if found.live is False:
                return self._finish_refused(
                    Refusal.PRESENTATION_ATTACK,
                    f"a photo or a screen, not a live face ({found.reason}): nothing captured",
                )
            if track != self._track:
                self._track, self._kept = track, []  # a new face in view: start again
            self._live = found.live is True
        return self._consider(image, face, now, elapsed)

    def _observe(
        self, image: ImageArray, faces: Sequence[FaceEncoding]
    ) -> list[tuple[int, LivenessEvidence]] | None:
        """Every face's track and liveness evidence (None without a liveness stage)."""
        if self.liveness is None:
            return None
        tracks = self._tracker.update([TrackedFace(f.detection.box, None) for f in faces])
        found = [
            (track, self.liveness.observe(track, face, image))
            for face, track in zip(faces, tracks, strict=True)
        ]
        for track in self._tracker.ended:
            self.liveness.forget(track)
        return found

    def expire(self, now: float) -> Refused | None:
        """The refusal once the time is up; checked without frames too (a dead camera)."""
        if self.finished or now - self.started < self.request.timeout_s:
            return None
        return self._finish_refused(Refusal.TIMEOUT, self._timeout_message())

    def cancel(self) -> None:
        self.finished = True

    @property
    def have(self) -> int:
        return len(self._kept)

    # -- one usable face ----------------------------------------------------------------------

    def _identity_refusal(self, face: FaceEncoding) -> tuple[Refusal, str] | None:
        """Another enrolled person (in OTHER_PERSON_FRAMES frames), or not the person being
        updated: a capture must never add someone's face to another's photos."""
        assert face.embedding is not None
        person = self.request.person
        nearest = self.matcher.identify(face.embedding, self.threshold)
        if nearest.identity is not None and nearest.identity != person:
            self._other[nearest.identity] = seen = self._other.get(nearest.identity, 0) + 1
            if seen >= OTHER_PERSON_FRAMES:
                return Refusal.OTHER_PERSON, (
                    f"the face in view is already enrolled as {nearest.identity!r}"
                    f" (L2 {nearest.distance:.2f}): not captured as {person!r}"
                )
        if person in self.matcher:
            own = self.matcher.verify(face.embedding, person, MAX_THRESHOLD)
            self._not_them = 0 if own.accepted else self._not_them + 1
            if self._not_them >= OTHER_PERSON_FRAMES:
                return Refusal.NOT_THEM, (
                    f"the face in view is not {person!r} as enrolled (L2 {own.distance:.2f} >"
                    f" {MAX_THRESHOLD:g}); remove their old photos to replace them"
                )
        return None

    def _consider(
        self, image: ImageArray, face: FaceEncoding, now: float, elapsed: float
    ) -> Outcome | None:
        landmarks, embedding = face.landmarks, face.embedding
        assert landmarks is not None and embedding is not None  # a usable face has both
        if not self._same_person(embedding):
            if self._strangers >= CHANGED_PERSON_FRAMES:
                return self._finish_refused(
                    Refusal.PERSON_CHANGED, "the person in view changed: one person at a time"
                )
            return None
        if len(self._kept) >= self.request.images:
            return self._done(elapsed)  # the photos are in hand; waiting for a live verdict
        if eye_opening(landmarks) < MIN_EYE_OPENING:
            return self._ask("keep your eyes open", elapsed)
        current = pose(landmarks)
        if self._kept and now - self._kept[-1].at < MIN_GAP_S:
            return None
        if any(_distance(current, k.pose) < MIN_POSE_STEP for k in self._kept):
            return self._ask(self._pose_prompt(), elapsed)
        jpeg = face_photo(image, face.detection)
        if self.check_photo(jpeg) is not None:
            return None  # e.g. another face at the photo's edge: wait for a cleaner frame
        self._kept.append(_Kept(current, now, jpeg, embedding))
        if len(self._kept) >= self.request.images:
            return self._done(elapsed)
        self._prompt = self._pose_prompt()
        return Progress(self.have, self.request.images, self._prompt, elapsed)

    def _done(self, elapsed: float) -> Outcome | None:
        """The photos, once their track is judged live (always, without liveness)."""
        if self.liveness is not None and not self._live:
            return self._ask(MOVE_PROMPT, elapsed)
        self.finished = True
        return Captured(tuple(k.jpeg for k in self._kept), elapsed)

    def _same_person(self, embedding: FloatArray) -> bool:
        """Whether the face is the one whose photos are kept so far (counts the frames it
        is not, in a row)."""
        if not self._kept:
            return True
        mean = np.mean([k.embedding for k in self._kept], axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        if float(np.linalg.norm(embedding - mean)) <= MAX_THRESHOLD:
            self._strangers = 0
            return True
        self._strangers += 1
        return False

    def _pose_prompt(self) -> str:
        return POSE_PROMPTS[len(self._kept) % len(POSE_PROMPTS)]

    def _ask(self, prompt: str, elapsed: float) -> Progress | None:
        if prompt == self._prompt:
            return None
        self._prompt = prompt
        return Progress(self.have, self.request.images, prompt, elapsed)

    def _finish_refused(self, code: Refusal, message: str) -> Refused:
        self.finished = True
        self._kept.clear()
        return Refused(code, message)

    def _timeout_message(self) -> str:
        if self.liveness is not None and self.have >= self.request.images:
            return (
                f"timed out after {self.request.timeout_s:g} s: {self.have} photos, but the"
                " face was never judged live (a person who turns their head is; a photo or"
                " a screen is not)"
            )
        return (
            f"timed out after {self.request.timeout_s:g} s with {self.have} of"
            f" {self.request.images} photos (one face, close, sharp, eyes open, turning a"
            " little between photos)"
        )


def _hint(faces: Sequence[FaceEncoding]) -> str:
    """What to ask when no face is usable yet."""
    if not faces:
        return "step in front of the camera"
    refusal = faces[0].refusal
    if refusal is RefusalReason.TOO_SMALL:
        return "come closer to the camera"
    if refusal is RefusalReason.BLURRED:
        return "hold still"
    return "look at the camera"


def pose(landmarks: FaceLandmarks) -> tuple[float, float]:
    """The nose tip's offset from the eyes' midpoint, in eye distances, along the eye line
    (turn) and across it (nod): rotation- and scale-free, unlike pixels."""
    right, left = np.array(landmarks.right_eye), np.array(landmarks.left_eye)
    axis = left - right
    spacing = float(np.linalg.norm(axis))
    if not spacing > 0:
        return (math.nan, math.nan)
    along = axis / spacing
    across = np.array([-along[1], along[0]])
    nose = landmarks.mesh[_NOSE_TIP, :2] - (right + left) / 2
    return float(nose @ along / spacing), float(nose @ across / spacing)


def eye_opening(landmarks: FaceLandmarks) -> float:
    """The smaller of the two eyes' lid gap / eye width (NaN-safe: a broken mesh is 0)."""
    mesh = landmarks.mesh[:, :2]
    ratios = []
    for upper, lower, outer, inner in _EYES:
        width = float(np.linalg.norm(mesh[outer] - mesh[inner]))
        gap = float(np.linalg.norm(mesh[upper] - mesh[lower]))
        ratios.append(gap / width if width > 0 else 0.0)
    smaller = min(ratios)
    return smaller if math.isfinite(smaller) else 0.0


def _distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    found = math.hypot(a[0] - b[0], a[1] - b[1])
    return found if math.isfinite(found) else 0.0  # an unmeasurable pose adds no variety


def face_square(image: ImageArray, detection: Detection) -> ImageArray:
    """The face cut from the frame: a square of PHOTO_SCALE x its box, kept inside the
    frame (a view of `image`, RGB): a photo enrollment can use, without the hallway."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = detection.box
    side = round(min(max(x1 - x0, y1 - y0) * PHOTO_SCALE, width, height))
    left = min(max(round((x0 + x1 - side) / 2), 0), width - side)
    top = min(max(round((y0 + y1 - side) / 2), 0), height - side)
    return image[top : top + side, left : left + side]


def face_photo(image: ImageArray, detection: Detection) -> bytes:
    """`face_square` as a JPEG."""
    square = np.ascontiguousarray(face_square(image, detection)[:, :, ::-1])
    ok, encoded = cv2.imencode(".jpg", square, [cv2.IMWRITE_JPEG_QUALITY, PHOTO_JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(encoded.tobytes())
