"""`facegate enroll --capture ID --door DOOR`: walk-up enrollment, the command's side.

1. Check everything first: the door exists, the id is valid and not blocked, enrollment.yaml
   loads (and round-trips); nothing is written before the photos are in hand.
2. Get the photos: from the running daemon over its control socket (it owns the camera),
   or with `--source` from a camera opened here (no daemon needed). See facegate.capture.
3. Write: the photos under `<enrollment folder>/photos/<id>/`, then enrollment.yaml with
   the person added (or their photos folder added to their images), through a round-trip
   YAML editor that keeps comments and order, atomically, keeping the file's owner and mode.
4. Re-enroll: the daemon reloads and says whether the person is now enrolled; without a
   daemon `enroll` runs here, strict. If that fails, enrollment.yaml and the photos are
   put back as they were.

A refusal (two faces, someone else's face, timeout) is a WalkupRefused: nothing written.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from facegate.capture import Captured, CaptureRequest, Progress, Refused
from facegate.config import FacegateConfig, load_config, load_enrollment
from facegate.control import PERSON_ID, ControlClient
from facegate.errors import BadInputError, FacegateError
from facegate.vision.stages import LivenessStage

#: Where captured photos go, relative to enrollment.yaml's folder: photos/<id>/.
PHOTOS_DIR: Final = "photos"
DIR_MODE: Final = 0o750
PHOTO_MODE: Final = 0o640
#: How long the command waits for any reply of the daemon beyond the capture's own time.
REPLY_SLACK_S: Final = 30.0
#: A reload re-embeds new photos: seconds on a Pi.
RELOAD_WAIT_S: Final = 300.0

OnProgress = Callable[[Progress], object]


class WalkupRefused(FacegateError):
    """The capture was refused (two faces, another person, timeout): nothing written."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class WalkupRequest:
    person: str
    door: str
    name: str | None = None
    images: int = 8
    timeout_s: float = 30.0
    source: str | None = None  # a camera here instead of the daemon's
    fps: float | None = None  # of `source`; default: the door's


@dataclass(frozen=True, slots=True)
class WalkupReport:
    person: str
    photos: tuple[Path, ...]
    added: bool  # a new person (else: photos added to an enrolled one)
    capture_s: float
    warnings: tuple[str, ...] = ()  # other people's photos skipped while re-enrolling


def walkup(config_path: Path, request: WalkupRequest, on_progress: OnProgress) -> WalkupReport:
    """Capture, write, re-enroll (see the module docstring); WalkupRefused or
    BadInputError (nothing written) on any problem before the writes."""
    config = load_config(config_path)
    if request.door not in config.door_ids:
        doors = ", ".join(config.door_ids)
        raise BadInputError("--door", f"unknown door {request.door!r} (doors in {config_path}:"
                            f" {doors})")  # fmt: skip
    edit = check_enrollment(config, config_path, request.person)
    started = time.monotonic()
    if request.source is None:
        photos = _capture_by_daemon(config, request, on_progress)
    else:
        photos = _capture_here(config, request, on_progress)
    capture_s = time.monotonic() - started
    added = add_photos(
        config, edit, photos, request.person, request.name, request.door, "walkup",
        by_daemon=request.source is None,
    )  # fmt: skip
    return WalkupReport(request.person, added.photos, added.added, capture_s, added.warnings)


@dataclass(frozen=True, slots=True)
class Added:
    photos: tuple[Path, ...]
    added: bool
    warnings: tuple[str, ...]


def add_photos(
    config: FacegateConfig,
    edit: EnrollmentEdit,
    photos: list[bytes],
    person: str,
    name: str | None,
    door: str | None,
    prefix: str,
    *,
    by_daemon: bool,
) -> Added:
    """Write the photos and enrollment.yaml (`edit`, read before), then re-enroll: by the
    daemon's reload, or here. A failed re-enroll puts both back."""
    written = edit.apply(photos, person, name, door, prefix)
    try:
        warnings = _re_enroll(config, person, by_daemon)
    except BaseException:
        written.undo()
        if by_daemon:
            _reload_quietly(config, person)  # back to the restored file
        raise
    return Added(written.photos, written.added, warnings)


# --- 1. checks --------------------------------------------------------------------------------


