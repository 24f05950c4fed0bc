"""Is the surface in front of the camera a face or a sheet? Structure from two frames.

The texture points of two frames are compared with three models of what was in front of
the camera (plane plus parallax, linearised around the best homography):

- a **sheet**: one homography moves every point (a flat print, a phone or tablet screen);
- a **developable surface**: the sheet bent on a cylinder, any axis: the relief left after
  the homography is a function of one direction only (paper and screens cannot curve in
  two directions at once: their Gaussian curvature is zero);
- a **relief curved in two directions** (a quadratic relief of any shape times the
  parallax field of any rigid motion): a face, whose forehead, cheeks and chin curve away
  from the nose both across and down.

F statistics compare the models against the noise of the same pair (estimated from what
the richest model leaves): `relief_f` (any relief versus a sheet) and `curved_f` (relief
curved in two directions versus a developable one). A face that moved enough gives both
far above 1; a sheet, flat or bent, gives `curved_f` near 1 whatever it does.

To call a pair *informative* without a face's own parallax, the sheet's motion (its
homography, decomposed with the camera's focal length) is applied to the FaceMesh relief
at the same points: `expected_f` is the `curved_f` a face would have produced under that
motion. A pair where a face would have shown overwhelming two-way curvature and the data
show none is evidence of a sheet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from facegate.vision.liveness.texture import PointPair, fit_homography

F64 = npt.NDArray[np.float64]

#: Fewer tracked points than this and a pair says nothing.
MIN_POINTS: Final = 16
#: Parameters: 8 of the homography, 9 of the quadratic relief times the parallax field.
_H_PARAMS: Final = 8
#: The bent sheet: its relief is a polynomial of these degrees in one direction only (a
#: cylinder of radius r over a face: depth x^2/2r + x^4/8r^3; a cubic when the bend is off
#: the face's centre). Degree 2 alone let a sheet bent to 8 cm leak into the face model.
_SHEET_DEGREES: Final = (2, 3, 4)
_SHEET_PARAMS: Final = 3 * len(_SHEET_DEGREES)
#: Axis directions tried for the developable model (every 7.5 degrees over 180).
_AXES: Final = np.radians(np.arange(0.0, 180.0, 7.5))
#: FaceMesh's depth is deeper than anthropometry (nose to eye-corner depth about 0.6 IOD
#: against 0.45-0.5 measured on people): the face hypothesis uses 0.75 of it.
MESH_RELIEF_SCALE: Final = 0.75
#: A face (or a sheet showing one) is detected only when it faces the camera: a motion
#: hypothesis whose sheet is seen at more than 65 degrees from its normal is not one.
MIN_FACING_COS: Final = math.cos(math.radians(65.0))
_HUBER: Final = 2.5
#: Reweighting steps: one already takes the slipped points out (a second changed no F by
#: more than a few per cent on the training renders).
_IRLS_STEPS: Final = 1


@dataclass(frozen=True, slots=True)
class PairEvidence:
    """What one pair of frames says about the surface; F values are ratios to noise (1:
    nothing beyond noise)."""

    points: int
    frames: int
    motion_iod: float  # median point displacement, IOD
    noise_iod: float  # residual noise per coordinate, IOD
    relief_f: float  # relief of any shape versus one homography
    curved_f: float  # relief curved in two directions versus a developable one
    expected_relief_f: float  # relief_f a face would have given moving as the sheet did
    expected_curved_f: float  # curved_f a face would have given (NaN: unknown)


def _apply(h: F64, points: F64) -> F64:
    x, y = points[:, 0], points[:, 1]
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    return np.column_stack(
        [(h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w, (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w]
    )


def _bases(before: F64, predicted: F64, template: F64 | None) -> tuple[F64, F64, F64]:
    """Design matrices, rows [dx of every point; dy of every point]:

    - the homography's 8 perturbations at the predicted points;
    - the face model: relief times the parallax field of a rigid motion (two translations
      and an approach: A - B x), the relief quadratic (u^2, uv, v^2 at the earlier points)
      plus, when given, the FaceMesh relief there (a nose, brows and cheekbones in their
      places, which no sheet has);
    - the sheet model's monomials of degree 2 to 4 times the same field, from which the
      relief of a sheet bent along any one direction is mixed (`_SHEETS`)."""
    n = len(before)
    x, y = predicted[:, 0:1], predicted[:, 1:2]
    homography = np.zeros((2 * n, _H_PARAMS))
    homography[:n, 0:1], homography[:n, 1:2], homography[:n, 2] = x, y, 1.0
    homography[n:, 3:4], homography[n:, 4:5], homography[n:, 5] = x, y, 1.0
    homography[:n, 6:7], homography[:n, 7:8] = -x * x, -x * y
    homography[n:, 6:7], homography[n:, 7:8] = -x * y, -y * y
    u, v = before[:, 0:1], before[:, 1:2]
    powers_u = u ** np.arange(5)
    powers_v = v ** np.arange(5)
    monomials = powers_u[:, _POWERS_U] * powers_v[:, _POWERS_V]
    quadratic = monomials[:, :3]  # u^2, uv, v^2
    face = quadratic if template is None else np.hstack([quadratic, template[:, None]])
    return homography, _times_field(face, x, y), _times_field(monomials, x, y)


#: The powers of u and v of each sheet monomial (degree-major, then powers of v).
_POWERS_U: Final = np.array([d - j for d in _SHEET_DEGREES for j in range(d + 1)])
_POWERS_V: Final = np.array([j for d in _SHEET_DEGREES for j in range(d + 1)])


def _times_field(reliefs: F64, x: F64, y: F64) -> F64:
    """Each relief column times the 3 parallax field components (A_x, A_y, B): rows dx of
    every point then dy, columns relief-major."""
    n, k = reliefs.shape
    out = np.zeros((2 * n, 3 * k))
    out[:n, 0::3] = reliefs
    out[n:, 1::3] = reliefs
    out[:n, 2::3] = -reliefs * x
    out[n:, 2::3] = -reliefs * y
    return out


def _sheet_maps() -> F64:
    """For each axis angle: the map from the sheet's parameters (u'^2, u'^3, u'^4 along the
    rotated axis u' = u cos + v sin, each times the 3 field components) to the monomial
    products of `_bases` (degree-major, then powers of v, then field)."""
    columns = sum(d + 1 for d in _SHEET_DEGREES)
    maps = np.zeros((len(_AXES), 3 * columns, 3 * len(_SHEET_DEGREES)))
    for index, angle in enumerate(_AXES):
        c, s = math.cos(angle), math.sin(angle)
        row = 0
        for k, d in enumerate(_SHEET_DEGREES):
            for j in range(d + 1):  # (u c + v s)^d = sum binom(d, j) c^(d-j) s^j u^(d-j) v^j
                weight = math.comb(d, j) * c ** (d - j) * s**j
                for field in range(3):
                    maps[index, 3 * (row + j) + field, 3 * k + field] = weight
            row += d + 1
    return maps


_SHEETS: Final = _sheet_maps()
_SHEETS_T: Final = np.ascontiguousarray(_SHEETS.transpose(0, 2, 1))


@dataclass(frozen=True, slots=True)
class _Projector:
    """The fitted models' geometry for one pair: weights, the homography's column space,
    the face relief's, and per sheet axis the projection on that sheet's relief, so that
    any displacement field (the data's, or a face's prediction) is scored cheaply."""

    sqrt_w: F64  # per row
    h_basis: F64  # orthonormal, weighted homography perturbations
    f_basis: F64  # orthonormal, weighted face-relief products with the homography removed
    s_cols: F64  # weighted sheet monomial products with the homography removed
    s_inverse: F64  # per axis: (C'MC)^-1 in that sheet's coordinates (axes, 9, 9)

    def scores(self, residual: F64) -> tuple[float, float, float]:
        """(RSS under a flat sheet, explained by the face model, explained by the best
        bent sheet) for a displacement field."""
        r = residual * self.sqrt_w
        r = r - self.h_basis @ (self.h_basis.T @ r)
        b = self.f_basis.T @ r
        g = _SHEETS_T @ (self.s_cols.T @ r)  # C_a' g for every axis a: (axes, 9)
        # g' C_a (C_a'MC_a)^-1 C_a' g for every axis a
        explained = (np.matmul(self.s_inverse, g[:, :, None])[:, :, 0] * g).sum(axis=1)
        return float(r @ r), float(b @ b), float(explained.max())


def _projector(h_cols: F64, f_cols: F64, s_cols: F64, weights: F64) -> _Projector:
    sqrt_w = np.sqrt(np.concatenate([weights, weights]))
    # One QR of both: its first columns span the homography's perturbations, the rest the
    # face relief's with those removed.
    q, _ = np.linalg.qr(np.hstack([h_cols, f_cols]) * sqrt_w[:, None])
    qh, qf = q[:, : h_cols.shape[1]], q[:, h_cols.shape[1] :]
    s_w = s_cols * sqrt_w[:, None]
    s_perp = s_w - qh @ (qh.T @ s_w)
    gram = s_perp.T @ s_perp
    c_gram_c = _SHEETS_T @ gram @ _SHEETS
    c_gram_c += 1e-12 * np.eye(c_gram_c.shape[-1])
    # The 9x9 inverses, not the 36x36 projections (a quarter of the analysis' cost).
    return _Projector(sqrt_w, qh, qf, s_perp, np.linalg.inv(c_gram_c))


def _median(values: F64) -> float:
    """The (upper) median, by partition: np.median's overhead dominates for 100 values."""
    k = len(values) // 2
    return float(np.partition(values, k)[k])


