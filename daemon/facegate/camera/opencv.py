"""OpenCV sources: a live camera (device index or /dev/video path), a stream URL, a video file.

`cv2` is imported inside `open()` so that config checks and other backends never need it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Final

from facegate.camera.base import FrameSource, Pacer, RGBImage, SourceValue
from facegate.errors import CameraError
from facegate.redact import redact_url

logger = logging.getLogger(__name__)

STREAM_OPEN_TIMEOUT_MS: Final = 10_000
STREAM_READ_TIMEOUT_MS: Final = 5_000
DEFAULT_FILE_FPS: Final = 10.0
CHECK_DEVICE: Final = (
    "is the camera connected (`v4l2-ctl --list-devices`)? is the user in the video group"
    " (`sudo usermod -aG video $USER`)? is another program using it?"
)


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise CameraError(
            "OpenCV is not installed: install opencv-python-headless in facegate's venv"
        ) from exc
    return cv2


def _to_rgb_inplace(cv2_mod: Any, bgr: RGBImage) -> RGBImage:
    # In place: the frame from cap.read() is already a fresh array, so no second allocation.
    cv2_mod.cvtColor(bgr, cv2_mod.COLOR_BGR2RGB, dst=bgr)
    return bgr


def _device_or_url(value: SourceValue) -> int | str:
    # "0" from a YAML string or CLI flag means device index 0, not a file named "0".
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.isdigit() else text


class OpenCVCaptureSource(FrameSource):
    """A live OpenCV source; use `DeviceSource` or `StreamSource`."""

    _KIND: ClassVar[str] = "device"

    def __init__(
        self,
        value: SourceValue,
        *,
        fps: float | None = None,
        loop: bool = False,  # accepted for a uniform signature; a live source never ends
        rotate: int = 0,
        name: str | None = None,
    ) -> None:
        self._kind = self._KIND
        self._value = _device_or_url(value)
        super().__init__(name=name or self.describe(), rotate=rotate)
        self._fps = fps
        self._cap: Any = None  # cv2.VideoCapture, typed loosely: cv2 is imported lazily
        self._cv2: Any = None

    def describe(self) -> str:
        if self._kind == "url":
            return f"stream {redact_url(str(self._value))}"
        return f"camera device {self._value}"

    def _open(self) -> None:
        cv2_mod = _import_cv2()
        if self._kind == "url":
            cap = self._open_url(cv2_mod, str(self._value))
        else:
            cap = self._open_device(cv2_mod, self._value)
        # Keep the driver's queue at one frame: the newest frame matters, not a backlog.
        cap.set(cv2_mod.CAP_PROP_BUFFERSIZE, 1)
        if self._fps and self._kind == "device":
            cap.set(cv2_mod.CAP_PROP_FPS, float(self._fps))
        self._cap, self._cv2 = cap, cv2_mod

    def _open_device(self, cv2_mod: Any, device: int | str) -> Any:
        if isinstance(device, str):
            path = Path(device)
            if not path.exists():
                raise CameraError(f"camera device {device} does not exist: {CHECK_DEVICE}")
            if not os.access(path, os.R_OK | os.W_OK):
                raise CameraError(
                    f"no permission to open camera device {device}: is the user in the video"
                    " group (`sudo usermod -aG video $USER`, then log in again)?"
                )
        # V4L2 directly on Linux: CAP_ANY may pick GStreamer/FFmpeg and open slowly.
        api = cv2_mod.CAP_V4L2 if sys.platform.startswith("linux") else cv2_mod.CAP_ANY
        cap = cv2_mod.VideoCapture(device, api)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open camera device {device}: {CHECK_DEVICE}")
        return cap

    def _open_url(self, cv2_mod: Any, url: str) -> Any:
        if url.startswith("rtsp"):
            # RTSP over UDP drops packets on Wi-Fi and gives smeared frames; TCP unless the
            # operator set FFmpeg capture options themselves.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        params = [
            cv2_mod.CAP_PROP_OPEN_TIMEOUT_MSEC,
            STREAM_OPEN_TIMEOUT_MS,
            cv2_mod.CAP_PROP_READ_TIMEOUT_MSEC,
            STREAM_READ_TIMEOUT_MS,
        ]
        cap = cv2_mod.VideoCapture(url, cv2_mod.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"cannot open {self.describe()}: is the camera on the network and reachable"
                " from this host, and are the URL, user and password right?"
            )
        return cap

    def _read(self) -> RGBImage:
        assert self._cap is not None
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise CameraError(f"lost {self.describe()}: no frame from the driver; {CHECK_DEVICE}")
        return _to_rgb_inplace(self._cv2, bgr)

    def _close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class DeviceSource(OpenCVCaptureSource):
    """A local camera: a device index (0) or a path (/dev/video0), through V4L2."""

    _KIND = "device"


class StreamSource(OpenCVCaptureSource):
    """A network camera: rtsp://, http:// (MJPEG) ... through FFmpeg, with timeouts."""

    _KIND = "url"


class VideoFileSource(FrameSource):
    """A video file played in real time at `fps` (default: the file rate), optionally looped."""

    def __init__(
        self,
        value: SourceValue,
        *,
        fps: float | None = None,
        loop: bool = False,
        rotate: int = 0,
        name: str | None = None,
    ) -> None:
        self._path = Path(str(value))
        super().__init__(name=name or self._path.name, rotate=rotate)
        self._fps = fps
        self._loop = loop
        self._pacer = Pacer(fps)
        self._cap: Any = None  # cv2.VideoCapture, typed loosely: cv2 is imported lazily
        self._cv2: Any = None

    def describe(self) -> str:
        return f"video file {self._path}"

    @property
    def fps(self) -> float | None:
        """The playback rate in frames per second (known after open)."""
        period = self._pacer.period_s
        return 1.0 / period if period else None

    def _open(self) -> None:
        if not self._path.is_file():
            raise CameraError(
                f"video file {self._path} does not exist (check the camera source in facegate.yaml)"
            )
        cv2_mod = _import_cv2()
        cap = cv2_mod.VideoCapture(str(self._path), cv2_mod.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"cannot decode video file {self._path}: is it a video format FFmpeg can read?"
            )
        if self._fps is None:
            file_fps = float(cap.get(cv2_mod.CAP_PROP_FPS) or 0.0)
            # Containers without a rate report 0 (or nonsense such as 90000): fall back.
            self._pacer = Pacer(file_fps if 0 < file_fps <= 240 else DEFAULT_FILE_FPS)
        self._pacer.reset()
        self._cap, self._cv2 = cap, cv2_mod

    def _read(self) -> RGBImage | None:
        assert self._cap is not None
        ok, bgr = self._cap.read()
        if not ok and self._loop:
            ok, bgr = self._rewind_and_read()
        if not ok or bgr is None:
            return None
        self._pacer.wait()
        return _to_rgb_inplace(self._cv2, bgr)

    def _rewind_and_read(self) -> tuple[bool, Any]:
        assert self._cap is not None
        if not self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0):
            # Some containers cannot seek: reopen the file instead.
            self._close()
            self._open()
            assert self._cap is not None
        ok, bgr = self._cap.read()
        if not ok:
            raise CameraError(f"video file {self._path} has no decodable frames")
        return ok, bgr

    def _close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
