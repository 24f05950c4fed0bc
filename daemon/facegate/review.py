"""Review of unknown faces (opt-in, `review:`): the best photo of each stranger's visit,
kept on this unit so the owner can name them (`facegate review assign`) or delete them.

The daemon's side is a pipeline consumer (`UnknownFaceCollector`), fed each processed frame
by the loop: per face track it keeps the best frame's face (quality-gated: only faces the
live gate embedded) while the track matches no one, and when the track has been gone for
TRACK_GONE_S it hands the visit to a writer thread, which writes `<id>.jpg` (the face cut
from the frame) and `<id>.json` (door, time, quality, the visit's mean embedding), both
0600, in a 0700 folder. A track is never kept if it was ever matched to someone or if any
decision about it was anything but `unknown` (a resident, a blocked person, a detected
presentation attack), or if it lasted fewer than MIN_FRAMES usable frames (a glimpse).
The writer deletes faces past `retention_days` and beyond `max_faces` (oldest first) at
start, then every PRUNE_EVERY_S or PRUNE_EVERY_FACES faces.

`facegate review` reads the folder: faces are grouped by identity (`group_faces`: the same
stranger seen on several days is one group) so each group is named or deleted at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np

from facegate.capture import face_square
from facegate.config import FacegateConfig
from facegate.decisions import ReasonCode
from facegate.errors import BadInputError
from facegate.pipeline import Recognition, StepResult
from facegate.vision.types import FaceEncoding, FloatArray, ImageArray, l2_normalize

logger = logging.getLogger(__name__)

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
#: A track unseen this long is a visit that ended.
TRACK_GONE_S: Final = 2.0
#: Fewer usable frames are a glimpse (someone walking past), not a visit.
MIN_FRAMES: Final = 3
#: A face joins the group whose template is nearest if within this L2. Measured on 51
#: door-camera views of the 5-celebrity people (photos of years apart, in two orders): 1.0
#: gives 5-6 groups, none mixing two people; 0.9 splits them into 9; mixing starts beyond
#: 1.1 (where the door's own threshold ends). Strict on purpose: naming a group enrolls all
#: of it, so two strangers merged would be worse than one stranger split in two groups.
GROUP_L2: Final = 1.0
PRUNE_EVERY_S: Final = 3600.0
PRUNE_EVERY_FACES: Final = 100
DAY_S: Final = 86400.0
#: Visits waiting for the writer; more are dropped (logged): the loop never waits.
QUEUE_SIZE: Final = 64


@dataclass(frozen=True, slots=True)
class ReviewFace:
    """One kept visit: `id` names its `<id>.jpg` and `<id>.json`."""

    id: str
    door: str
    ts: float
    face_px: float
    sharpness: float
    yaw_deg: float
    frames: int
    embedding: FloatArray = field(compare=False)  # the visit's mean, unit length
    photo: Path = field(compare=False)


@dataclass(frozen=True, slots=True)
class Group:
    """Faces of one (unknown) person; `id` is the id of its oldest face, so it stays the
    same as new faces join."""

    id: str
    faces: tuple[ReviewFace, ...]

    @property
    def first_ts(self) -> float:
        return self.faces[0].ts

    @property
    def last_ts(self) -> float:
        return self.faces[-1].ts

    @property
    def days(self) -> int:
        """On how many calendar days (local time) this person was seen."""
        return len({datetime.fromtimestamp(f.ts).date() for f in self.faces})

    @property
    def doors(self) -> tuple[str, ...]:
        return tuple(sorted({f.door for f in self.faces}))


class ReviewStore:
    """The folder of kept faces. Thread-safe for one writer and any number of readers (each
    face is two files, the photo written first: a face without its .json is not listed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add(
        self, door: str, ts: float, jpeg: bytes, embedding: FloatArray, quality: FaceEncoding,
        frames: int,
    ) -> ReviewFace:  # fmt: skip
        """Write one visit's photo and record; both 0600, the record last."""
        self.folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        face_id = f"{datetime.fromtimestamp(ts).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        photo = self.folder / f"{face_id}.jpg"
        _write_private(photo, jpeg)
        record = {
            "id": face_id,
            "door": door,
            "ts": round(ts, 3),
            "face_px": round(quality.quality.face_px, 1),
            "sharpness": round(quality.quality.sharpness, 5),
            "yaw_deg": round(quality.quality.yaw_deg, 1),
            "frames": frames,
            "embedding": [round(float(v), 6) for v in embedding],
        }
        _write_private(self.folder / f"{face_id}.json", json.dumps(record).encode())
        return _face(record, photo)

    def faces(self) -> list[ReviewFace]:
        """Every kept face, oldest first; an unreadable record is skipped (logged)."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                found.append(_face(record, path.with_suffix(".jpg")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("review: %s unreadable, skipped: %s", path, exc)
        return sorted(found, key=lambda f: (f.ts, f.id))

    def delete(self, faces: Iterable[ReviewFace]) -> int:
        """Remove faces (record first, so a half-deleted face is never listed)."""
        count = 0
        for face in faces:
            for path in (self.folder / f"{face.id}.json", face.photo):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            count += 1
        return count

    def prune(self, now: float, retention_days: float, max_faces: int) -> int:
        """Delete faces older than `retention_days`, then the oldest beyond `max_faces`."""
        faces = self.faces()
        old = [f for f in faces if f.ts < now - retention_days * DAY_S]
        kept = [f for f in faces if f.ts >= now - retention_days * DAY_S]  # oldest first
        excess = kept[: max(0, len(kept) - max_faces)]
        removed = self.delete([*old, *excess])
        self._remove_orphans()
        return removed

    def _remove_orphans(self) -> None:
        """Photos without a record (a crash between the two writes) and temp files."""
        for path in [*self.folder.glob("*.jpg"), *self.folder.glob(".*.tmp")]:
            if path.suffix == ".jpg" and path.with_suffix(".json").exists():
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def group_faces(faces: Sequence[ReviewFace], threshold: float = GROUP_L2) -> list[Group]:
    """Faces grouped by identity, oldest first: each face joins the group whose template
    (the normalised mean of its faces' embeddings) is nearest, if within `threshold`,
    else starts one. Conservative on purpose: a stranger split in two groups costs a second
    `assign`; two strangers merged would enroll one under the other's name."""
    members: list[list[ReviewFace]] = []
    sums: list[FloatArray] = []
    for face in sorted(faces, key=lambda f: (f.ts, f.id)):
        if sums:
            templates = l2_normalize(np.stack(sums))
            distances = np.linalg.norm(templates - face.embedding, axis=1)
            nearest = int(np.argmin(distances))
            if distances[nearest] <= threshold:
                members[nearest].append(face)
                sums[nearest] = sums[nearest] + face.embedding
                continue
        members.append([face])
        sums.append(face.embedding.astype(np.float32).copy())
    return [Group(m[0].id.rpartition("-")[2], tuple(m)) for m in members]


# --- the daemon's side ----------------------------------------------------------------------


@dataclass
class _Visit:
    """One face track seen at a door, while it lasts."""

    first_seen: float
    last_seen: float
    frames: int = 0
    matched: bool = False  # matched someone, or decided about as anything but unknown
    best_score: float = -1.0
    best_photo: ImageArray | None = None  # BGR, cut from the frame: encoded at the end
    best_face: FaceEncoding | None = None
    best_ts: float = 0.0
    embeddings: list[FloatArray] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Finished:
    door: str
    ts: float
    photo: ImageArray
    face: FaceEncoding
    embedding: FloatArray
    frames: int


class UnknownFaceCollector:
    """Fed every processed frame by the loop; keeps one best photo per stranger's visit."""

    def __init__(
        self,
        store: ReviewStore,
        retention_days: float,
        max_faces: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wall = wall
        self._visits: dict[tuple[str, int], _Visit] = {}
        self._writer = _Writer(store, retention_days, max_faces, wall)

    def start(self) -> None:
        self._writer.start()

    def frame(self, door: str, image: ImageArray, result: StepResult, state: Recognition) -> None:
        """One processed frame of `door`."""
        now = self._clock()
        rec = state.config.recognition
        decided = {d.track_id for d in result.decisions if d.code is not ReasonCode.UNKNOWN_FACE}
        for face, track in zip(result.faces, result.track_ids, strict=True):
            if face.embedding is None:
                continue  # refused by the live gate: never kept
            visit = self._visits.setdefault((door, track), _Visit(now, now))
            visit.last_seen = now
            if (
                track in decided
                or state.matcher.identify(face.embedding, rec.threshold, rec.margin).accepted
            ):
                visit.matched = True
            if not visit.matched:
                self._consider(visit, image, face)
        self._finish(now - TRACK_GONE_S, door)

    def close(self) -> None:
        """Hand over every visit in progress, then stop the writer (it drains first)."""
        self._finish(math.inf, None)
        self._writer.close()

    def _consider(self, visit: _Visit, image: ImageArray, face: FaceEncoding) -> None:
        assert face.embedding is not None
        visit.frames += 1
        visit.embeddings.append(face.embedding)
        score = _score(face)
        if score > visit.best_score:
            visit.best_score = score
            # A copy of the face's square only (not the frame), BGR for the JPEG encoder.
            visit.best_photo = _square_bgr(image, face)
            visit.best_face = face
            visit.best_ts = self._wall()

    def _finish(self, gone_before: float, door: str | None) -> None:
        for key, visit in list(self._visits.items()):
            if visit.last_seen >= gone_before:
                continue
            del self._visits[key]
            if visit.matched or visit.frames < MIN_FRAMES or visit.best_photo is None:
                continue
            assert visit.best_face is not None
            mean = l2_normalize(np.mean(visit.embeddings, axis=0).astype(np.float32))
            self._writer.put(
                _Finished(key[0], visit.best_ts, visit.best_photo, visit.best_face, mean,
                          visit.frames)
            )  # fmt: skip


def _score(face: FaceEncoding) -> float:
    """Bigger, sharper, more frontal is better."""
    quality = face.quality
    turn = (
        math.cos(math.radians(min(abs(quality.yaw_deg), 89.0)))
        if math.isfinite(quality.yaw_deg)
        else 0.0
    )
    return min(quality.face_px, 400.0) * min(quality.sharpness, 0.05) * turn


def _square_bgr(image: ImageArray, face: FaceEncoding) -> ImageArray:
    """A copy of the cut-out walk-up enrollment keeps too (BGR, for the JPEG encoder)."""
    return np.ascontiguousarray(face_square(image, face.detection)[:, :, ::-1])


class _Writer:
    """Writes finished visits and prunes, on its own thread: the loop never touches disk."""

    def __init__(
        self, store: ReviewStore, retention_days: float, max_faces: int, wall: Callable[[], float]
    ) -> None:
        self._store = store
        self._retention_days = retention_days
        self._max_faces = max_faces
        self._wall = wall
        self._queue: queue.Queue[_Finished | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._work, name="review", daemon=True)
        self._next_prune = 0.0
        self._since_prune = 0

    def start(self) -> None:
        self._thread.start()

    def put(self, finished: _Finished) -> None:
        try:
            self._queue.put_nowait(finished)
        except queue.Full:
            logger.error("review: writer behind, a visit at %s not kept", finished.door)

    def close(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def _work(self) -> None:
        self._prune()
        while True:
            finished = self._queue.get()
            if finished is None:
                return
            try:
                self._write(finished)
            except Exception:  # one bad write never ends the writer
                logger.exception("review: a face at %s not kept", finished.door)

    def _write(self, finished: _Finished) -> None:
        ok, jpeg = cv2.imencode(".jpg", finished.photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise ValueError("JPEG encoding failed")
        face = self._store.add(
            finished.door, finished.ts, jpeg.tobytes(), finished.embedding, finished.face,
            finished.frames,
        )  # fmt: skip
        logger.info("review: unknown face kept at %s (%s)", finished.door, face.id)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY_FACES or self._wall() >= self._next_prune:
            self._prune()

    def _prune(self) -> None:
        try:
            removed = self._store.prune(self._wall(), self._retention_days, self._max_faces)
        except OSError as exc:
            logger.error("review: pruning %s failed: %s", self._store.folder, exc)
            return
        if removed:
            logger.info("review: %d face(s) past retention or max_faces deleted", removed)
        self._since_prune = 0
        self._next_prune = self._wall() + PRUNE_EVERY_S


def start_review(config: FacegateConfig) -> UnknownFaceCollector | None:
    """The started collector when `review.enabled`, else None."""
    if not config.review.enabled:
        return None
    review = config.review
    collector = UnknownFaceCollector(
        ReviewStore(config.review_dir), review.retention_days, review.max_faces
    )
    collector.start()
    return collector


def _face(record: dict[str, Any], photo: Path) -> ReviewFace:
    embedding = np.asarray(record["embedding"], dtype=np.float32)
    if embedding.ndim != 1 or not np.all(np.isfinite(embedding)):
        raise ValueError("bad embedding")
    return ReviewFace(
        id=str(record["id"]),
        door=str(record["door"]),
        ts=float(record["ts"]),
        face_px=float(record["face_px"]),
        sharpness=float(record["sharpness"]),
        yaw_deg=float(record["yaw_deg"]),
        frames=int(record["frames"]),
        embedding=l2_normalize(embedding),
        photo=photo,
    )


def _write_private(path: Path, data: bytes) -> None:
    """Whole or not at all, 0600 from the start."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), FILE_MODE)  # an existing temp may have had another
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# --- `facegate review` ------------------------------------------------------------------------


def find_group(groups: Sequence[Group], group_id: str, store: ReviewStore) -> Group:
    """The group `group_id` (as `facegate review` listed it), or BadInputError."""
    for group in groups:
        if group.id == group_id:
            return group
    known = ", ".join(g.id for g in groups) or "none"
    raise BadInputError(store.folder, f"no group {group_id!r} (groups now: {known})")


def assign(
    config: FacegateConfig,
    config_path: Path,
    group: Group,
    person: str,
    name: str | None,
    door: str | None,
) -> tuple[int, bool, tuple[str, ...]]:
    """Make a group's faces photos of `person` (enrollment.yaml updated, re-enrolled by
    the running daemon or here), then delete them from review. (photos, added, warnings)."""
    from facegate.walkup import add_photos, check_enrollment

    if door is not None and door not in config.door_ids:
        raise BadInputError(
            "--door", f"unknown door {door!r} (doors: {', '.join(config.door_ids)})"
        )
    edit = check_enrollment(config, config_path, person)
    photos = [face.photo.read_bytes() for face in group.faces]
    by_daemon = config.control.enabled and config.control.socket.exists()
    added = add_photos(config, edit, photos, person, name, door, "review", by_daemon=by_daemon)
    ReviewStore(config.review_dir).delete(group.faces)
    return len(added.photos), added.added, added.warnings
