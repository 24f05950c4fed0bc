"""The frame-source contract: one small ABC, a frozen `Frame`, and real-time pacing."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

RGBImage = npt.NDArray[np.uint8]
SourceKind = Literal["picamera2", "device", "url", "file", "folder"]
SourceValue = str | int | Path

ROTATIONS: Final = (0, 90, 180, 270)


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image: HxWx3 RGB uint8 (may be a rotated, non-contiguous view).

    `index` increases by one per frame of a source (a grabber renumbers across reconnects);
    `ts` is `time.monotonic()` at capture; `source` is the source's name (the door id).
    """

    image: RGBImage
    index: int
    ts: float
    source: str


class FrameSource(ABC):
    """A camera, stream, video file or image folder; use `open()` once, `read()`, `close()`.

    Subclasses implement `_open`, `_read` (an RGB image or None at the end of a finite
    source) and `_close`, and raise `facegate.errors.CameraError` with what to check.
    `read()` is called from a single thread only.
    """

    def __init__(self, *, name: str, rotate: int = 0) -> None:
        if rotate not in ROTATIONS:
            raise ValueError(f"rotate must be one of {ROTATIONS}, got {rotate!r}")
        self._name = name
        # rotate is clockwise degrees; np.rot90 turns counter-clockwise for positive k.
        self._rot90_k = (-rotate // 90) % 4
        self._index = 0
        self._is_open = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_open(self) -> bool:
        return self._is_open

    def open(self) -> None:
        """Acquire the device or file; raises CameraError saying what to check."""
        if self._is_open:
            return
        self._open()
        self._is_open = True
        logger.debug("opened frame source %s (%s)", self._name, self.describe())

    def read(self) -> Frame | None:
        """The next frame, or None when a finite, non-looping source has ended."""
        if not self._is_open:
            raise RuntimeError(f"frame source {self._name} is not open")
        image = self._read()
        if image is None:
            return None
        ts = time.monotonic()
        if self._rot90_k:
            image = np.rot90(image, self._rot90_k)  # a view: no copy on the hot path
        frame = Frame(image=image, index=self._index, ts=ts, source=self._name)
        self._index += 1
        return frame

    def close(self) -> None:
        """Release the device or file; safe to call twice and after a failed open."""
        was_open, self._is_open = self._is_open, False
        self._close()
        if was_open:
            logger.debug("closed frame source %s", self._name)

    def describe(self) -> str:
        """What this source reads, for log lines (never includes credentials)."""
        return type(self).__name__

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _read(self) -> RGBImage | None: ...

    @abstractmethod
    def _close(self) -> None: ...


class Pacer:
    """Spaces calls to `wait()` 1/fps apart, as a camera would deliver frames.

    A consumer that falls more than one period behind restarts the schedule rather than
    getting a burst of frames to catch up: a late frame is better than a stale backlog.
    """

    def __init__(self, fps: float | None) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self._period_s = 1.0 / fps if fps else 0.0
        self._next_s: float | None = None

    @property
    def period_s(self) -> float:
        return self._period_s

    def reset(self) -> None:
        self._next_s = None

    def wait(self) -> None:
        if not self._period_s:
            return
        now = time.monotonic()
        if self._next_s is None or now - self._next_s > self._period_s:
            self._next_s = now
        elif self._next_s > now:
            time.sleep(self._next_s - now)
        self._next_s += self._period_s