def _robust_weights(h_cols: F64, f_cols: F64, residual: F64, n: int) -> F64:
    """Huber weights per point from the richest model's residuals: a few points that slid
    (a highlight, an occluding edge) must not decide."""
    design = np.hstack([h_cols, f_cols])
    ridge = 1e-9 * np.eye(design.shape[1])
    weights = np.ones(n)
    for _ in range(_IRLS_STEPS):
        w = np.concatenate([weights, weights])
        weighted = design * w[:, None]
        coef = np.linalg.solve(design.T @ weighted + ridge, weighted.T @ residual)
        left = residual - design @ coef
        per_point = np.hypot(left[:n], left[n:])
        scale = 1.4826 * _median(per_point) + 1e-12
        weights = np.minimum(1.0, _HUBER * scale / np.maximum(per_point, 1e-12))
    return weights


def analyse(
    pair: PointPair,
    iod: float,
    camera: F64,
    *,
    expect_relief_below: float = math.inf,
    expect_motion_above: float = 0.0,
) -> PairEvidence | None:
    """Score one pair of frames; None when too few points were tracked.

    `camera` is the 3x3 intrinsic matrix (frame pixels). When `relief_f` is below
    `expect_relief_below`, the motion above `expect_motion_above` (IOD) and the pair has
    FaceMesh depth, also what a face would have shown under the sheet's motion (a third
    of the analysis' cost: a pair that shows relief, or barely moved, does not need it)."""
    n = len(pair.before)
    if n < MIN_POINTS or iod <= 0:
        return None
    before = pair.before.astype(np.float64)
    after = pair.after.astype(np.float64)
    centre = before.mean(axis=0)
    p, q = (before - centre) / iod, (after - centre) / iod
    h = _in_units(pair.homography, centre, iod) if pair.homography is not None else None
    if h is None:
        h = fit_homography(p, q)
    if h is None:
        return None
    predicted = _apply(h, p)
    residual = np.concatenate([q[:, 0] - predicted[:, 0], q[:, 1] - predicted[:, 1]])
    template = None
    if pair.depth is not None:
        template = (pair.depth - _median(pair.depth)) / iod
    h_cols, f_cols, s_cols = _bases(p, predicted, template)
    relief_params = f_cols.shape[1]
    weights = _robust_weights(h_cols, f_cols, residual, n)
    projector = _projector(h_cols, f_cols, s_cols, weights)
    plane_rss, relief, cylinder = projector.scores(residual)
    dof = 2 * n - _H_PARAMS - relief_params
    noise = max(plane_rss - relief, 1e-18) / dof
    curved_dof = max(relief_params - _SHEET_PARAMS, 1)
    curved = (relief - cylinder) / curved_dof / noise
    relief_f = relief / relief_params / noise
    motion = _median(np.linalg.norm(q - p, axis=1))
    expected_relief = expected_curved = math.nan
    wanted = relief_f < expect_relief_below and motion >= expect_motion_above
    if wanted and pair.depth is not None:
        signal = _expected_signal(before, h, pair.depth, camera, centre, iod, projector)
        expected_relief = 1.0 + signal[0] / relief_params / noise
        expected_curved = 1.0 + signal[1] / curved_dof / noise
    return PairEvidence(
        points=n,
        frames=pair.frames,
        motion_iod=motion,
        noise_iod=math.sqrt(noise),
        relief_f=relief_f,
        curved_f=curved,
        expected_relief_f=expected_relief,
        expected_curved_f=expected_curved,
    )


