"""Physical texture points on one face, measured between frames with pyramidal Lucas-Kanade.

Unlike the mesh (a model's prediction of where a face's points should be), these are
measurements of how the surface in front of the camera moved. Per frame: the face's grey
crop, its corners (Shi-Tomasi, inside the face region: the FaceMesh outline without the
eyes and the mouth, which move on their own) with the FaceMesh depth at each, and the
homography from the previous frame. A pair of frames `L` apart then measures the older
frame's corners directly in the latest crop, after warping the older crop by the chained
homographies: tracks chained frame to frame drift when a face comes nearer (LK's window
assumes translation: on a print a 6 % zoom per frame moved points by 0.3 px per step and
1.8 px over 5 steps, all of it mistaken for relief), and a chained point slides off its
corner; one direct measurement on a pre-warped crop leaves only the surface's own
deviation from a homography.

Only grey crops around the face are kept, never a frame.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from facegate.vision.types import FloatArray, ImageArray

F64 = npt.NDArray[np.float64]
Box = tuple[float, float, float, float]
IntBox = tuple[int, int, int, int]

#: Frames kept: pairs span up to HISTORY - 1 frames.
HISTORY: Final = 6
MAX_CORNERS: Final = 96
#: Corner quality relative to the best corner of the crop (cv2.goodFeaturesToTrack).
CORNER_QUALITY: Final = 0.005
#: Corners at least this share of the IOD apart (and 3 px): spread over the whole face.
CORNER_SPACING_IOD: Final = 0.1
#: A point whose backward track misses its start by more than this share of the IOD (or
#: 0.3 px, whichever is larger) is dropped: occluded, on an edge, or on a moving highlight.
MAX_FB_ERROR_IOD: Final = 0.01
#: The grey crop kept per frame: the face box grown by this on every side, so that a face
#: moving by half its width between frames stays inside.
KEEP_MARGIN: Final = 0.5
#: FaceMesh rings whose insides move on their own (eyes blink and look, lips talk); the
#: face region is the outline, shrunk a little (the background shows at the very edge).
FACE_OVAL: Final = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379,
                    378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127,
                    162, 21, 54, 103, 67, 109)  # fmt: skip
RIGHT_EYE_RING: Final = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160,
                         161, 246)  # fmt: skip
LEFT_EYE_RING: Final = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387,
                        388, 466)  # fmt: skip
LIPS: Final = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
               40, 185)  # fmt: skip
_OVAL_SHRINK: Final = 0.9
_HOLE_GROW: Final = 1.5
#: The face region's rings as index arrays: (mesh indices, scale about their centre, fill).
_RINGS: Final = tuple(
    (np.array(ring), scale, value)
    for ring, scale, value in (
        (FACE_OVAL, _OVAL_SHRINK, 255),
        (RIGHT_EYE_RING, _HOLE_GROW, 0),
        (LEFT_EYE_RING, _HOLE_GROW, 0),
        (LIPS, _HOLE_GROW, 0),
    )
)


@dataclass(frozen=True, slots=True)
class _Flow:
    """Pyramidal Lucas-Kanade settings."""

    window: int
    levels: int
    iterations: int
    epsilon: float

    def track(
        self, before: ImageArray, after: ImageArray, points: FloatArray
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Where `points` (N, 1, 2) of `before` are in `after`, and which were found."""
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.iterations, self.epsilon)
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(
            before, after, points, np.empty_like(points),
            winSize=(self.window, self.window), maxLevel=self.levels, criteria=criteria,
        )  # fmt: skip
        return np.asarray(moved, dtype=np.float32), np.asarray(ok).ravel() == 1


#: Pixels around a masked pixel that cv2.goodFeaturesToTrack reads (blockSize 5).
_GFTT_REACH: Final = 4
#: The frame-to-frame step needs only a guess: few points, a small window, four levels
#: for fast motion.
STEP_CORNERS: Final = 32
_STEP: Final = _Flow(window=9, levels=3, iterations=20, epsilon=0.02)
#: The direct measurement: after the warp only the parallax and what the prediction
#: missed are left: two levels, an 11 px window (LK's cost is its area; 11 px kept the
#: measured noise of 15 px).
_DIRECT: Final = _Flow(window=11, levels=2, iterations=10, epsilon=0.03)


