"""What a face did, from its FaceMesh points: blinks and head turns, each with the frame of
the track where it happened (the challenge checks a prompted action against these).

A blink is the eyes' openness dipping below a share of the track's own open-eye baseline
and coming back within a few frames. Openness is the product of two ratios to baseline:
the eye aspect ratio (lid opening over eye width, from the mesh) and the grey-level
contrast inside the eye contours (iris and sclera against skin): on rendered blinks
FaceMesh's lids moved by only 5-10 % of their opening while the contrast fell to 0.5-0.65.
A turn is the signed head yaw moving far enough from where it rested just before, away
from the camera (coming back to face the camera is not a turn); these are recorded in
the evidence. A challenge reads its answer from the yaw samples instead
(`prompted_turn`): a deliberate turn is fast, starts after the prompt and comes back.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np

from facegate.vision.types import FloatArray, ImageArray

#: Six points per eye (corner, two upper lid, corner, two lower lid), MediaPipe indices.
RIGHT_EYE_EAR: Final = (33, 160, 158, 133, 153, 144)
LEFT_EYE_EAR: Final = (362, 385, 387, 263, 373, 380)
#: Mirror-image pairs (subject's right, left) whose summed vector gives the head's yaw.
SYMMETRIC_PAIRS: Final = ((33, 263), (133, 362), (61, 291), (234, 454), (127, 356),
                          (93, 323), (58, 288))  # fmt: skip
_PAIRS: Final = np.array(SYMMETRIC_PAIRS)
RIGHT_EYE_RING: Final = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160,
                         161, 246)  # fmt: skip
LEFT_EYE_RING: Final = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387,
                        388, 466)  # fmt: skip
_EYE_RINGS: Final = (np.array(RIGHT_EYE_RING), np.array(LEFT_EYE_RING))
#: A blink: openness below this share of its open baseline, then back above REOPEN.
BLINK_SHARE: Final = 0.65
REOPEN_SHARE: Final = 0.85
#: A blink lasts 100-400 ms: at most this many frames shut (10 fps and a margin).
MAX_BLINK_FRAMES: Final = 5
#: Frames of open eyes the baseline is taken over (their 75th percentile).
BASELINE_FRAMES: Final = 15
#: A turn: yaw this far (degrees) from its resting value, in one direction. FaceMesh reads
#: a rendered head turned by 25 degrees as 15-17 degrees from rest.
TURN_DEG: Final = 12.0
#: The resting yaw is the median over this many frames before the current one.
REST_FRAMES: Final = 8

#: A prompted turn (`prompted_turn`) is deliberate: it starts REACTION_S after the prompt
#: (human reaction to a shown or spoken instruction), it is fast: the yaw moves by
#: PROMPTED_TURN_DEG within PROMPTED_TURN_S (about 47 degrees a second as FaceMesh reads
#: it, some 70 of real rotation at its gain of about 0.65: a head turned on request
#: turns in 0.3-0.6 s), and it comes back by half of how far it went within RETURN_S.
#: On the training renders (5-celebrity train photos, 60 replayed videos, 60 answering
#: visitors) the fastest 0.3 s of a recorded head looking around, over whole tracks, was
#: below 14 degrees on 113 of 120 track-sides (its 95th percentile: 14.2); the answers'
#: fastest 0.3 s (starting 0.3-2 s after the prompt) was 14 or more in 56 of 59 (median 21).
REACTION_S: Final = (0.3, 2.0)
PROMPTED_TURN_DEG: Final = 14.0
PROMPTED_TURN_S: Final = 0.3
RETURN_S: Final = 2.0

TURN_LEFT: Final = "turn_left"
TURN_RIGHT: Final = "turn_right"
BLINK: Final = "blink"


def eye_aspect_ratio(mesh: FloatArray) -> float:
    """Mean of both eyes' (two lid openings) / (2 x corner distance); NaN if degenerate."""
    ratios = []
    for p1, p2, p3, p4, p5, p6 in (RIGHT_EYE_EAR, LEFT_EYE_EAR):
        width = float(np.linalg.norm(mesh[p1, :2] - mesh[p4, :2]))
        if width <= 1e-6:
            return math.nan
        opening = np.linalg.norm(mesh[p2, :2] - mesh[p6, :2]) + np.linalg.norm(
            mesh[p3, :2] - mesh[p5, :2]
        )
        ratios.append(float(opening) / (2 * width))
    return sum(ratios) / len(ratios)