def check_enrollment(config: FacegateConfig, config_path: Path, person: str) -> EnrollmentEdit:
    """Whether photos may be added for `person` (a valid id, not blocked, not a fleet
    device, enrollment.yaml loads and round-trips); the file as read now."""
    if not PERSON_ID.fullmatch(person):
        raise BadInputError(person, "a person id is [a-z0-9_-], 1..64 characters")
    if config.fleet is not None:
        raise BadInputError(
            config_path,
            "this device takes its enrollment from the site's signed bundles; enroll on the"
            " admin's machine and publish a bundle",
            field="fleet",
        )
    enrollment = load_enrollment(config.enrollment)  # ConfigError naming file and line
    if enrollment.is_blocked(person):
        raise BadInputError(
            config.enrollment, f"{person!r} is listed under blocked", field="blocked"
        )
    return EnrollmentEdit.read(config.enrollment, enrollment.person(person) is not None)


# --- 2. photos ----------------------------------------------------------------------------------


def _capture_by_daemon(
    config: FacegateConfig, request: WalkupRequest, on_progress: OnProgress
) -> list[bytes]:
    client = ControlClient(config.control.socket, request.timeout_s + REPLY_SLACK_S)
    message = {
        "op": "capture",
        "door": request.door,
        "person": request.person,
        "images": request.images,
        "timeout_s": request.timeout_s,
    }
    for reply in client.request(message):
        kind = reply.get("type")
        if kind == "progress":
            on_progress(Progress(reply["have"], reply["need"], reply["prompt"], reply["elapsed_s"]))
        elif kind == "captured":
            return [base64.b64decode(photo) for photo in reply["photos"]]
        elif kind == "refused":
            raise WalkupRefused(str(reply.get("code")), str(reply.get("message")))
        elif kind == "error":
            raise BadInputError(config.control.socket, str(reply.get("message")))
    raise BadInputError(config.control.socket, "the daemon ended the capture without photos")


def _capture_here(
    config: FacegateConfig, request: WalkupRequest, on_progress: OnProgress
) -> list[bytes]:
    """The same capture without a daemon: the camera `request.source`, this process's
    engine, the gallery as it is on disk (to refuse someone already enrolled)."""
    from facegate.camera import source_from_config
    from facegate.capture import CaptureSession
    from facegate.config import CameraConfig, CameraSource
    from facegate.control import photo_problem
    from facegate.enroll import photo_gate
    from facegate.service import quality_gate
    from facegate.vision.engine import FaceEngine

    assert request.source is not None
    try:
        source_value = CameraSource.parse(request.source)
    except ValueError as exc:
        raise BadInputError("--source", str(exc)) from None
    fps = request.fps or config.camera(request.door).fps
    camera = CameraConfig(door=request.door, source=source_value, fps=fps)
    m = config.models
    engine = FaceEngine.load(
        m.dir, m.embedder, m.threads, gate=quality_gate(config), full_range_fallback=False
    )
    gate = photo_gate(config)
    session = CaptureSession(
        CaptureRequest(request.door, request.person, request.images, request.timeout_s),
        _gallery_matcher(config, engine.fingerprint, engine.embedding_dim),
        config.recognition.threshold,
        lambda jpeg: photo_problem(engine, gate, jpeg),
        time.monotonic(),
        # A print held to the camera must not enroll anyone: the photos need a live track.
        liveness=capture_liveness(config, request.door),
    )
    with source_from_config(camera) as frames:
        while True:
            frame = frames.read()
            if frame is None:
                raise WalkupRefused("source_ended", f"the camera source {request.source} ended")
            outcome = session.feed(frame.image, engine.encode(frame.image), time.monotonic())
            if isinstance(outcome, Progress):
                on_progress(outcome)
            elif isinstance(outcome, Captured):
                return list(outcome.photos)
            elif isinstance(outcome, Refused):
                raise WalkupRefused(str(outcome.code), outcome.message)


def capture_liveness(config: FacegateConfig, door: str) -> LivenessStage | None:
    """A fresh liveness stage for one walk-up capture at `door` (its camera's field of
    view), or None with `recognition.liveness: off`. The daemon's capture needs the same."""
    if config.recognition.liveness == "off":
        return None
    from facegate.vision.liveness import PassiveLiveness

    return PassiveLiveness(hfov_deg=config.camera(door).hfov_deg)


