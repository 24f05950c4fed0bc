"""Bounded intake of verify requests between the MQTT thread and the camera loop.

A door controller sends one claim per badge swipe; anyone on the broker can send
thousands. Each door gets a token bucket (`rate_per_s`, `burst`) and a short queue: a
request over the rate is refused at once, and when the queue is full the oldest waiting
request is dropped (a newer swipe supersedes it anyway). Both are counted and logged,
at most one summary line per door every `LOG_EVERY_S`, so a flood cannot flood the log
either. The loop takes at most `max_per_turn` requests per turn, so frames keep their
latency under any request rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from facegate.mqtt.bus import VerifyRequest

logger = logging.getLogger(__name__)

#: A badge reader sends about one claim per person; 5 a second per door is generous.
DEFAULT_RATE_PER_S: Final = 5.0
DEFAULT_BURST: Final = 10
#: Requests waiting per door; each is answered by a verify result, so keep it short.
DEFAULT_QUEUE_PER_DOOR: Final = 16
DEFAULT_MAX_PER_TURN: Final = 8
LOG_EVERY_S: Final = 10.0


@dataclass
class _DoorIntake:
    tokens: float
    refilled_at: float
    waiting: deque[VerifyRequest] = field(default_factory=deque)
    over_rate: int = 0
    overflowed: int = 0
    unlogged: int = 0
    logged_at: float = float("-inf")


class RequestIntake:
    """Thread-safe: `put` from the MQTT thread, `take` from the camera loop."""

    def __init__(
        self,
        *,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        burst: int = DEFAULT_BURST,
        queue_per_door: int = DEFAULT_QUEUE_PER_DOOR,
        max_per_turn: int = DEFAULT_MAX_PER_TURN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or queue_per_door < 1 or max_per_turn < 1:
            raise ValueError("rate, burst, queue size and per-turn limit must be positive")
        self._rate = rate_per_s
        self._burst = burst
        self._queue_per_door = queue_per_door
        self._max_per_turn = max_per_turn
        self._clock = clock
        self._lock = threading.Lock()
        self._doors: dict[str, _DoorIntake] = {}
        self._order: deque[str] = deque()  # doors in arrival order, for fairness

    def put(self, request: VerifyRequest) -> bool:
        """Queue `request`; False if it was refused (over the door's rate)."""
        now = self._clock()
        with self._lock:
            door = self._door(request.door, now)
            self._refill(door, now)
            if door.tokens < 1:
                door.over_rate += 1
                self._note_drop(request.door, door, now)
                return False
            door.tokens -= 1
            if len(door.waiting) >= self._queue_per_door:
                door.waiting.popleft()
                door.overflowed += 1
                self._note_drop(request.door, door, now)
            door.waiting.append(request)
            self._order.append(request.door)
            return True

    def take(self) -> list[VerifyRequest]:
        """Up to `max_per_turn` waiting requests, oldest first, fairly across doors."""
        taken: list[VerifyRequest] = []
        with self._lock:
            while self._order and len(taken) < self._max_per_turn:
                door = self._doors[self._order.popleft()]
                if door.waiting:  # an entry whose request was dropped as oldest
                    taken.append(door.waiting.popleft())
        return taken

    def dropped(self, door: str) -> tuple[int, int]:
        """(refused over the rate, dropped as oldest when the queue was full) for `door`."""
        with self._lock:
            state = self._doors.get(door)
            return (0, 0) if state is None else (state.over_rate, state.overflowed)

    def _door(self, name: str, now: float) -> _DoorIntake:
        door = self._doors.get(name)
        if door is None:
            door = self._doors[name] = _DoorIntake(tokens=float(self._burst), refilled_at=now)
        return door

    def _refill(self, door: _DoorIntake, now: float) -> None:
        elapsed = max(0.0, now - door.refilled_at)
        door.tokens = min(float(self._burst), door.tokens + elapsed * self._rate)
        door.refilled_at = now

    @staticmethod
    def _note_drop(name: str, door: _DoorIntake, now: float) -> None:
        door.unlogged += 1
        if now - door.logged_at < LOG_EVERY_S:
            return
        logger.warning(
            "verify requests for %s: %d dropped since the last report (total %d over the rate,"
            " %d oldest dropped from a full queue)",
            name, door.unlogged, door.over_rate, door.overflowed,
        )  # fmt: skip
        door.unlogged = 0
        door.logged_at = now
