"""Render a posed surface into a frame by inverse mapping.

For every frame pixel the renderer finds the texture coordinate that projects there: a
homography fitted to a coarse grid of projected surface points gives the first guess, and
a few fixed-point steps correct it for the surface's relief (exact for a sheet after zero
steps). The texture is then sampled with `cv2.remap` from a pyramid level matching the
scale, so a far sheet is filtered rather than aliased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

from facegate.pad.scene import F32, F64, Camera, Pose
from facegate.pad.surfaces import Surface

_GRID: Final = 24
#: A pixel whose texture coordinate still misses it by more than this after the steps is
#: left to what is behind (steep relief: the side of a nose as the head turns).
_MAX_RESIDUAL_PX: Final = 2.0
#: Fixed-point steps move this share of the way: a full step oscillates on steep relief.
_DAMPING: Final = 0.8


@dataclass(frozen=True, slots=True)
class Raster:
    """Where a surface lands in the frame: the box (x0, y0, w, h) and per box pixel its
    texture coordinates, coverage and camera-frame point and normal."""

    x0: int
    y0: int
    u: F64
    v: F64
    valid: F32  # 0..1 coverage (alpha times the pixel found a texture coordinate)
    points: tuple[F64, F64, F64]
    normals: tuple[F64, F64, F64]

    @property
    def shape(self) -> tuple[int, int]:
        return self.u.shape[0], self.u.shape[1]


def _apply(h: F64, x: F64, y: F64) -> tuple[F64, F64]:
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    return (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w, (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w


def _to_camera(surface: Surface, pose: Pose, u: F64, v: F64) -> tuple[F64, F64, F64]:
    x, y, z = surface.points(u, v)
    r, t = pose.rotation, pose.translation
    return (
        r[0, 0] * x + r[0, 1] * y + r[0, 2] * z + t[0],
        r[1, 0] * x + r[1, 1] * y + r[1, 2] * z + t[1],
        r[2, 0] * x + r[2, 1] * y + r[2, 2] * z + t[2],
    )


def rasterize(surface: Surface, pose: Pose, camera: Camera) -> Raster | None:
    """The surface's footprint in the frame, or None when nothing of it is in view."""
    tw, th = surface.size
    ys, xs = np.nonzero(surface.alpha > 0.01)
    if len(xs) == 0:
        return None
    gu, gv = np.meshgrid(
        np.linspace(xs.min(), xs.max(), _GRID), np.linspace(ys.min(), ys.max(), _GRID)
    )
    cx, cy, cz = _to_camera(surface, pose, gu, gv)
    if np.any(cz < 0.05):
        return None  # behind or touching the lens: never in our trajectories
    px, py = camera.project(cx, cy, cz)
    x0, x1 = int(max(np.floor(px.min()) - 2, 0)), int(min(np.ceil(px.max()) + 2, camera.width))
    y0, y1 = int(max(np.floor(py.min()) - 2, 0)), int(min(np.ceil(py.max()) + 2, camera.height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    found_uv, _ = cv2.findHomography(
        np.column_stack([px.ravel(), py.ravel()]), np.column_stack([gu.ravel(), gv.ravel()]), 0
    )
    to_uv = np.asarray(found_uv, dtype=np.float64)
    fy, fx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    u, v = _apply(to_uv, fx, fy)
    target_u, target_v = u, v
    for _ in range(surface.newton_steps):
        qx, qy = camera.project(*_to_camera(surface, pose, u, v))
        back_u, back_v = _apply(to_uv, qx, qy)
        u, v = u + _DAMPING * (target_u - back_u), v + _DAMPING * (target_v - back_v)
    points = _to_camera(surface, pose, u, v)
    qx, qy = camera.project(*points)
    found = (np.hypot(qx - fx, qy - fy) < _MAX_RESIDUAL_PX) & (points[2] > 0)
    inside = (u >= 0) & (u <= tw - 1) & (v >= 0) & (v <= th - 1)
    alpha = cv2.remap(
        surface.alpha, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )  # fmt: skip
    valid = (alpha * (found & inside)).astype(np.float32)
    nx, ny, nz = surface.normals(u, v)
    r = pose.rotation
    normals = (
        r[0, 0] * nx + r[0, 1] * ny + r[0, 2] * nz,
        r[1, 0] * nx + r[1, 1] * ny + r[1, 2] * nz,
        r[2, 0] * nx + r[2, 1] * ny + r[2, 2] * nz,
    )
    return Raster(x0, y0, u, v, valid, points, normals)


def sample(texture: F32, raster: Raster) -> F32:
    """The texture's colours at the raster's coordinates, blended from the two pyramid
    levels around the scale (trilinear: filtered, not aliased, and no jump in sharpness
    when the surface comes nearer, which a camera's optics would never show)."""
    du = np.gradient(raster.u, axis=1) if raster.u.shape[1] > 1 else np.ones_like(raster.u)
    dv = np.gradient(raster.v, axis=0) if raster.v.shape[0] > 1 else np.ones_like(raster.v)
    texels_per_px = float(np.median(np.sqrt(np.abs(du * dv))))
    level = float(np.clip(math.log2(max(texels_per_px, 1.0)), 0, 6))
    low = int(level)
    mix = level - low
    colour = _level(texture, raster, low)
    if mix > 0.01:
        colour = (1 - mix) * colour + mix * _level(texture, raster, low + 1)
    return colour


def _level(texture: F32, raster: Raster, level: int) -> F32:
    image = texture
    for _ in range(level):
        image = np.asarray(cv2.pyrDown(image), dtype=np.float32)
    scale = 2.0**level
    u = ((raster.u + 0.5) / scale - 0.5).astype(np.float32)
    v = ((raster.v + 0.5) / scale - 0.5).astype(np.float32)
    out = cv2.remap(image, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.asarray(out, dtype=np.float32)


def composite(canvas: F32, raster: Raster, colour: F32) -> None:
    """Blend `colour` (the raster's shape, 3 channels) over the canvas by its coverage."""
    h, w = raster.shape
    box = canvas[raster.y0 : raster.y0 + h, raster.x0 : raster.x0 + w]
    a = raster.valid[..., None]
    box[...] = a * colour + (1 - a) * box


def lambert(raster: Raster, light: F64, ambient: float) -> F64:
    """Diffuse shading factor of the raster's surface for a distant light direction (unit,
    from the surface towards the light, camera frame)."""
    nx, ny, nz = raster.normals
    lit = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, None)
    shade: F64 = ambient + (1 - ambient) * lit
    return shade


def specular(raster: Raster, lamp: F64, shininess: float) -> F64:
    """Blinn-Phong highlight of a point lamp (camera-frame position, metres) seen by the
    camera at the origin: glare on glossy paper or a screen's glass."""
    px, py, pz = raster.points
    to_lamp = np.stack([lamp[0] - px, lamp[1] - py, lamp[2] - pz])
    to_lamp /= np.linalg.norm(to_lamp, axis=0, keepdims=True)
    to_eye = -np.stack([px, py, pz])
    to_eye /= np.linalg.norm(to_eye, axis=0, keepdims=True)
    half = to_lamp + to_eye
    half /= np.linalg.norm(half, axis=0, keepdims=True)
    n = np.stack(raster.normals)
    cosine = np.clip((n * half).sum(axis=0), 0, None)
    glare: F64 = cosine**shininess
    return glare