def eye_contrast(grey: ImageArray, origin: tuple[int, int], mesh: FloatArray) -> float:
    """Mean grey-level standard deviation inside both eye contours, from a grey crop whose
    top-left corner is at `origin` in the frame; NaN if an eye is outside it."""
    spreads = []
    for ring in _EYE_RINGS:
        points = mesh[ring, :2] - origin
        x0, y0 = np.floor(points.min(axis=0)).astype(int)
        x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 1
        if x0 < 0 or y0 < 0 or x1 > grey.shape[1] or y1 > grey.shape[0] or x1 - x0 < 3:
            return math.nan
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.fillPoly(mask, [np.round(points - [x0, y0]).astype(np.int32)], 255)
        _, spread = cv2.meanStdDev(grey[y0:y1, x0:x1], mask=mask)
        spreads.append(float(spread[0, 0]))
    return sum(spreads) / 2


def signed_yaw(mesh: FloatArray) -> float:
    """Head yaw in degrees, > 0 when the subject turns to their own left (the nose moves
    to the image's right for a camera that does not mirror), < 0 to their right."""
    across = (mesh[_PAIRS[:, 1]] - mesh[_PAIRS[:, 0]]).sum(axis=0)
    in_plane = math.hypot(float(across[0]), float(across[1]))
    # The subject's left side moves away (larger z) when they turn to their left.
    return math.degrees(math.atan2(float(across[2]), in_plane))


@dataclass
class ActionDetector:
    """Blinks and turns of one track, as (frame, action) in the order they happened."""

    actions: list[tuple[int, str]] = field(default_factory=list)
    blinks: int = 0
    _open: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=BASELINE_FRAMES))
    _shut_since: int | None = None
    _yaws: deque[float] = field(default_factory=lambda: deque(maxlen=REST_FRAMES))
    _turned: str | None = None  # the turn being held (reported once per turn)

    def observe(
        self, frame: int, mesh: FloatArray, grey: ImageArray, origin: tuple[int, int]
    ) -> float:
        """Take one frame's mesh (and a grey crop around the face, for the eyes); returns
        its signed yaw."""
        self._eyes(frame, eye_aspect_ratio(mesh), eye_contrast(grey, origin, mesh))
        yaw = signed_yaw(mesh)
        self._turn(frame, yaw)
        return yaw

    def _eyes(self, frame: int, ratio: float, contrast: float) -> None:
        if not (math.isfinite(ratio) and math.isfinite(contrast)):
            return
        if len(self._open) < 3:
            self._open.append((ratio, contrast))
            return
        base_ratio = _upper_quartile([r for r, _ in self._open])
        base_contrast = _upper_quartile([c for _, c in self._open])
        openness = ratio / max(base_ratio, 1e-6) * contrast / max(base_contrast, 1e-6)
        if self._shut_since is None:
            if openness < BLINK_SHARE:
                self._shut_since = frame
            else:
                self._open.append((ratio, contrast))
            return
        if openness >= REOPEN_SHARE:
            if frame - self._shut_since <= MAX_BLINK_FRAMES:
                self.blinks += 1
                self.actions.append((self._shut_since, BLINK))
            self._shut_since = None
            self._open.append((ratio, contrast))
        elif frame - self._shut_since > MAX_BLINK_FRAMES:
            self._shut_since = None  # eyes kept shut (or looking down): not a blink
            self._open.clear()

    def _turn(self, frame: int, yaw: float) -> None:
        if len(self._yaws) >= 3:
            rest = _median(self._yaws)
            if self._turned is None and abs(yaw - rest) >= TURN_DEG:
                if abs(yaw) < abs(rest):
                    # Back towards the camera (someone who was looking aside looks at the
                    # door's display): a return, not a turn; rest from here.
                    self._yaws.clear()
                    self._yaws.append(yaw)
                    return
                self._turned = TURN_LEFT if yaw > rest else TURN_RIGHT
                self.actions.append((frame, self._turned))
                return  # the resting window keeps the pre-turn yaw while the turn is held
            side = 1.0 if self._turned == TURN_LEFT else -1.0
            if self._turned is not None and (yaw - rest) * side < TURN_DEG / 2:
                self._turned = None  # back (or past the rest the other way): turn over
        if self._turned is None:
            self._yaws.append(yaw)