def _gallery_matcher(config: FacegateConfig, fingerprint: str, dim: int) -> Any:
    """Whom the gallery enrolls now (none when there is no gallery yet)."""
    import numpy as np

    from facegate.gallery import Gallery
    from facegate.matching import Matcher

    if not config.gallery.exists():
        return Matcher([], np.zeros((0, dim), dtype=np.float32))
    return Gallery.load(config.gallery, fingerprint).matcher()


# --- 3. writes ----------------------------------------------------------------------------------


@dataclass
class Written:
    """What `EnrollmentEdit.apply` changed, and how to put it back."""

    enrollment: Path
    before: bytes
    photos: tuple[Path, ...]
    made_dirs: tuple[Path, ...]
    added: bool

    def undo(self) -> None:
        _replace_file(self.enrollment, self.before)
        for photo in self.photos:
            with contextlib.suppress(FileNotFoundError):
                photo.unlink()
        for folder in reversed(self.made_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()


@dataclass(frozen=True)
class EnrollmentEdit:
    """enrollment.yaml as read before the capture: the bytes it must still hold when the
    photos are in, and its owner and mode for the files written beside it."""

    path: Path
    text: bytes
    enrolled: bool  # the person is already listed under people

    @classmethod
    def read(cls, path: Path, enrolled: bool) -> EnrollmentEdit:
        text = path.read_bytes()
        _edited(text.decode("utf-8"), path, "probe", None, "*", "probe/")  # it round-trips
        return cls(path, text, enrolled)

    def apply(
        self, photos: list[bytes], person: str, name: str | None, door: str | None, prefix: str
    ) -> Written:
        """Write the photos (`<prefix>-<time>-<n>.jpg`), then enrollment.yaml; on any
        failure remove what was written. A new person gets `doors: [door]`."""
        if self.path.read_bytes() != self.text:
            raise BadInputError(self.path, "changed meanwhile; run the command again")
        folder = self.path.parent / PHOTOS_DIR / person
        entry = f"{PHOTOS_DIR}/{person}/"
        new_text, added = _edited(self.text.decode("utf-8"), self.path, person, name, door, entry)
        owner = os.stat(self.path)
        made = _make_dirs(folder, owner)
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        written: list[Path] = []
        try:
            for number, jpeg in enumerate(photos):
                path = folder / f"{prefix}-{stamp}-{number:02d}.jpg"
                _replace_file(path, jpeg, like=owner, mode=PHOTO_MODE)
                written.append(path)
            _check_loads(new_text, self.path)
            _replace_file(self.path, new_text.encode("utf-8"))
        except BaseException:
            Written(self.path, self.text, tuple(written), tuple(made), added).undo()
            raise
        return Written(self.path, self.text, tuple(written), tuple(made), added)


def _edited(
    text: str, path: Path, person: str, name: str | None, door: str | None, entry: str
) -> tuple[str, bool]:
    """enrollment.yaml's text with `person` added (doors: [door]) or, if listed, with
    `entry` added to their images (and their name set if given); and whether added."""
    yaml = _round_trip_yaml(text)
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        raise BadInputError(path, f"cannot edit the YAML: {exc}") from None
    data = CommentedMap() if data is None else data
    if not isinstance(data, CommentedMap):
        raise BadInputError(path, "not a mapping at the top")
    people = data.get("people")
    if people is None:
        people = data["people"] = CommentedSeq()
    existing = next((p for p in people if isinstance(p, dict) and p.get("id") == person), None)
    if existing is None:
        if door is None:
            raise BadInputError("--door", f"{person!r} is new: give the door they may open")
        people.append(_new_person(person, name, door, entry))
    else:
        _add_images(existing, entry)
        if name:
            existing["name"] = name
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue(), existing is None


def _round_trip_yaml(text: str) -> YAML:
    """A round-trip YAML that writes this text back unchanged: the indentation that does
    (the common layouts are tried); comments, order and quotes are kept in any case."""
    first: YAML | None = None
    for mapping, sequence, offset in ((2, 4, 2), (2, 2, 0), (4, 6, 4), (4, 4, 0)):
        yaml = YAML()
        yaml.preserve_quotes = True
        yaml.width = 4096  # never re-wrap a long line
        yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        first = first or yaml
        out = io.StringIO()
        try:
            yaml.dump(yaml.load(text), out)
        except YAMLError:
            return yaml  # the caller reports the parse error
        if out.getvalue() == text:
            return yaml
    assert first is not None
    return first


def _new_person(person: str, name: str | None, door: str, entry: str) -> CommentedMap:
    new = CommentedMap()
    new["id"] = person
    new["name"] = name or person
    new["images"] = _flow([entry])
    new["doors"] = _flow([door])
    return new


def _add_images(person: dict[str, Any], entry: str) -> None:
    images = person.get("images")
    if isinstance(images, str):
        images = person["images"] = _flow([images])
    if not isinstance(images, list):
        person["images"] = _flow([entry])
        return
    if entry.rstrip("/") not in {str(i).rstrip("/") for i in images}:
        images.append(entry)


def _flow(items: list[str]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _check_loads(text: str, path: Path) -> None:
    """The edited file validates as enrollment.yaml (a temp file beside it: same folder,
    so relative image paths resolve the same)."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        load_enrollment(Path(temp))
    finally:
        Path(temp).unlink(missing_ok=True)


def _make_dirs(folder: Path, owner: os.stat_result) -> list[Path]:
    """Create `folder` and missing parents, owned like enrollment.yaml, mode 0750."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for made in reversed(missing):
        made.mkdir(mode=DIR_MODE)
        _chown_like(made, owner)
    return list(reversed(missing))


def _replace_file(
    path: Path, data: bytes, like: os.stat_result | None = None, mode: int | None = None
) -> None:
    """Write `data` to `path` atomically (temp, fsync, rename, fsync dir), with the owner
    and mode of `like` (default: the file being replaced): the daemon must still read it."""
    reference = like or os.stat(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode if mode is not None else reference.st_mode & 0o7777)
            _chown_like(Path(temp), reference)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _chown_like(path: Path, owner: os.stat_result) -> None:
    if os.geteuid() == 0:  # only root may give a file away; others keep their own
        os.chown(path, owner.st_uid, owner.st_gid)


# --- 4. re-enroll -------------------------------------------------------------------------------


def _re_enroll(config: FacegateConfig, person: str, by_daemon: bool) -> tuple[str, ...]:
    """Bring the gallery up to date; the warnings about other people's photos."""
    if not by_daemon:
        return _enroll_here(config, person)
    reply = _reload(config, person)
    if not reply.get("ok"):
        raise BadInputError(
            config.control.socket,
            "the daemon could not reload (see its log); enrollment.yaml and the photos were"
            " put back",
        )
    if not reply.get("enrolled"):
        raise BadInputError(
            config.control.socket,
            f"the daemon reloaded but did not enroll {person!r} (see its log);"
            " enrollment.yaml and the photos were put back",
        )
    return ()


def _enroll_here(config: FacegateConfig, person: str) -> tuple[str, ...]:
    """As the daemon's reload does it: another person's unusable photo is skipped with a
    warning (it is not what this command is about), a resident whose photos are all
    unreadable now keeps their previous embeddings; the new photos must enroll."""
    from facegate.enroll import LazyEngine, enroll, photo_gate

    m = config.models
    engine = LazyEngine(m.dir, m.embedder, m.threads, photo_gate(config))
    report = enroll(config.enrollment, config.gallery, engine, skip_bad=True, keep_previous=True)
    if not any(p.person_id == person and p.images_used for p in report.people):
        raise BadInputError(config.enrollment, f"none of the new photos of {person!r} enrolled")
    return report.warnings


def _reload(config: FacegateConfig, person: str) -> dict[str, Any]:
    client = ControlClient(config.control.socket, RELOAD_WAIT_S)
    for reply in client.request({"op": "reload", "person": person}):
        if reply.get("type") in ("reloaded", "error"):
            return reply
    return {"ok": False}


def _reload_quietly(config: FacegateConfig, person: str) -> None:
    with contextlib.suppress(FacegateError, OSError):
        _reload(config, person)