@dataclass(frozen=True, slots=True)
class PointPair:
    """The same physical points in an earlier and the latest frame (frame pixels), with
    the FaceMesh depth at each earlier point (frame pixels; None without a mesh) and, when
    already fitted, the least-squares homography before -> after (frame pixels)."""

    before: FloatArray  # (N, 2)
    after: FloatArray  # (N, 2)
    frames: int  # how many frames apart
    depth: F64 | None
    homography: F64 | None = None


@dataclass(frozen=True, slots=True)
class _Frame:
    grey: ImageArray
    crop: IntBox  # where `grey` is in the frame (x0, y0, x1, y1)
    corners: FloatArray  # (N, 2) frame pixels
    depth: F64 | None  # FaceMesh depth at each corner
    step: F64 | None  # homography from the previous frame (frame pixels); None: unknown


def grown(box: Box, share: float, shape: tuple[int, ...]) -> IntBox:
    """`box` grown by `share` of its size on every side, clipped to an image of `shape`."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * share, (y1 - y0) * share
    h, w = shape[:2]
    return int(max(x0 - dx, 0)), int(max(y0 - dy, 0)), int(min(x1 + dx, w)), int(min(y1 + dy, h))


def face_region(crop: IntBox, box: Box, mesh: FloatArray | None) -> ImageArray:
    """Where corners may be taken, as a mask of the crop: inside the FaceMesh outline
    without eyes and mouth; without a mesh, an ellipse in the middle of the box."""
    x0, y0, x1, y1 = crop
    region = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    offset = np.array([x0, y0], dtype=np.float32)
    if mesh is None:
        bx0, by0, bx1, by1 = box
        centre = (int((bx0 + bx1) / 2 - x0), int((by0 + by1) / 2 - y0))
        axes = (max(int(0.35 * (bx1 - bx0)), 1), max(int(0.4 * (by1 - by0)), 1))
        cv2.ellipse(region, centre, axes, 0, 0, 360, 255, -1)
        return region
    for ring, scale, value in _RINGS:
        points = mesh[ring, :2]
        centre = points.mean(axis=0)
        polygon = np.round(centre + (points - centre) * scale - offset).astype(np.int32)
        cv2.fillPoly(region, [polygon], value)
    return region


def mesh_depth(mesh: FloatArray, points: FloatArray) -> F64:
    """FaceMesh depth (frame pixels, larger is farther) at each point: that of the nearest
    of every other mesh point (about 2 px apart on a face of 50 px: a smooth template is
    all the structure test needs; a true depth map instead changed its F by about 10 %)."""
    sparse = mesh[::2]
    dx = points[:, 0:1] - sparse[None, :, 0]
    dy = points[:, 1:2] - sparse[None, :, 1]
    nearest = np.argmin(dx * dx + dy * dy, axis=1)
    depth: F64 = sparse[nearest, 2].astype(np.float64)
    return depth


def _grey(image: ImageArray, crop: IntBox) -> ImageArray:
    x0, y0, x1, y1 = crop
    return np.asarray(cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), dtype=np.uint8)


def fit_homography(before: F64, after: F64) -> F64 | None:
    """Least-squares homography before -> after (normalised DLT; None if degenerate).
    cv2.findHomography's least squares took 0.25 ms here, this 0.03 ms."""

    def normaliser(points: F64) -> F64:
        centre = points.mean(axis=0)
        spread = float(np.sqrt(((points - centre) ** 2).sum(axis=1)).mean()) or 1.0
        k = math.sqrt(2.0) / spread
        return np.array([[k, 0.0, -k * centre[0]], [0.0, k, -k * centre[1]], [0.0, 0.0, 1.0]])

    t_before, t_after = normaliser(before), normaliser(after)
    a = before @ t_before[:2, :2].T + t_before[:2, 2]
    b = after @ t_after[:2, :2].T + t_after[:2, 2]
    x, y, u, v = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    n = len(a)
    # Rows [-x -y -1 0 0 0 ux uy u] and [0 0 0 -x -y -1 vx vy v], filled in place.
    rows = np.zeros((2 * n, 9))
    top, bottom = rows[:n], rows[n:]
    top[:, 0], top[:, 1], top[:, 2] = -x, -y, -1.0
    bottom[:, 3], bottom[:, 4], bottom[:, 5] = -x, -y, -1.0
    top[:, 6], top[:, 7], top[:, 8] = u * x, u * y, u
    bottom[:, 6], bottom[:, 7], bottom[:, 8] = v * x, v * y, v
    _, vectors = np.linalg.eigh(rows.T @ rows)
    h = np.linalg.solve(t_after, vectors[:, 0].reshape(3, 3) @ t_before)
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return None
    fitted: F64 = h / h[2, 2]
    return fitted


