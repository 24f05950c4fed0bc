"""Which detected faces are good enough to embed: size, sharpness and head turn (yaw).

A face that fails the gate is still reported (with the reason: a RefusalReason code and a
sentence), but it is never embedded or matched: fail closed rather than match on a poor view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

from facegate.vision.align import FACE_PX
from facegate.vision.types import FaceQuality, ImageArray, RefusalReason

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

    def size_refusal(self, face_px: float) -> Refusal | None:
        """Checked first, on the detection alone: a too-small face costs no landmark run."""
        # Written as "not >=" so that NaN (a broken measurement) fails: fail closed.
        if not face_px >= self.min_face_px:
            size, limit = format_against(face_px, self.min_face_px)
            text = f"face too small ({size} px < {limit} px)"
            return RefusalReason.TOO_SMALL, text
        return None

    def refusal(self, face_px: float, sharpness: float, yaw_deg: float) -> Refusal | None:
        """Why a face with these measures is unusable, or None if it passes."""
        if too_small := self.size_refusal(face_px):
            return too_small
        if not sharpness >= self.min_sharpness:
            measured, limit = format_against(sharpness, self.min_sharpness, places=4)
            text = f"face too blurred (sharpness {measured} < {limit})"
            return RefusalReason.BLURRED, text
        if not yaw_deg <= self.max_yaw_deg:
            yaw, limit = format_against(yaw_deg, self.max_yaw_deg)
            text = f"head turned too far ({yaw} deg > {limit} deg)"
            return RefusalReason.TURNED, text
        return None

    def problem(self, face_px: float, sharpness: float, yaw_deg: float) -> str:
        """refusal's sentence, or "" if the face passes."""
        found = self.refusal(face_px, sharpness, yaw_deg)
        return found[1] if found else ""


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


#: The gate used where no config says otherwise (CLI verify/identify/evaluate, tests).
DEFAULT_GATE: Final = QualityGate()


class QualityMeter:
    """Measures aligned faces with reused buffers; one per pipeline thread."""

    def __init__(self) -> None:
        self._gray = np.zeros((FACE_PX, FACE_PX), dtype=np.uint8)
        self._laplacian = np.zeros((FACE_PX, FACE_PX), dtype=np.float32)

    def measure(
        self, crop: ImageArray, face_px: float, yaw_deg: float, gate: QualityGate
    ) -> FaceQuality:
        """Size (box width, frame pixels), sharpness (contrast-normalised), yaw."""
        cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY, dst=self._gray)
        cv2.Laplacian(self._gray, cv2.CV_32F, dst=self._laplacian)
        # OpenCV's one-pass mean/std: no temporaries, half the time of ndarray.var().
        _, detail = cv2.meanStdDev(self._laplacian)
        _, contrast = cv2.meanStdDev(self._gray)
        # A flat crop (std < 1 grey level) has no detail to speak of: floor, never divide by 0.
        sharpness = (float(detail[0, 0]) / max(float(contrast[0, 0]), 1.0)) ** 2
        refusal = gate.refusal(face_px, sharpness, yaw_deg)
        if refusal is None:
            return FaceQuality(face_px, sharpness, True, "", yaw_deg)
        return FaceQuality(face_px, sharpness, False, refusal[1], yaw_deg, refusal[0])