def _in_units(h_px: F64, centre: F64, iod: float) -> F64 | None:
    """A homography between frame pixels as one between IOD units about `centre` (the
    same least-squares fit, already made when the points were measured)."""
    to_unit = np.array([[1 / iod, 0, -centre[0] / iod], [0, 1 / iod, -centre[1] / iod], [0, 0, 1]])
    h = to_unit @ h_px @ np.linalg.inv(to_unit)
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return None
    scaled: F64 = h / h[2, 2]
    return scaled


def _expected_signal(
    before: F64,
    normalised: F64,
    depth: F64,
    camera: F64,
    centre: F64,
    iod: float,
    projector: _Projector,
) -> tuple[float, float]:
    """The relief signal and its two-way curved part (weighted sums of squares, IOD^2) a
    face with the FaceMesh relief would have shown had it moved as the sheet did; the
    smallest over the homography's physically possible decompositions (the cautious
    one). NaN if there is none. `normalised` is the homography fitted in IOD units about
    `centre`."""
    nothing = (math.nan, math.nan)
    to_unit = np.array([[1 / iod, 0, -centre[0] / iod], [0, 1 / iod, -centre[1] / iod], [0, 0, 1]])
    h_px = np.linalg.solve(to_unit, normalised @ to_unit)
    count, rotations, translations, normals = cv2.decomposeHomographyMat(h_px, camera)
    if count == 0:
        return nothing
    rays = np.linalg.solve(camera, np.vstack([before.T, np.ones(len(before))]))
    moved_rays = np.linalg.solve(camera, h_px @ np.vstack([before.T, np.ones(len(before))]))
    possible = cv2.filterHomographyDecompByVisibleRefpoints(
        rotations, normals,
        (rays[:2] / rays[2]).T.astype(np.float32).reshape(-1, 1, 2),
        (moved_rays[:2] / moved_rays[2]).T.astype(np.float32).reshape(-1, 1, 2),
    )  # fmt: skip
    candidates = range(count) if possible is None else possible.ravel().tolist()
    towards = rays.mean(axis=1)
    towards /= np.linalg.norm(towards)
    offset = MESH_RELIEF_SCALE * (depth - _median(depth)) / float(camera[0, 0])
    predicted = _apply(normalised, (before - centre) / iod)
    best = (math.inf, math.inf)
    for index in candidates:
        normal = np.asarray(normals[int(index)], dtype=np.float64).ravel()
        if normal @ towards < MIN_FACING_COS:
            continue  # a sheet seen edge-on shows no face: not what moved here
        facing = normal @ rays
        if np.any(facing <= 1e-9):
            continue
        points = rays / facing * (1.0 + offset)  # on the plane n.X = 1, then the relief
        rotation = np.asarray(rotations[int(index)], dtype=np.float64)
        moved = rotation @ points + np.asarray(translations[int(index)]).reshape(3, 1)
        image = camera @ moved
        if np.any(image[2] <= 1e-9):
            continue
        face_after = ((image[:2] / image[2]).T - centre) / iod
        # The same homography as the data's: the projector removes what a refit would.
        residual = np.concatenate(
            [face_after[:, 0] - predicted[:, 0], face_after[:, 1] - predicted[:, 1]]
        )
        _, relief, cylinder = projector.scores(residual)
        best = min(best, (relief, relief - cylinder))
    return best if math.isfinite(best[0]) else nothing
