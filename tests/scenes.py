"""Door-camera scenes and daemon config files, shared by `make demo` and the daemon tests.

A "scene" is what the camera sees: 640x480 frames of an empty hallway (grey) or of a
visitor's photo letterboxed into the frame. Scenes are written as an MJPG .avi (a video
file source) or as a folder of JPEGs (an image-folder source; with `loop: true` it is a
camera that never ends).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

REPO: Final = Path(__file__).resolve().parent.parent
CELEB: Final = REPO / "models" / "data" / "5-celebrity"
MODELS: Final = REPO / "models"
FRAME_W: Final = 640
FRAME_H: Final = 480
HALLWAY_GREY: Final = 60

BGRImage = npt.NDArray[np.uint8]


def photo(person: str, split: str = "val", index: int = 0) -> Path:
    """A deterministic photo of one celebrity (sorted file order)."""
    return sorted((CELEB / split / person).glob("*.jpg"))[index]


def empty_frame() -> BGRImage:
    """The hallway with nobody in it."""
    return np.full((FRAME_H, FRAME_W, 3), HALLWAY_GREY, dtype=np.uint8)


def fit(image_path: Path) -> BGRImage:
    """The photo scaled to fill a 640x480 frame (letterboxed), as a door camera sees a visitor."""
    image = cv2.imread(str(image_path))
    if image is None:
        raise FileNotFoundError(image_path)
    scale = min(FRAME_W / image.shape[1], FRAME_H / image.shape[0])
    resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    frame = empty_frame()
    y, x = (FRAME_H - resized.shape[0]) // 2, (FRAME_W - resized.shape[1]) // 2
    frame[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return frame


def write_video(path: Path, frames: Iterable[BGRImage], fps: float) -> int:
    """An MJPG .avi of `frames`; returns the number of frames written."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (FRAME_W, FRAME_H))
    count = 0
    try:
        for frame in frames:
            writer.write(frame)
            count += 1
    finally:
        writer.release()
    return count


def write_folder(folder: Path, frames: Sequence[BGRImage]) -> Path:
    """A folder of JPEGs 000000.jpg, 000001.jpg, ... (sorted = playback order)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        if not cv2.imwrite(str(folder / f"{index:06d}.jpg"), frame):
            raise OSError(f"cannot write frame {index} to {folder}")
    return folder


def visit(person_photo: Path, show_frames: int, gap_frames: int) -> list[BGRImage]:
    """An empty hallway for `gap_frames`, then the visitor for `show_frames`."""
    face = fit(person_photo)
    return [empty_frame()] * gap_frames + [face] * show_frames


def write_key(path: Path) -> Path:
    """A fresh hex HMAC key, mode 600."""
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


def write_unlock_key(path: Path) -> Path:
    """A fresh Ed25519 unlock key pair: `path` (private, 600) and its .pub; returns `path`.
    An existing pair is replaced (a key rotation)."""
    from facegate.keys import KeyType, public_key_path, write_new_key

    path.unlink(missing_ok=True)
    public_key_path(path).unlink(missing_ok=True)
    write_new_key(KeyType.ED25519, path)
    return path


def write_enrollment(
    path: Path, people: Mapping[str, Sequence[str]], *, image_split: str = "train"
) -> Path:
    """enrollment.yaml enrolling each person from all their `image_split` photos.

    `people` maps a celebrity id to the doors they may open."""
    entries = [
        f"  - id: {person}\n"
        f"    name: {person.replace('_', ' ').title()}\n"
        f"    images: ['{CELEB / image_split / person}/']\n"
        f"    doors: [{', '.join(doors)}]"
        for person, doors in people.items()
    ]
    path.write_text("people:\n" + "\n".join(entries) + "\n" if entries else "people: []\n")
    return path


def write_config(
    path: Path,
    *,
    port: int,
    cameras: Sequence[Mapping[str, object]],
    recognition: Mapping[str, object] | None = None,
    mqtt_extra: Mapping[str, object] | None = None,
    device: str = "test",
    models_dir: Path = MODELS,
    signing: Mapping[str, object] | None = None,
    threads: int | None = None,
) -> Path:
    """facegate.yaml next to enrollment.yaml, gallery.fgg, journal/ and hmac.key in path's dir.

    Each camera mapping is written as YAML flow style ({door: front, source: x, ...}).
    `signing` ({algorithm, key_file}) replaces the old `signing_key_file: hmac.key`.
    `threads`: models.threads (the daemon's default, 2, when None)."""
    # These scenes are still photos: exactly what liveness (on by default) refuses. Tests
    # of everything else switch it off; the liveness tests show live sequences with it on.
    rec = {"min_face_px": 60, "liveness": "off", **(recognition or {})}
    key = {"signing": signing} if signing is not None else {"signing_key_file": "hmac.key"}
    mqtt = {"host": "127.0.0.1", "port": port, **key, **(mqtt_extra or {})}
    lines = [
        f"device: {device}",
        "cameras:",
        *(f"  - {_flow(camera)}" for camera in cameras),
        f"recognition: {_flow(rec)}",
        f"models: {{dir: '{models_dir}'{'' if threads is None else f', threads: {threads}'}}}",
        "enrollment: enrollment.yaml",
        "gallery: gallery.fgg",
        "journal: journal",
        f"mqtt: {_flow(mqtt)}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _flow(mapping: Mapping[str, object]) -> str:
    def scalar(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, Mapping):
            return _flow(value)
        return "'" + str(value).replace("'", "''") + "'"

    return "{" + ", ".join(f"{key}: {scalar(value)}" for key, value in mapping.items()) + "}"
