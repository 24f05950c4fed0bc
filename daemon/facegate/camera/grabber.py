"""Keeps the newest frame of a source in a size-one slot; reopens a lost source with backoff.

Two kinds of threads: one supervisor per grabber, and one reader per attempt to use the
source. A reader that blocks inside a driver call (a stalled RTSP stream, a wedged USB
camera) cannot be interrupted, so on a stall the supervisor abandons it and starts a new
one; the abandoned reader closes its own source when the driver call returns. A source
object is only ever touched by the one reader thread that created it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from enum import Enum
from types import TracebackType
from typing import Final, Self

from facegate.camera.backoff import Backoff
from facegate.camera.base import Frame, FrameSource
from facegate.errors import CameraError
from facegate.redact import RedactingFilter

logger = logging.getLogger(__name__)
# Every camera failure becomes a log line here, some with a driver's or library's message
# quoting the source URL: mask credentials in all of them, tracebacks included.
logger.addFilter(RedactingFilter())

DEFAULT_STALL_S: Final = 5.0
DEFAULT_OPEN_TIMEOUT_S: Final = 20.0
# Errors a source raises on purpose; anything else is a bug and is logged with a traceback.
_EXPECTED_ERRORS: Final = (CameraError, OSError)


class _Outcome(Enum):
    STOPPED = "stopped"
    FAILED = "failed"
    STALLED = "stalled"
    ENDED = "ended"


class _Attempt:
    """One reader thread's view of its source; all fields are guarded by the grabber lock."""

    def __init__(self, number: int, started_s: float) -> None:
        self.number = number
        self.progress_s = started_s  # start, then the time of the latest frame
        self.got_frame = False
        self.first_frame_s = 0.0
        self.stable = False  # frames flowed for stall_s: the backoff may start over
        self.cancelled = False
        self.ended = False
        self.error: BaseException | None = None


