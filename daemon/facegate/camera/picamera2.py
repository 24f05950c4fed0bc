"""The Raspberry Pi camera through picamera2/libcamera (the `pi` extra, from apt)."""

from __future__ import annotations

import logging
from typing import Any, Final

from facegate.camera.base import FrameSource, RGBImage, SourceValue
from facegate.errors import CameraError

logger = logging.getLogger(__name__)

DEFAULT_SIZE: Final = (640, 480)
INSTALL_HINT: Final = (
    "picamera2 is not installed: run `sudo apt install python3-picamera2` and create"
    " facegate's venv with `python3 -m venv --system-site-packages` so that it can import it"
)
CHECK_CAMERA: Final = (
    "is the camera ribbon cable seated and the camera detected (`rpicam-hello --list-cameras`)?"
    " is another program (rpicam-*, another facegate) using it? is the user in the video group?"
)


class Picamera2Source(FrameSource):
    """A CSI camera: an RGB main stream at `size`, optionally capped at `fps`."""

    def __init__(
        self,
        value: SourceValue = 0,
        *,
        fps: float | None = None,
        loop: bool = False,  # accepted for a uniform signature; a camera never ends
        rotate: int = 0,
        name: str | None = None,
        size: tuple[int, int] = DEFAULT_SIZE,
    ) -> None:
        # `source: picamera2` in the config arrives as the string; a number picks a camera.
        self._camera_num = value if isinstance(value, int) else _camera_number(str(value))
        super().__init__(name=name or f"picamera2:{self._camera_num}", rotate=rotate)
        self._fps = fps
        self._size = size
        self._cam: Any = None
        self._cv2: Any = None

    def describe(self) -> str:
        return f"Raspberry Pi camera {self._camera_num}"

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(INSTALL_HINT) from exc
        import cv2

        self._cv2 = cv2
        try:
            cam = Picamera2(self._camera_num)
        except (RuntimeError, IndexError, OSError) as exc:
            raise CameraError(f"cannot open {self.describe()} ({exc}): {CHECK_CAMERA}") from exc
        try:
            self._start(cam)
        except (RuntimeError, OSError, ValueError) as exc:
            cam.close()
            raise CameraError(f"cannot start {self.describe()} ({exc}): {CHECK_CAMERA}") from exc
        self._cam = cam

    def _start(self, cam: Any) -> None:
        controls = {"FrameRate": float(self._fps)} if self._fps else {}
        config = cam.create_video_configuration(
            main={"size": self._size, "format": "RGB888"}, controls=controls
        )
        cam.configure(config)
        cam.start()

    def _read(self) -> RGBImage:
        try:
            image: RGBImage = self._cam.capture_array("main")
        except (RuntimeError, OSError) as exc:
            raise CameraError(f"lost {self.describe()} ({exc}): {CHECK_CAMERA}") from exc
        # libcamera's "RGB888" is [B, G, R] in memory. capture_array returns a fresh copy, so
        # swap in place; a row-padded (non-contiguous) array needs a new one.
        if image.flags.c_contiguous and image.flags.writeable:
            self._cv2.cvtColor(image, self._cv2.COLOR_BGR2RGB, dst=image)
            return image
        rgb: RGBImage = self._cv2.cvtColor(image, self._cv2.COLOR_BGR2RGB)
        return rgb

    def _close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            cam.stop()
        finally:
            cam.close()


def _camera_number(value: str) -> int:
    if value in ("", "picamera2"):
        return 0
    suffix = value.removeprefix("picamera2:")
    if not suffix.isdigit():
        raise ValueError(f"picamera2 source must be 'picamera2' or 'picamera2:<n>', got {value!r}")
    return int(suffix)
