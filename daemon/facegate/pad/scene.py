"""The door camera, poses and motion of what is held in front of it, and the hallway.

Conventions: camera coordinates x right, y down, z forward (metres); an object's own frame
has the same axes with its face towards the camera (-z). `pose(yaw, pitch, roll)` with yaw
> 0 turning the subject to *their* left (the nose moves to the image's right), pitch > 0
looking up, roll > 0 tilting the head towards the subject's left shoulder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

WIDTH: Final = 640
HEIGHT: Final = 480
FPS: Final = 10.0
#: A Raspberry Pi camera module v2/v3 standard lens: about 62 / 66 degrees horizontally.
HFOV_DEG: Final = 60.0


@dataclass(frozen=True, slots=True)
class Camera:
    """A pinhole camera without distortion."""

    width: int = WIDTH
    height: int = HEIGHT
    hfov_deg: float = HFOV_DEG

    @property
    def focal_px(self) -> float:
        return 0.5 * self.width / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def matrix(self) -> F64:
        f = self.focal_px
        return np.array([[f, 0, self.width / 2], [0, f, self.height / 2], [0, 0, 1]])

    def project(self, x: F64, y: F64, z: F64) -> tuple[F64, F64]:
        """Pixel coordinates of camera-frame points (z > 0)."""
        f = self.focal_px
        return f * x / z + self.width / 2, f * y / z + self.height / 2


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> F64:
    """Object -> camera rotation for a head pose (see the module's conventions)."""
    yaw, pitch, roll = (math.radians(a) for a in (-yaw_deg, pitch_deg, roll_deg))
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch),
        math.cos(roll), math.sin(roll),
    )  # fmt: skip
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    # Looking up: the nose (at -z) moves to -y (up in the image).
    about_x = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    about_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    turned: F64 = about_z @ about_y @ about_x
    return turned


@dataclass(frozen=True, slots=True)
class Pose:
    """Where an object is at one frame: rotation, translation (camera frame, metres)."""

    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    x_m: float
    y_m: float
    z_m: float

    @property
    def rotation(self) -> F64:
        return rotation(self.yaw_deg, self.pitch_deg, self.roll_deg)

    @property
    def translation(self) -> F64:
        return np.array([self.x_m, self.y_m, self.z_m])


class Wobble:
    """A smooth random signal: a few sinusoids with random frequencies and phases, scaled
    so that its peak over the sequence is about `amplitude` (hand drift, head sway)."""

    def __init__(
        self, rng: np.random.Generator, amplitude: float, low_hz: float, high_hz: float
    ) -> None:
        self._freqs = rng.uniform(low_hz, high_hz, 3)
        self._phases = rng.uniform(0, 2 * math.pi, 3)
        self._weights = rng.uniform(0.3, 1.0, 3)
        self._scale = amplitude / float(self._weights.sum())

    def __call__(self, t: float) -> float:
        waves = np.sin(2 * math.pi * self._freqs * t + self._phases)
        return float(self._scale * (self._weights * waves).sum())


def smoothstep(t: float, start: float, end: float) -> float:
    """0 before `start`, 1 after `end`, a smooth ramp between (an approach that slows)."""
    if end <= start:
        return 1.0 if t >= end else 0.0
    s = min(max((t - start) / (end - start), 0.0), 1.0)
    return s * s * (3 - 2 * s)


def hallway(rng: np.random.Generator, camera: Camera = Camera()) -> F32:
    """A static hallway behind the visitor: wall, door frame, posters, floor, vignetting."""
    h, w = camera.height, camera.width
    tone = rng.uniform(0.45, 0.8)
    tint = rng.uniform(0.9, 1.05, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = tone * (1 - 0.15 * yy / h) * (1 - 0.1 * np.abs(xx - w / 2) / w)
    image = np.repeat(wall[:, :, None], 3, axis=2) * tint[None, None, :].astype(np.float32)
    floor = int(h * rng.uniform(0.8, 0.95))
    image[floor:] *= rng.uniform(0.5, 0.8)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.uniform(0, w - 60)), int(rng.uniform(0, h * 0.6))
        pw, ph = int(rng.uniform(40, 160)), int(rng.uniform(40, 180))
        colour = rng.uniform(0.1, 0.95, 3)
        cv2.rectangle(image, (x0, y0), (x0 + pw, y0 + ph), colour.tolist(), -1)
        stripes = rng.uniform(0.05, 0.2)
        for k in range(int(rng.integers(0, 6))):
            yk = y0 + int((k + 1) * ph / 7)
            cv2.line(image, (x0 + 4, yk), (x0 + pw - 4, yk), (colour * (1 - stripes)).tolist(), 2)
    frame_x = int(rng.uniform(0.05, 0.95) * w)
    cv2.rectangle(image, (frame_x, 0), (frame_x + 12, floor), (tone * 0.6,) * 3, -1)
    noise = rng.normal(0, 0.01, (h // 8, w // 8, 3)).astype(np.float32)
    image += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.asarray(np.clip(image, 0, 1), dtype=np.float32)


def expose(
    scene: F32, rng: np.random.Generator, *, noise: float = 0.008, blur_px: float = 0.6
) -> U8:
    """What the sensor gives for a rendered scene (linear-ish 0..1 RGB): optics blur, shot
    and read noise, 8-bit RGB."""
    image = cv2.GaussianBlur(scene, (0, 0), blur_px) if blur_px > 0 else scene
    sigma = cv2.sqrt(np.maximum(image, 0)) * noise + noise / 2
    grain = np.empty_like(image)
    cv2.setRNGSeed(int(rng.integers(2**31)))  # OpenCV's generator: 10x numpy's speed
    cv2.randn(grain, np.zeros(1), np.ones(1))
    noisy = cv2.add(image, cv2.multiply(grain, sigma))
    return np.asarray(cv2.convertScaleAbs(np.maximum(noisy, 0), alpha=255.0, beta=0.5), np.uint8)