class LatestFrameGrabber:
    """Reads a FrameSource on a background thread and hands out only the newest frame.

    `source_factory` returns a new, not yet opened source for each (re)connect attempt.
    Frames handed out by `get()` are renumbered 0, 1, 2, ... across reconnects.
    """

    def __init__(
        self,
        source_factory: Callable[[], FrameSource],
        *,
        stall_s: float = DEFAULT_STALL_S,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
        backoff: Backoff | None = None,
        name: str = "camera",
    ) -> None:
        if stall_s <= 0 or open_timeout_s <= 0:
            raise ValueError("stall_s and open_timeout_s must be positive")
        self._factory = source_factory
        self._stall_s = stall_s
        self._open_timeout_s = open_timeout_s
        self._backoff = backoff if backoff is not None else Backoff()
        self._name = name
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._next_index = 0
        self._frames_read = 0
        self._frames_dropped = 0
        self._last_frame_ts: float | None = None
        self._connected = False
        self._finished = False
        self._stopping = False
        self._failures = 0
        self._down_since_s: float | None = None
        self._attempt: _Attempt | None = None
        self._readers: list[threading.Thread] = []
        self._supervisor: threading.Thread | None = None

    # -- public API ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the background threads; frames become available through `get()`."""
        if self._supervisor is not None:
            raise RuntimeError(f"grabber {self._name} already started")
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"grabber-{self._name}", daemon=True
        )
        self._supervisor.start()

    def get(self, timeout: float | None = None) -> Frame | None:
        """A frame newer than the last one returned; None on timeout, finish or stop."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._slot is not None or self._finished or self._stopping, timeout
            )
            frame, self._slot = self._slot, None
            return frame

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading and release the source, waiting at most about `timeout_s`."""
        with self._cond:
            self._stopping = True
            if self._attempt is not None:
                self._attempt.cancelled = True
            self._cond.notify_all()
            threads = ([self._supervisor] if self._supervisor else []) + self._readers
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            # Daemon threads: they cannot block exit, and each closes its source on return.
            logger.warning(
                "camera %s: %s still blocked in the driver after %.1f s; leaving them",
                self._name,
                ", ".join(stuck),
                timeout_s,
            )

    @property
    def frames_read(self) -> int:
        """Frames received from the source since start."""
        with self._cond:
            return self._frames_read

    @property
    def frames_dropped(self) -> int:
        """Frames replaced by a newer one before anyone called `get()` for them."""
        with self._cond:
            return self._frames_dropped

    @property
    def last_frame_ts(self) -> float | None:
        """`time.monotonic()` of the newest frame received, or None before the first."""
        with self._cond:
            return self._last_frame_ts

    @property
    def connected(self) -> bool:
        """True while the current source delivers frames."""
        with self._cond:
            return self._connected

    @property
    def alive(self) -> bool:
        """The supervisor thread runs, or the source ended on its own (a finite file)."""
        supervisor = self._supervisor
        return self.finished or (supervisor is not None and supervisor.is_alive())

    @property
    def finished(self) -> bool:
        """True once a finite, non-looping source has delivered its last frame."""
        with self._cond:
            return self._finished

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- supervisor ---------------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            self._supervise_attempts()
        except Exception:
            # A bug here would leave the door blind while the process looks alive: say so;
            # `alive` turns False, the service stops the watchdog and systemd restarts us.
            logger.exception("camera %s: supervisor failed; no more frames", self._name)

    def _supervise_attempts(self) -> None:
        number = 0
        while True:
            number += 1
            outcome = self._run_attempt(number)
            if outcome is _Outcome.STOPPED:
                return
            if outcome is _Outcome.ENDED:
                self._finish()
                return
            with self._cond:
                delay_s = self._backoff.next_delay()  # under the lock: readers reset it
                if self._cond.wait_for(lambda: self._stopping, delay_s):
                    return

    def _run_attempt(self, number: int) -> _Outcome:
        attempt = _Attempt(number, time.monotonic())
        reader = threading.Thread(
            target=self._read_loop,
            args=(attempt,),
            name=f"grabber-{self._name}-reader-{number}",
            daemon=True,
        )
        with self._cond:
            if self._stopping:
                return _Outcome.STOPPED
            self._attempt = attempt
            self._readers = [t for t in self._readers if t.is_alive()] + [reader]
        reader.start()
        with self._cond:
            outcome = self._watch(attempt)
            attempt.cancelled = True
            self._connected = False
        self._log_outcome(attempt, outcome)
        return outcome

    def _watch(self, attempt: _Attempt) -> _Outcome:
        """Wait (lock held) until the attempt ends, fails, stalls, or the grabber stops."""
        while True:
            if self._stopping:
                return _Outcome.STOPPED
            if attempt.error is not None:
                return _Outcome.FAILED
            if attempt.ended:
                return _Outcome.ENDED
            limit_s = self._stall_s if attempt.got_frame else self._open_timeout_s
            remaining_s = attempt.progress_s + limit_s - time.monotonic()
            if remaining_s <= 0:
                return _Outcome.STALLED
            self._cond.wait(remaining_s)

    def _log_outcome(self, attempt: _Attempt, outcome: _Outcome) -> None:
        if outcome is _Outcome.FAILED:
            reason = f"failed: {attempt.error}"
        elif outcome is _Outcome.STALLED:
            waited = "no frame" if attempt.got_frame else "no first frame"
            limit_s = self._stall_s if attempt.got_frame else self._open_timeout_s
            reason = f"stalled: {waited} for {limit_s:.1f} s"
        else:
            return
        with self._cond:
            self._failures += 1
            first = self._failures == 1
            if first:
                self._down_since_s = time.monotonic()
        # The first failure is news; the retries of an outage that persists are noise.
        level = logging.WARNING if first else logging.DEBUG
        logger.log(level, "camera %s %s; reconnecting with backoff", self._name, reason)

    def _finish(self) -> None:
        logger.info("camera %s: source ended after %d frames", self._name, self.frames_read)
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    # -- reader -------------------------------------------------------------------------

    def _read_loop(self, attempt: _Attempt) -> None:
        source: FrameSource | None = None
        try:
            source = self._factory()
            source.open()
            # INFO once at start; later reopens are reported by the recovery line instead.
            level = logging.INFO if attempt.number == 1 else logging.DEBUG
            logger.log(level, "camera %s: opened %s", self._name, source.describe())
            while not attempt.cancelled:
                frame = source.read()
                if frame is None:
                    self._report_end(attempt)
                    return
                self._publish(attempt, frame)
        except Exception as exc:  # noqa: BLE001 - reported to the supervisor, which retries
            self._report_error(attempt, exc)
        finally:
            if source is not None:
                _close_quietly(source, self._name)

    def _publish(self, attempt: _Attempt, frame: Frame) -> None:
        recovered_after_s: float | None = None
        with self._cond:
            if attempt.cancelled:
                return  # an abandoned reader: its frames are stale by definition
            if self._slot is not None:
                self._frames_dropped += 1
            self._slot = dataclasses.replace(frame, index=self._next_index)
            self._next_index += 1
            self._frames_read += 1
            self._last_frame_ts = frame.ts
            attempt.progress_s = frame.ts
            if not attempt.got_frame:
                attempt.got_frame, attempt.first_frame_s = True, frame.ts
                self._connected = True
                recovered_after_s = self._mark_recovered(frame.ts)
            elif not attempt.stable and frame.ts - attempt.first_frame_s >= self._stall_s:
                # Only a source that stays up resets the backoff: one that dies right after
                # its first frame must not be reopened every min_s forever.
                attempt.stable = True
                self._backoff.reset()
            self._cond.notify_all()
        if recovered_after_s is not None:
            logger.info("camera %s recovered after %.1f s down", self._name, recovered_after_s)

    def _mark_recovered(self, now_s: float) -> float | None:
        """End the outage on the first frame of an attempt; the downtime if there was one."""
        down_since_s, self._down_since_s = self._down_since_s, None
        self._failures = 0
        return None if down_since_s is None else now_s - down_since_s

    def _report_end(self, attempt: _Attempt) -> None:
        with self._cond:
            attempt.ended = True
            self._cond.notify_all()

    def _report_error(self, attempt: _Attempt, exc: Exception) -> None:
        with self._cond:
            attempt.error = exc
            first = self._failures == 0
            self._cond.notify_all()
        if not isinstance(exc, _EXPECTED_ERRORS):
            # A bug rather than a lost camera: the traceback once, then as for any retry.
            level = logging.ERROR if first else logging.DEBUG
            logger.log(
                level, "camera %s: unexpected error from the source", self._name, exc_info=exc
            )


def _close_quietly(source: FrameSource, name: str) -> None:
    try:
        source.close()
    except Exception:  # noqa: BLE001 - a failing release must not hide the original error
        logger.debug("camera %s: error while closing the source", name, exc_info=True)
