"""A folder of still images played back like a camera: sorted, paced at fps, optional loop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from facegate.camera.base import FrameSource, Pacer, RGBImage, SourceValue
from facegate.errors import BadInputError, CameraError
from facegate.files import IMAGE_SUFFIXES
from facegate.imageio import load_image

logger = logging.getLogger(__name__)

DEFAULT_FOLDER_FPS: Final = 10.0


class ImageFolderSource(FrameSource):
    """Images in a folder in sorted file-name order; unreadable images are skipped."""

    def __init__(
        self,
        value: SourceValue,
        *,
        fps: float | None = DEFAULT_FOLDER_FPS,
        loop: bool = False,
        rotate: int = 0,
        name: str | None = None,
    ) -> None:
        self._folder = Path(str(value))
        super().__init__(name=name or self._folder.name, rotate=rotate)
        self._loop = loop
        self._pacer = Pacer(fps)
        self._files: list[Path] = []
        self._pos = 0
        self._skipped: set[Path] = set()

    def describe(self) -> str:
        return f"image folder {self._folder}"

    def _open(self) -> None:
        if not self._folder.is_dir():
            raise CameraError(
                f"image folder {self._folder} does not exist or is not a directory"
                " (check the camera source in facegate.yaml)"
            )
        try:
            entries = sorted(self._folder.iterdir())
        except OSError as exc:
            raise CameraError(f"cannot list image folder {self._folder}: {exc}") from exc
        self._files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not self._files:
            raise CameraError(
                f"image folder {self._folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self._pos = 0
        self._pacer.reset()

    def _read(self) -> RGBImage | None:
        # Wait first, then read: the file is read when the frame is due, as a camera captures
        # then; reading first would hand out a picture up to one period old.
        self._pacer.wait()
        # Bounded so that a folder of only corrupt images ends in an error, not a spin.
        for _ in range(len(self._files)):
            if self._pos >= len(self._files):
                if not self._loop:
                    return None
                self._pos = 0
            path = self._files[self._pos]
            self._pos += 1
            image = self._load(path)
            if image is not None:
                return image
        raise CameraError(f"no readable image in folder {self._folder}")

    def _load(self, path: Path) -> RGBImage | None:
        """The image as a full-resolution RGB frame, or None (and why, logged) if unusable."""
        try:
            # The project's one image parser, bounded in bytes and pixels; no thumbnail and
            # no minimum size: a camera frame keeps its resolution, a tiny one has no face.
            return load_image(path, max_side_px=None, min_side_px=1)
        except BadInputError as exc:
            # Once per file: a looping folder would repeat the same line every lap.
            level = logging.DEBUG if path in self._skipped else logging.WARNING
            self._skipped.add(path)
            logger.log(level, "camera %s: skipping image: %s", self.name, exc)
            return None

    def _close(self) -> None:
        self._files = []
