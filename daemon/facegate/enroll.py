"""`facegate enroll`: enrollment.yaml + images -> the gallery, incrementally, all or nothing.

Images are keyed by the sha256 of their bytes: an image already in the gallery, embedded by
the same model, is reused without a model call, so an unchanged re-run only hashes files.
Every check runs before anything is written; on any error the gallery stays byte-identical.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from facegate.config import (
    BlockedPerson,
    Enrollee,
    EnrollmentConfig,
    FacegateConfig,
    Person,
    load_enrollment,
)
from facegate.errors import BadInputError, GalleryError, ModelError
from facegate.gallery import Gallery, GalleryEntry, PersonPolicy
from facegate.imageio import load_image
from facegate.vision.engine import EmbedderKind, FaceEngine, pipeline_fingerprint
from facegate.vision.quality import DEFAULT_PHOTO_GATE, Gate, PhotoGate
from facegate.vision.types import FaceEncoding, ImageArray

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    """What enrollment needs from the face engine: PhotoEncoder and LazyEngine judge images
    by a photo gate; a bare FaceEngine (tests) by its own gate."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def gate(self) -> Gate: ...

    def encode_one(self, image: ImageArray, source: str | Path) -> FaceEncoding: ...


def photo_gate(config: FacegateConfig) -> PhotoGate:
    """The gate enrollment photos must pass, from `recognition.photos`."""
    photos = config.recognition.photos
    return PhotoGate(photos.min_face_px, photos.min_detail_px, photos.max_yaw_deg)


class PhotoEncoder:
    """A loaded FaceEngine that encodes every image under a photo gate (the daemon's
    enrollment: its engine's own gate is the door's, for live frames)."""

    def __init__(self, engine: FaceEngine, gate: PhotoGate = DEFAULT_PHOTO_GATE) -> None:
        self._engine = engine
        self._gate = gate

    @property
    def fingerprint(self) -> str:
        return self._engine.fingerprint

    @property
    def gate(self) -> PhotoGate:
        return self._gate

    def encode_one(self, image: ImageArray, source: str | Path) -> FaceEncoding:
        return self._engine.encode_one(image, source, self._gate)