def _affine(before: F64, after: F64) -> F64:
    """Least-squares affine before -> after, as a 3x3 matrix."""
    design = np.column_stack([before, np.ones(len(before))])
    coef, *_ = np.linalg.lstsq(design, after, rcond=None)
    return np.vstack([coef.T, [0.0, 0.0, 1.0]])


def _shift(dx: float, dy: float) -> F64:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


class TextureTracks:
    """The texture of one face track over its last frames. Not thread-safe.

    Each update measures the pair `lag` frames back directly (the stage's pair), and the
    frame-to-frame step is derived from it: one LK measurement per frame instead of a
    step and a pair. The prediction for it is the last step again, after the known chain;
    the direct LK's pyramid absorbs what that misses. A short history (or a lost
    measurement) falls back to tracking the previous frame's strongest corners."""

    def __init__(
        self, lag: int = 3, history: int = HISTORY, max_corners: int = MAX_CORNERS
    ) -> None:
        self._lag = lag
        self._frames: deque[_Frame] = deque(maxlen=max(history, lag + 1))
        self._max = max_corners
        self._iod = 0.0
        self._pair: PointPair | None = None

    @property
    def latest(self) -> tuple[ImageArray, IntBox] | None:
        """The latest grey crop and where it is in the frame (x0, y0, x1, y1)."""
        return (self._frames[0].grey, self._frames[0].crop) if self._frames else None

    @property
    def frames(self) -> int:
        """Consecutive frames held (a lost step starts again from one)."""
        return len(self._frames)

    def update(self, image: ImageArray, box: Box, mesh: FloatArray | None, iod: float) -> None:
        """Add one frame of this face: its crop, corners, their depth, the step homography."""
        self._iod = iod
        crop = grown(box, KEEP_MARGIN, image.shape)
        grey = _grey(image, crop)
        corners = self._corners(grey, crop, box, mesh, iod)
        depth = mesh_depth(mesh, corners) if mesh is not None and len(corners) else None
        new = _Frame(grey, crop, corners, depth, None)
        self._pair = None
        step = self._measure(new) if len(self._frames) >= self._lag else None
        if step is None and self._frames:
            step = self._step(image)
        if self._frames and step is None:
            self._frames.clear()  # lost: the chain of homographies starts again
        self._frames.appendleft(_Frame(grey, crop, corners, depth, step))

    def _chain(self, steps: int) -> F64:
        """Homography from `steps` frames before the latest held frame to it."""
        chain = np.eye(3)
        for k in range(steps):
            step = self._frames[k].step
            assert step is not None  # a lost step clears the history
            chain = chain @ step
        return chain

    def _measure(self, new: _Frame) -> F64 | None:
        """Measure the lag pair into `new` directly; return the step into `new` (None when
        the measurement failed)."""
        old = self._frames[self._lag - 1]
        last_step = self._frames[0].step
        if len(old.corners) < 8 or last_step is None:
            return None
        known = self._chain(self._lag - 1)
        after, good = self._direct(old, new, last_step @ known)
        if good.sum() < 8:
            return None
        before = old.corners[good].astype(np.float64)
        measured = fit_homography(before, after[good].astype(np.float64))
        if measured is None:
            return None
        depth = None if old.depth is None else old.depth[good]
        self._pair = PointPair(old.corners[good], after[good], self._lag, depth, measured)
        return measured @ np.linalg.inv(known)

    def _corners(
        self, grey: ImageArray, crop: IntBox, box: Box, mesh: FloatArray | None, iod: float
    ) -> FloatArray:
        """Corners (frame pixels) in the face region, strongest first; searched in the box
        only (the region lies inside it), a quarter of the crop's cost."""
        inner = grown(box, 0.05, (crop[3], crop[2]))
        x0, y0 = max(inner[0], crop[0]), max(inner[1], crop[1])
        x1, y1 = min(inner[2], crop[2]), min(inner[3], crop[3])
        if x1 - x0 < 8 or y1 - y0 < 8:
            return np.zeros((0, 2), dtype=np.float32)
        region = face_region((x0, y0, x1, y1), box, mesh)
        # Only the region's bounding box and the pixels the detector reads around it (a
        # 3x3 Sobel, a 5x5 block, a 3x3 dilation: 4 px): the same corners, found in half
        # the pixels (its minimum-distance grid cannot miss a neighbour at any offset).
        rx, ry, rw, rh = cv2.boundingRect(region)
        if rw == 0 or rh == 0:
            return np.zeros((0, 2), dtype=np.float32)
        sx0, sy0 = max(rx - _GFTT_REACH, 0), max(ry - _GFTT_REACH, 0)
        sx1, sy1 = min(rx + rw + _GFTT_REACH, x1 - x0), min(ry + rh + _GFTT_REACH, y1 - y0)
        ax, ay = x0 + sx0, y0 + sy0
        found = cv2.goodFeaturesToTrack(
            grey[ay - crop[1] : y0 + sy1 - crop[1], ax - crop[0] : x0 + sx1 - crop[0]],
            maxCorners=self._max, qualityLevel=CORNER_QUALITY,
            minDistance=max(3.0, CORNER_SPACING_IOD * iod),
            mask=region[sy0:sy1, sx0:sx1], blockSize=5,
        )  # fmt: skip
        if found is None:
            return np.zeros((0, 2), dtype=np.float32)
        corners: FloatArray = (found.reshape(-1, 2) + [ax, ay]).astype(np.float32)
        return corners

    def _step(self, image: ImageArray) -> F64 | None:
        """Motion from the previous frame to this one (frame pixels, an affine as a 3x3): the
        previous frame's strongest corners tracked across, least squares, then again
        without the worst fitted points (slips). Only a guess for the direct measurement."""
        last = self._frames[0]
        if len(last.corners) < 8:
            return None
        # This frame cut where the previous crop was: LK needs both in one frame.
        grey = _grey(image, last.crop)
        if grey.shape != last.grey.shape:
            return None  # the crop was clipped differently at the image border
        offset = np.array([last.crop[0], last.crop[1]], dtype=np.float32)
        start = (last.corners[:STEP_CORNERS] - offset).reshape(-1, 1, 2)
        moved, good = _STEP.track(last.grey, grey, start)
        if good.sum() < 8:
            return None
        before = start.reshape(-1, 2)[good].astype(np.float64) + offset
        after = moved.reshape(-1, 2)[good].astype(np.float64) + offset
        step = _affine(before, after)
        miss = np.linalg.norm(before @ step[:2, :2].T + step[:2, 2] - after, axis=1)
        keep = miss <= max(3 * float(np.median(miss)), 0.5)
        return _affine(before[keep], after[keep]) if keep.sum() >= 8 else step

    def pair(self, frames: int) -> PointPair | None:
        """The corners of the frame `frames` back and where they are in the latest frame,
        measured directly between the two; None without such a frame or enough points."""
        if frames == self._lag:
            return self._pair  # measured by update()
        if frames < 1 or frames >= len(self._frames):
            return None
        old = self._frames[frames]
        if len(old.corners) < 8:
            return None
        after, good = self._direct(old, self._frames[0], self._chain(frames))
        if not good.any():
            return None
        depth = None if old.depth is None else old.depth[good]
        return PointPair(old.corners[good], after[good], frames, depth)

    def _direct(
        self, old: _Frame, new: _Frame, guess: F64
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """`old`'s corners tracked into `new`'s crop, from `old`'s crop warped by the frame
        homography `guess`, with a forward-backward check."""
        nx0, ny0, nx1, ny1 = new.crop
        to_new = _shift(-nx0, -ny0) @ guess
        warp = to_new @ _shift(old.crop[0], old.crop[1])
        size = (nx1 - nx0, ny1 - ny0)
        warped = np.asarray(
            cv2.warpPerspective(old.grey, warp, size, flags=cv2.INTER_LINEAR), dtype=np.uint8
        )
        corners = old.corners.reshape(-1, 1, 2).astype(np.float64)
        start = np.asarray(cv2.perspectiveTransform(corners, to_new), dtype=np.float32)
        moved, ok = _DIRECT.track(warped, new.grey, start)
        flat = moved.reshape(-1, 2)
        inside = (
            (flat[:, 0] >= 0) & (flat[:, 1] >= 0) & (flat[:, 0] < size[0]) & (flat[:, 1] < size[1])
        )
        good = ok & inside
        if good.any():
            # Backwards only what was found (LK tracks every point on its own).
            back, ok_back = _DIRECT.track(new.grey, warped, moved[good])
            error = np.linalg.norm((back - start[good]).reshape(-1, 2), axis=1)
            limit = max(0.3, MAX_FB_ERROR_IOD * self._iod)
            good[good] = ok_back & (error < limit)
        after: FloatArray = (flat + [nx0, ny0]).astype(np.float32)
        return after, good
