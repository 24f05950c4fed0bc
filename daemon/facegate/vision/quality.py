"""Which detected faces are good enough to embed: size, sharpness and head turn (yaw).

A face that fails the gate is still reported (with the reason: a RefusalReason code and a
sentence), but it is never embedded or matched: fail closed rather than match on a poor view.

Two gates: `QualityGate` for the door's live frames, and `PhotoGate` for photos (enrollment
images, `--refs` references, CLI probes), which are judged at the face's native resolution
so that a tight 96x96 face crop is not refused for the blur its upscaling adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Final

import cv2
import numpy as np

from facegate.vision.align import FACE_PX, eye_transform
from facegate.vision.types import FaceLandmarks, FaceQuality, ImageArray, RefusalReason

#: A refusal: the code for machines and the sentence for people.
Refusal = tuple[RefusalReason, str]


@dataclass(frozen=True, slots=True)
class QualityGate:
    """Faces smaller, blurrier or more turned than this are detected but never embedded.

    max_yaw_deg: the crop is aligned by the two eyes alone, which assumes a frontal face;
    a head turned by yaw shrinks the projected eye distance by cos(yaw), so the crop is
    mis-scaled by 13% at 30 degrees and the far half of the face is foreshortened.

    min_sharpness: how much of the aligned grey face's contrast is fine detail: variance of
    its Laplacian over its own variance. Dividing by the contrast makes it blind to
    exposure, as the embedder is (it standardises every face): a dark or backlit resident
    is not refused as "blurred", a blurred face still is. 0.004 refuses the same one photo
    of 118 that the earlier contrast-dependent measure did at normal exposure; with the face
    darkened to a quarter that measure refused 66 of 118, this one none; a Gaussian blur of
    2 px is refused in 92 of 118 faces, 4 px in all.
    """

    min_face_px: float = 40.0
    min_sharpness: float = 0.004
    max_yaw_deg: float = 30.0

    #: Sharpness is measured on the aligned 160 px crop (see QualityMeter.measure).
    native: ClassVar[bool] = False

    def size_refusal(self, face_px: float) -> Refusal | None:
        """Checked first, on the detection alone: a too-small face costs no landmark run."""
        return _size_refusal(face_px, self.min_face_px)

    def refusal(self, face_px: float, sharpness: float, yaw_deg: float) -> Refusal | None:
        """Why a face with these measures is unusable, or None if it passes."""
        if too_small := self.size_refusal(face_px):
            return too_small
        if not sharpness >= self.min_sharpness:
            measured, limit = format_against(sharpness, self.min_sharpness, places=4)
            text = f"face too blurred (sharpness {measured} < {limit})"
            return RefusalReason.BLURRED, text
        return _yaw_refusal(yaw_deg, self.max_yaw_deg)

    def problem(self, face_px: float, sharpness: float, yaw_deg: float) -> str:
        """refusal's sentence, or "" if the face passes."""
        found = self.refusal(face_px, sharpness, yaw_deg)
        return found[1] if found else ""


@dataclass(frozen=True, slots=True)
class PhotoGate:
    """The gate for photos: enrollment images, `--refs` references and CLI probe images.

    A photo is judged at the face's native resolution: `sharpness` is `native_sharpness`
    (0..1, the share of the face's gradient energy a 1 px blur removes, measured without
    upscaling), about 0.45 for a sharp face at any size. The embedder needs detail, and
    detail is size times sharpness: a 32 px face must be sharp, a 60 px one may be a little
    soft. So the rule is `face_px * sharpness >= min_detail_px` ("detail" in pixels).

    Measured on 96x96 crops of the 5-celebrity photos (faces 34-68 px; docs/enrollment.md):
    of 558 crops of every size and blur (Gaussian 0-3 px) that pass size and yaw, the 475
    with detail >= 14 px hold no impostor pair within L2 0.9 (nearest 1.01); without the
    detail rule 116 impostor pairs were (blurred faces of 32-48 px look alike, down to
    0.47), and 97% of the sharp crops pass. max_yaw_deg is 45 where the door's is 30: a
    one-shot photo is often a three-quarter view, and admitting those added no impostor pair
    (a turned photo makes a weaker template, never a looser one).
    """

    min_face_px: float = 32.0
    min_detail_px: float = 14.0
    max_yaw_deg: float = 45.0

    #: Sharpness is measured at the face's native resolution (QualityMeter.measure_native).
    native: ClassVar[bool] = True

    def size_refusal(self, face_px: float) -> Refusal | None:
        """Checked first, on the detection alone."""
        return _size_refusal(face_px, self.min_face_px)

    def refusal(self, face_px: float, sharpness: float, yaw_deg: float) -> Refusal | None:
        """Why a photo's face with these measures is unusable, or None if it passes."""
        if too_small := self.size_refusal(face_px):
            return too_small
        detail = face_px * sharpness
        if not detail >= self.min_detail_px:
            measured, limit = format_against(detail, self.min_detail_px, places=1)
            text = (
                f"face too blurred for its size (detail {measured} px < {limit} px:"
                f" {face_px:.0f} px wide, native sharpness {sharpness:.2f})"
            )
            return RefusalReason.BLURRED, text
        return _yaw_refusal(yaw_deg, self.max_yaw_deg)

    def problem(self, face_px: float, sharpness: float, yaw_deg: float) -> str:
        """refusal's sentence, or "" if the face passes."""
        found = self.refusal(face_px, sharpness, yaw_deg)
        return found[1] if found else ""