class LazyEngine:
    """A FaceEngine loaded on the first encode: an unchanged re-run never loads the models.
    Every image is judged by `gate`, a photo gate by default."""

    def __init__(
        self,
        models_dir: Path,
        embedder: EmbedderKind = "int8",
        threads: int = 2,
        gate: Gate | None = None,
    ) -> None:
        self._load_args = (Path(models_dir), embedder, threads)
        self._gate: Gate = DEFAULT_PHOTO_GATE if gate is None else gate
        try:
            self.fingerprint = pipeline_fingerprint(Path(models_dir), embedder)
        except OSError as exc:
            raise ModelError(
                f"{exc.filename or models_dir}: cannot read the model ({exc.strerror}): "
                "build it with `make models` or point --models at the folder"
            ) from None
        self._engine: FaceEngine | None = None

    @property
    def gate(self) -> Gate:
        return self._gate

    def encode_one(self, image: ImageArray, source: str | Path) -> FaceEncoding:
        if self._engine is None:
            self._engine = FaceEngine.load(*self._load_args)
        return self._engine.encode_one(image, source, self._gate)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An image left out under --skip-bad, and why."""

    image: str
    reason: str


@dataclass(frozen=True, slots=True)
class PersonReport:
    """One row of the summary table; mean quality is over the images used."""

    person_id: str
    name: str
    images_used: int
    images_reused: int
    rejected: tuple[Rejection, ...]
    mean_face_px: float | None
    mean_sharpness: float | None


@dataclass(frozen=True, slots=True)
class EnrollReport:
    """What `enroll` did (or, with check_only, would do); `written` is False for --check and
    when the gallery was already up to date (an unchanged run keeps file and backup)."""

    enrollment: str
    gallery: str
    people: tuple[PersonReport, ...]
    removed: tuple[str, ...]
    embedded: int
    reused: int
    changed: bool
    written: bool
    seconds: float
    warnings: tuple[str, ...] = field(default=())

    @property
    def enrolled(self) -> int:
        return sum(1 for p in self.people if p.images_used)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "enrolled": self.enrolled}


def enroll(
    enrollment_path: str | Path,
    gallery_path: str | Path,
    engine: Encoder,
    skip_bad: bool = False,
    check_only: bool = False,
    keep_previous: bool = False,
) -> EnrollReport:
    """Build the gallery from enrollment.yaml; raise BadInputError (nothing written) on any
    bad image unless `skip_bad`, which turns per-image problems into report rows.

    `keep_previous` (the daemon's mode, with `skip_bad`): a person still listed whose images
    all fail now keeps their previous embeddings, with a warning, so a photo folder that is
    unreadable for a moment (unmounted, wrong permissions) does not lock residents out."""
    started = time.perf_counter()
    enrollment_path, gallery_path = Path(enrollment_path), Path(gallery_path)
    config = load_enrollment(enrollment_path)
    if not check_only:
        _check_writable(gallery_path)  # before minutes of embedding, not after
    warnings: list[str] = []
    previous = _previous_gallery(gallery_path, warnings)
    measure = quality_measure(engine.gate)
    reusable = _reusable_entries(previous, engine.fingerprint, measure, warnings)
    run = _Run(config, engine, reusable, skip_bad, warnings, keep_previous)
    # Blocked people are enrolled like residents: matching must know their faces.
    for person in config.enrollees:
        run.add_person(person)
    enrolled = [p for p, r in zip(config.enrollees, run.reports, strict=True) if r.images_used]
    gallery = Gallery.build(
        fingerprint=engine.fingerprint,
        people=[_policy(p) for p in enrolled],
        entries=run.entries,
        schedules={name: s.model_dump(mode="json") for name, s in config.schedules.items()},
        enrollment_sha256=hashlib.sha256(enrollment_path.read_bytes()).hexdigest(),
        quality_measure=measure,
    )
    changed = previous is None or not gallery.same_content(previous)
    if changed and not check_only:
        _save(gallery, gallery_path)
    elif not changed:
        logger.info("gallery %s is up to date: not rewritten", gallery_path)
    old_ids = set(previous.person_ids) if previous else set()
    return EnrollReport(
        enrollment=str(enrollment_path),
        gallery=str(gallery_path),
        people=tuple(run.reports),
        removed=tuple(sorted(old_ids - set(gallery.person_ids))),
        embedded=run.embedded,
        reused=run.reused,
        changed=changed,
        written=changed and not check_only,
        seconds=time.perf_counter() - started,
        warnings=tuple(warnings),
    )


class _Run:
    """The state of one enrollment pass: entries so far, counters and report rows."""

    def __init__(
        self,
        config: EnrollmentConfig,
        engine: Encoder,
        reusable: Mapping[str, GalleryEntry],
        skip_bad: bool,
        warnings: list[str],
        keep_previous: bool = False,
    ) -> None:
        self.keep_previous = keep_previous
        self.config = config
        self.engine = engine
        self.reusable = reusable
        self.skip_bad = skip_bad
        self.warnings = warnings
        self.entries: list[GalleryEntry] = []
        self.reports: list[PersonReport] = []
        self.owner: dict[str, str] = {}  # image sha256 -> person id: one image, one person
        self.embedded = 0
        self.reused = 0

    def add_person(self, person: Enrollee) -> None:
        section, index = self.config.location(person)
        field_name = f"{section}[{index}].images"
        used: list[GalleryEntry] = []
        rejected: list[Rejection] = []
        reused_before = self.reused
        for path in self._images(person):
            try:
                digest = _file_sha256(path, field_name)
                if not self._claim(digest, person.id, path, field_name):
                    continue
                used.append(self._entry(person.id, path, digest, field_name))
            except _SkippableImageError as exc:
                if not self.skip_bad:
                    raise exc.error from None
                self._warn(f"skipped {path}: {exc.error.detail}")
                rejected.append(Rejection(str(path), exc.error.detail))
        if not used and self.keep_previous:
            used = [e for e in self.reusable.values() if e.person_id == person.id]
            if used:
                self._warn(f"{person.id}: no usable image now; keeping {len(used)} previous")
        if not used:
            problem = "no usable image: not enrolled"
            if not self.skip_bad:
                raise BadInputError(self.config.source or "enrollment", problem, field=field_name)
            self._warn(f"{person.id}: {problem}")
        self.entries.extend(used)
        self.reports.append(_person_report(person, used, rejected, self.reused - reused_before))

    def _images(self, person: Enrollee) -> list[Path]:
        try:
            return self.config.images_for(person)
        except BadInputError as exc:
            if not self.keep_previous:
                raise
            self._warn(str(exc))  # e.g. an unmounted folder: keep_previous covers the person
            return []

    def _claim(self, digest: str, person_id: str, path: Path, field_name: str) -> bool:
        """Record who an image belongs to; False for a repeat of this person's own image.
        One image for two people is a mistake in the file, never skipped."""
        owner = self.owner.get(digest)
        if owner is None:
            self.owner[digest] = person_id
            return True
        if owner != person_id:
            raise BadInputError(
                path, f"the same image is already enrolled for {owner!r}", field=field_name
            )
        logger.debug("%s: duplicate of an image already listed for %s", path, person_id)
        return False

    def _entry(self, person_id: str, path: Path, digest: str, field_name: str) -> GalleryEntry:
        """The gallery row for one image: reused if this model already embedded its bytes."""
        old = self.reusable.get(digest)
        if old is not None and _passes(old, self.engine.gate):
            self.reused += 1
            return replace(old, person_id=person_id, source=str(path))
        face = self._encode(path, field_name)
        self.embedded += 1
        assert face.embedding is not None  # encode_one returns only usable faces
        return GalleryEntry(
            person_id=person_id,
            source=str(path),
            image_sha256=digest,
            face_px=face.quality.face_px,
            sharpness=face.quality.sharpness,
            yaw_deg=face.quality.yaw_deg,
            embedded_at=time.time(),
            embedding=face.embedding,
        )

    def _encode(self, path: Path, field_name: str) -> FaceEncoding:
        try:
            return self.engine.encode_one(load_image(path), source=path)
        except BadInputError as exc:
            # Same error class (NoFaceError, ManyFacesError, ...), now naming the YAML field.
            raise _SkippableImageError(type(exc)(path, exc.detail, field=field_name)) from None

    def _warn(self, message: str) -> None:
        logger.warning("%s", message)
        self.warnings.append(message)


def _check_writable(gallery_path: Path) -> None:
    folder = gallery_path.parent
    if not folder.is_dir():
        raise BadInputError(gallery_path, f"folder {folder} does not exist", field="gallery")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInputError(gallery_path, f"folder {folder} is not writable", field="gallery")


def _save(gallery: Gallery, path: Path) -> None:
    try:
        gallery.save(path)
    except OSError as exc:
        raise GalleryError(
            f"{path}: cannot write the gallery ({exc.strerror}); the previous one is unchanged"
        ) from None


class _SkippableImageError(Exception):
    """Carries a per-image BadInputError that --skip-bad may turn into a warning."""

    def __init__(self, error: BadInputError) -> None:
        super().__init__(str(error))
        self.error = error


def _file_sha256(path: Path, field_name: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        error = BadInputError(path, f"cannot read: {exc.strerror}", field=field_name)
        raise _SkippableImageError(error) from None
    return hashlib.sha256(data).hexdigest()


def _previous_gallery(path: Path, warnings: list[str]) -> Gallery | None:
    """The gallery being replaced, if readable; a broken one is rebuilt from the images."""
    if not path.exists():
        return None
    try:
        return Gallery.load(path, expected_fingerprint=None)
    except GalleryError as exc:
        message = f"previous gallery unusable, rebuilding from the images: {exc}"
        logger.warning("%s", message)
        warnings.append(message)
        return None


def quality_measure(gate: Gate) -> str:
    """Names how a gate measures sharpness; stored in the gallery beside the entries."""
    return "native-1" if gate.native else "aligned-1"


def _reusable_entries(
    previous: Gallery | None, fingerprint: str, measure: str, warnings: list[str]
) -> dict[str, GalleryEntry]:
    """Previous embeddings by image sha256, if the same model produced them and their
    sharpness was measured the same way (the stored numbers are what the gate re-checks)."""
    if previous is None:
        return {}
    if previous.fingerprint != fingerprint:
        message = "previous gallery was built with another model: re-embedding every image"
        logger.info("%s", message)
        warnings.append(message)
        return {}
    entries = {e.image_sha256: e for e in previous.entries()}
    if previous.quality_measure != measure:
        # Once, after an upgrade: photos are now judged at their native resolution. An
        # unknown (NaN) sharpness fails every gate, so each image is measured again; the
        # embeddings stay valid for keep_previous.
        message = "previous gallery measured photo quality another way: re-checking every image"
        logger.info("%s", message)
        warnings.append(message)
        return {key: replace(e, sharpness=math.nan) for key, e in entries.items()}
    return entries


def _passes(entry: GalleryEntry, gate: Gate) -> bool:
    """Whether a stored embedding meets today's quality gate; if not, the image is encoded
    again so that a stricter gate rejects it exactly as it would a new image."""
    return not gate.problem(entry.face_px, entry.sharpness, entry.yaw_deg)


def _policy(person: Enrollee) -> PersonPolicy:
    """The policy snapshot stored in the gallery; validity as exact aware instants. A
    blocked person has no door and is disabled: nothing reading the gallery lets them in."""
    if isinstance(person, BlockedPerson):
        return PersonPolicy(id=person.id, name=person.name, doors=(), disabled=True)
    assert isinstance(person, Person)
    starts, ends = person.starts_at, person.ends_at
    return PersonPolicy(
        id=person.id,
        name=person.name,
        doors=tuple(person.doors),
        schedule=person.schedule,
        valid_from=None if starts is None else starts.isoformat(),
        valid_until=None if ends is None else ends.isoformat(),
        disabled=person.disabled,
    )


def _person_report(
    person: Enrollee, used: Sequence[GalleryEntry], rejected: Sequence[Rejection], reused: int
) -> PersonReport:
    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return PersonReport(
        person_id=person.id,
        name=person.name,
        images_used=len(used),
        images_reused=reused,
        rejected=tuple(rejected),
        mean_face_px=mean([e.face_px for e in used]),
        mean_sharpness=mean([e.sharpness for e in used]),
    )