@dataclass(frozen=True)
class TurnAnswer:
    """The first deliberate head turn after a prompt: which way, when it got
    PROMPTED_TURN_DEG from where it started, and when it came back (None: not yet, and it
    still may)."""

    action: str
    at: float
    back_at: float | None


def prompted_turn(samples: Sequence[tuple[float, float]], prompt_at: float) -> TurnAnswer | None:
    """The first deliberate turn in a track's (time, signed yaw) samples after a prompt
    shown at `prompt_at`, or None while there is none. Yaws are smoothed by a running
    median of three (a single mis-fitted mesh is not a turn). A turn starts at a sample
    inside the reaction window, reaches PROMPTED_TURN_DEG from it within PROMPTED_TURN_S
    and comes back by half of how far it went within RETURN_S; the first such turn,
    either way, is the answer (a wrong one too). A fast movement that does not come back
    (someone who was looking aside turning to face the display) is no answer either
    way. A recording of a head looking around rarely moves that fast, and then must also
    have moved in the prompted direction, in the window, and come back."""
    finite = [(t, y) for t, y in samples if math.isfinite(y) and t >= prompt_at]
    times = [t for t, _ in finite]
    raw = [y for _, y in finite]
    yaws = [_median(deque(raw[max(0, i - 1) : i + 2])) for i in range(len(raw))]
    first, last = prompt_at + REACTION_S[0], prompt_at + REACTION_S[1]
    # The newest sample has no median yet (its next neighbour is still to come).
    for end in range(len(times) - 1):
        t_end = times[end]
        starts = [
            k for k in range(end)
            if first <= times[k] <= last and t_end - times[k] <= PROMPTED_TURN_S + 1e-6
        ]  # fmt: skip
        for side in (1.0, -1.0):
            if not starts:
                break
            start = min(starts, key=lambda k: side * yaws[k])
            moved = side * (yaws[end] - yaws[start])
            if moved < PROMPTED_TURN_DEG:
                continue
            action = TURN_LEFT if side > 0 else TURN_RIGHT
            peak = moved
            for t, y in zip(times[end + 1 : -1], yaws[end + 1 : -1], strict=True):
                if t - t_end > RETURN_S + 1e-6:
                    break
                away = side * (y - yaws[start])
                peak = max(peak, away)
                if away <= peak / 2:
                    return TurnAnswer(action, t_end, t)
            else:
                if times[-1] - t_end <= RETURN_S + 1e-6:
                    return TurnAnswer(action, t_end, None)  # it may still come back
    return None


def _upper_quartile(values: list[float]) -> float:
    """np.percentile(values, 75) (linear interpolation) to the last bit, without numpy's
    overhead for 15 finite values (it was a fifth of the stage's Python time)."""
    ordered = sorted(values)
    virtual = (len(ordered) - 1) * 0.75
    below = math.floor(virtual)
    gamma = virtual - below
    a, b = ordered[below], ordered[min(below + 1, len(ordered) - 1)]
    diff = b - a
    # numpy's _lerp: from the nearer end
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def _median(values: deque[float]) -> float:
    """np.median of a few floats to the last bit (NaN if any is NaN)."""
    ordered = sorted(values)
    if any(math.isnan(v) for v in ordered):
        return math.nan
    half = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[half]
    return (ordered[half - 1] + ordered[half]) / 2