#: Either gate; the engine measures sharpness the way `gate.native` says.
Gate = QualityGate | PhotoGate


def _size_refusal(face_px: float, min_face_px: float) -> Refusal | None:
    # Written as "not >=" so that NaN (a broken measurement) fails: fail closed.
    if not face_px >= min_face_px:
        size, limit = format_against(face_px, min_face_px)
        return RefusalReason.TOO_SMALL, f"face too small ({size} px < {limit} px)"
    return None


def _yaw_refusal(yaw_deg: float, max_yaw_deg: float) -> Refusal | None:
    if not yaw_deg <= max_yaw_deg:
        yaw, limit = format_against(yaw_deg, max_yaw_deg)
        return RefusalReason.TURNED, f"head turned too far ({yaw} deg > {limit} deg)"
    return None


def format_against(value: float, limit: float, places: int = 0) -> tuple[str, str]:
    """`value` and `limit` as text for a refusal that must read true.

    The value gets the fewest decimal places (at least `places`) that keep it on its own
    side of the limit: 59.6 px against a 60 px minimum reads "59.6 px < 60 px", where a
    fixed 0 places read "60 px < 60 px". The limit is printed exactly ("60", "0.004").
    """
    limit_text = repr(float(limit)).removesuffix(".0")
    for shown_places in range(places, places + 12):
        text = f"{value:.{shown_places}f}"  # "nan" and "inf" come out at once
        shown = float(text)
        if shown != limit and (shown < limit) == (value < limit):
            return text, limit_text
    return repr(value), limit_text


#: The gate used where no config says otherwise (CLI evaluate, tests).
DEFAULT_GATE: Final = QualityGate()
#: The photo gate where no config says otherwise (CLI verify/identify images and --refs).
DEFAULT_PHOTO_GATE: Final = PhotoGate()
#: Smallest side of the native-resolution face view: below it the Laplacian of a 3x3
#: kernel sees mostly the border.
MIN_NATIVE_PX: Final = 16


class QualityMeter:
    """Measures aligned faces with reused buffers; one per pipeline thread."""

    def __init__(self) -> None:
        self._gray = np.zeros((FACE_PX, FACE_PX), dtype=np.uint8)
        self._laplacian = np.zeros((FACE_PX, FACE_PX), dtype=np.float32)

    def measure(self, crop: ImageArray, face_px: float, yaw_deg: float, gate: Gate) -> FaceQuality:
        """Size (box width, frame pixels), sharpness (contrast-normalised), yaw."""
        cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY, dst=self._gray)
        cv2.Laplacian(self._gray, cv2.CV_32F, dst=self._laplacian)
        # OpenCV's one-pass mean/std: no temporaries, half the time of ndarray.var().
        _, detail = cv2.meanStdDev(self._laplacian)
        _, contrast = cv2.meanStdDev(self._gray)
        # A flat crop (std < 1 grey level) has no detail to speak of: floor, never divide by 0.
        sharpness = (float(detail[0, 0]) / max(float(contrast[0, 0]), 1.0)) ** 2
        return _quality(face_px, sharpness, yaw_deg, gate)

    def measure_native(
        self, image: ImageArray, landmarks: FaceLandmarks, face_px: float, gate: Gate
    ) -> FaceQuality:
        """Size, native sharpness (see PhotoGate) and yaw of a face in a photo."""
        sharpness = native_sharpness(native_face(image, landmarks))
        return _quality(face_px, sharpness, landmarks.yaw_deg, gate)


def _quality(face_px: float, sharpness: float, yaw_deg: float, gate: Gate) -> FaceQuality:
    refusal = gate.refusal(face_px, sharpness, yaw_deg)
    if refusal is None:
        return FaceQuality(face_px, sharpness, True, "", yaw_deg)
    return FaceQuality(face_px, sharpness, False, refusal[1], yaw_deg, refusal[0])


def native_face(image: ImageArray, landmarks: FaceLandmarks) -> ImageArray:
    """The aligned face in grey at its own resolution: the embedder's crop, but never
    upscaled (a face smaller than the crop gets a smaller view, eyes in the same place)."""
    transform = eye_transform(landmarks).astype(np.float64)
    scale = math.hypot(transform[0, 0], transform[1, 0])
    size = FACE_PX
    if scale > 1.0:
        transform /= scale
        size = max(MIN_NATIVE_PX, round(FACE_PX / scale))
    face = cv2.warpAffine(
        image, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), dtype=np.uint8)


def native_sharpness(gray: ImageArray) -> float:
    """The share of the face's gradient energy that a Gaussian blur of 1 px removes: ~0.45
    sharp at any size (the measure follows the image's own pixels, and faces look alike at
    every scale), ~0.3 after a 1 px blur, ~0.15 after 2 px. Monotonic in blur, unlike the
    Laplacian of an upscaled crop, which JPEG and rounding noise dominate once blurred."""
    face = gray.astype(np.float32)
    before = _gradient_energy(face)
    after = _gradient_energy(cv2.GaussianBlur(face, (0, 0), 1.0))
    # A flat view has no gradient at all: no detail, so 0 (fails every gate, NaN-free).
    return 0.0 if before <= 1e-6 else max(0.0, 1.0 - after / before)


def _gradient_energy(face: np.ndarray) -> float:
    dx = cv2.Sobel(face, cv2.CV_32F, 1, 0)
    dy = cv2.Sobel(face, cv2.CV_32F, 0, 1)
    return float(np.mean(dx * dx + dy * dy))
