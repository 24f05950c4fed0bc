"""Small frozen values that flow from the detector through alignment to the embedder."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EMBEDDING_DIM = 128

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Detection:
    """One face in a frame: box (x0, y0, x1, y1) and 6 keypoints (x, y) in frame pixels.

    Keypoint order is BlazeFace's: 0 subject's right eye, 1 left eye, 2 nose tip, 3 mouth,
    4 right ear tragion, 5 left ear tragion.
    """

    box: tuple[float, float, float, float]
    keypoints: FloatArray
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.keypoints[1] - self.keypoints[0]))


@dataclass(frozen=True, slots=True)
class FaceLandmarks:
    """Eye centres in frame pixels, the head's yaw in degrees (0 = facing the camera) and
    the landmark model's probability that there is a face at all."""

    right_eye: tuple[float, float]
    left_eye: tuple[float, float]
    yaw_deg: float
    face_score: float


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """Why a face may be too poor to embed: size in pixels, sharpness, head turn."""

    face_px: float
    sharpness: float
    usable: bool
    reason: str = ""
    yaw_deg: float = 0.0


@dataclass(frozen=True, slots=True)
class FaceEncoding:
    """A detected face, its quality and (when usable) its unit-length 128-D embedding."""

    detection: Detection
    quality: FaceQuality
    embedding: FloatArray | None


def l2_normalize(vectors: FloatArray) -> FloatArray:
    """Scale rows (or one vector) to unit length; zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
