"""Textured surfaces held in front of the camera: a flat sheet (print, screen), a sheet bent
on a cylinder (a curved print), and a head as a height field built from the FaceMesh mesh.

Each maps texture coordinates (u, v) in texels to points of its own frame in metres (face
towards -z) and gives unit normals there. Texture and alpha are float32, 0..1.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Final

import cv2
import numpy as np

from facegate.pad.scene import F32, F64

Arrays3 = tuple[F64, F64, F64]

#: FaceMesh indices of the face's outline (MediaPipe FACE_OVAL), in order around the face.
FACE_OVAL: Final = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379,
                    378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127,
                    162, 21, 54, 103, 67, 109)  # fmt: skip


class Surface(ABC):
    """A textured surface; `centre` (texels) is the origin of its frame."""

    #: Fixed-point steps the renderer needs to invert the projection (0: a homography).
    newton_steps: int = 4

    def __init__(self, texture: F32, alpha: F32, metres_per_texel: float, centre: F64) -> None:
        self.texture = texture
        self.alpha = alpha
        self.metres_per_texel = metres_per_texel
        self.centre = centre

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in texels."""
        return self.texture.shape[1], self.texture.shape[0]

    def _flat(self, u: F64, v: F64) -> tuple[F64, F64]:
        m = self.metres_per_texel
        return (u - self.centre[0]) * m, (v - self.centre[1]) * m

    @abstractmethod
    def points(self, u: F64, v: F64) -> Arrays3:
        """Object-frame points (metres) at texture coordinates."""

    @abstractmethod
    def normals(self, u: F64, v: F64) -> Arrays3:
        """Unit object-frame normals, pointing to the viewer's side (-z when frontal)."""


class Sheet(Surface):
    """A flat sheet: paper or a screen."""

    newton_steps = 0

    def points(self, u: F64, v: F64) -> Arrays3:
        x, y = self._flat(u, v)
        return x, y, np.zeros_like(x)

    def normals(self, u: F64, v: F64) -> Arrays3:
        zeros = np.zeros_like(u)
        return zeros, zeros, zeros - 1.0


class BentSheet(Surface):
    """Paper bent on a cylinder of `radius_m`; the axis lies in the sheet at `axis_deg` from
    its vertical; convex: the sides curve away from the camera (around a head)."""

    def __init__(
        self,
        texture: F32,
        alpha: F32,
        metres_per_texel: float,
        centre: F64,
        *,
        radius_m: float,
        axis_deg: float,
        convex: bool = True,
    ) -> None:
        super().__init__(texture, alpha, metres_per_texel, centre)
        self.radius_m = radius_m
        self._cos, self._sin = math.cos(math.radians(axis_deg)), math.sin(math.radians(axis_deg))
        self._sign = 1.0 if convex else -1.0

    def _across(self, u: F64, v: F64) -> tuple[F64, F64]:
        x, y = self._flat(u, v)
        return x * self._cos + y * self._sin, -x * self._sin + y * self._cos

    def points(self, u: F64, v: F64) -> Arrays3:
        s, w = self._across(u, v)
        theta = s / self.radius_m
        s_bent = self.radius_m * np.sin(theta)
        depth = self._sign * self.radius_m * (1 - np.cos(theta))
        return s_bent * self._cos - w * self._sin, s_bent * self._sin + w * self._cos, depth

    def normals(self, u: F64, v: F64) -> Arrays3:
        s, _ = self._across(u, v)
        theta = s / self.radius_m
        n_s = self._sign * np.sin(theta)
        return n_s * self._cos, n_s * self._sin, -np.cos(theta)


