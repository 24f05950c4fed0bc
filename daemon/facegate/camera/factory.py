"""Config -> FrameSource: an explicit map from source kind to backend class."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Protocol

from facegate.camera.base import FrameSource, SourceValue
from facegate.camera.folder import ImageFolderSource
from facegate.camera.opencv import DeviceSource, StreamSource, VideoFileSource
from facegate.camera.picamera2 import Picamera2Source


class CameraSourceLike(Protocol):
    """What the factory needs from config's parsed `CameraSource`."""

    @property
    def kind(self) -> str: ...

    @property
    def value(self) -> str | int | Path: ...


class CameraConfigLike(Protocol):
    """What the factory needs from config's `CameraConfig` (one camera, one door)."""

    @property
    def door(self) -> str: ...

    @property
    def source(self) -> CameraSourceLike: ...

    @property
    def fps(self) -> float: ...

    @property
    def loop(self) -> bool: ...

    @property
    def rotate(self) -> int: ...


class SourceClass(Protocol):
    """The constructor shape every backend shares."""

    def __call__(
        self,
        value: SourceValue,
        *,
        fps: float | None = ...,
        loop: bool = ...,
        rotate: int = ...,
        name: str | None = ...,
    ) -> FrameSource: ...


SOURCE_TYPES: Final[dict[str, SourceClass]] = {
    "picamera2": Picamera2Source,
    "device": DeviceSource,
    "url": StreamSource,
    "file": VideoFileSource,
    "folder": ImageFolderSource,
}


def make_source(
    kind: str,
    value: SourceValue,
    *,
    fps: float | None = None,
    loop: bool = False,
    rotate: int = 0,
    name: str | None = None,
) -> FrameSource:
    """A new, not yet opened source of `kind` (a key of SOURCE_TYPES)."""
    try:
        cls = SOURCE_TYPES[kind]
    except KeyError:
        raise ValueError(
            f"unknown camera source kind {kind!r}; expected one of {sorted(SOURCE_TYPES)}"
        ) from None
    return cls(value, fps=fps, loop=loop, rotate=rotate, name=name)


def source_from_config(camera: CameraConfigLike) -> FrameSource:
    """A new, not yet opened source for one configured camera, named after its door.

    This is the `source_factory` for `LatestFrameGrabber`:
    `LatestFrameGrabber(functools.partial(source_from_config, camera))`.
    """
    return make_source(
        camera.source.kind,
        camera.source.value,
        fps=camera.fps,
        loop=camera.loop,
        rotate=camera.rotate,
        name=camera.door,
    )


def open_source(camera: CameraConfigLike) -> FrameSource:
    """`source_from_config` and `open()` it; raises CameraError saying what to check."""
    source = source_from_config(camera)
    source.open()
    return source