class HeightField(Surface):
    """A head: the texture's pixels pushed back by `depth` (texels, + away from the camera)."""

    newton_steps = 8

    def __init__(
        self, texture: F32, alpha: F32, metres_per_texel: float, centre: F64, depth: F32
    ) -> None:
        super().__init__(texture, alpha, metres_per_texel, centre)
        self.depth = depth
        dz_du = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3) / 8
        dz_dv = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3) / 8
        norm = np.sqrt(dz_du**2 + dz_dv**2 + 1)
        # The surface z = D(u, v) faces the camera (-z): normal (Du, Dv, -1) / |.|
        self._normal_map = np.dstack([dz_du / norm, dz_dv / norm, -1 / norm]).astype(np.float32)

    def _sample(self, image: F32, u: F64, v: F64) -> F32:
        out = cv2.remap(
            image, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        return np.asarray(out, dtype=np.float32)

    def points(self, u: F64, v: F64) -> Arrays3:
        x, y = self._flat(u, v)
        z = self._sample(self.depth, u, v).astype(np.float64) * self.metres_per_texel
        return x, y, z

    def normals(self, u: F64, v: F64) -> Arrays3:
        n = self._sample(self._normal_map, u, v).astype(np.float64)
        return n[..., 0], n[..., 1], n[..., 2]


def head_depth(mesh: F32, shape: tuple[int, int], eye_z: float) -> tuple[F32, F32]:
    """Depth map (texels, + away from the camera, 0 at the eyes' depth) and head mask for a
    photo of `shape` (h, w) from its FaceMesh points (photo pixels, z as FaceMesh gives it).

    A thin-plate spline through the mesh, with two rings outside the face outline that bend
    back like the sides of a head (hair, ears). The mask is an ellipse around the outline,
    larger upwards for the hair, plus the neck."""
    oval = mesh[list(FACE_OVAL)]
    centre = mesh[:, :2].mean(axis=0)
    radial = oval[:, :2] - centre
    iod = float(np.linalg.norm(mesh[263, :2] - mesh[33, :2]))
    # (how far out from the outline, how far back in IODs): hair, then the sides of the head.
    rings = [
        np.column_stack([centre + radial * grow, oval[:, 2] + back * iod])
        for grow, back in ((1.25, 0.25), (1.6, 0.8), (2.2, 1.6))
    ]
    controls = np.vstack([mesh[:, :3], *rings])
    depth = _thin_plate(controls[:, :2], controls[:, 2] - eye_z, shape)
    # Far from the control points (the neck's rectangle down to the photo's edge) the
    # spline extrapolates without bound: no part of a head is more than 2 IODs behind
    # the eyes, nothing nearer than the mesh's own nose.
    nearest = float(mesh[:, 2].min() - eye_z)
    depth = np.clip(depth, nearest, 2.0 * iod)
    mask = np.zeros(shape, dtype=np.uint8)
    (cx, cy), (ax_w, ax_h), angle = cv2.fitEllipse(oval[:, :2].astype(np.float32))
    cv2.ellipse(
        mask, ((cx, cy - 0.08 * ax_h), (ax_w * 1.3, ax_h * 1.3), angle), 255, -1
    )  # hair above and around
    chin = mesh[152, :2]
    neck_w = 0.55 * ax_w
    cv2.rectangle(
        mask, (int(chin[0] - neck_w / 2), int(chin[1] - 0.1 * ax_h)),
        (int(chin[0] + neck_w / 2), shape[0]), 255, -1,
    )  # fmt: skip
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), max(1.0, 0.02 * ax_w))
    return depth.astype(np.float32), soft.astype(np.float32)


def _tps_kernel(a: F64, b: F64) -> F64:
    """The thin-plate kernel r^2 log r between every row of `a` and every row of `b`.

    Squared distances by |a|^2 + |b|^2 - 2ab (one matrix product, no (len a, len b, 2)
    temporary): the dense grid against ~580 control points took 1.6 CPU-s a photo."""
    d2: F64 = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    np.maximum(d2, 0.0, out=d2)
    log = np.zeros_like(d2)
    np.log(d2, out=log, where=d2 > 0.0)  # r -> 0: r^2 log r -> 0
    d2 *= log
    d2 *= 0.5
    return d2


def _thin_plate(points: F64 | F32, values: F64 | F32, shape: tuple[int, int]) -> F64:
    """A smoothed thin-plate spline through scattered values, on a grid of `shape`, evaluated
    on a 1/4 grid and resized (the depth of a head is smooth)."""
    p = np.asarray(points, dtype=np.float64)
    scale = float(np.ptp(p, axis=0).max()) or 1.0
    q = (p - p.mean(axis=0)) / scale
    n = len(q)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_kernel(q, q) + 1e-4 * np.eye(n)
    system[:n, n] = 1
    system[:n, n + 1 :] = q
    system[n, :n] = 1
    system[n + 1 :, :n] = q.T
    rhs = np.concatenate([np.asarray(values, dtype=np.float64), np.zeros(3)])
    coef = np.linalg.solve(system, rhs)
    h, w = shape
    gh, gw = max(h // 4, 2), max(w // 4, 2)
    gy, gx = np.mgrid[0:gh, 0:gw]
    grid = np.column_stack([(gx.ravel() + 0.5) * w / gw, (gy.ravel() + 0.5) * h / gh])
    g = (grid - p.mean(axis=0)) / scale
    chunks = np.array_split(g, max(1, len(g) // 4096))
    coarse: F64 = np.concatenate([_tps_kernel(rows, q) @ coef[:n] for rows in chunks])
    coarse += coef[n] + g @ coef[n + 1 :]
    resized = cv2.resize(coarse.reshape(gh, gw), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.asarray(resized, dtype=np.float64)
