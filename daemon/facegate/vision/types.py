"""Small frozen values that flow from the detector through alignment to the embedder."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

#: The FaceNet models' embedding size. The engine reads the size from the model it loads
#: (Embedder.dim) and a gallery from its arrays; this is only the size of an empty gallery.
EMBEDDING_DIM: Final = 128

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
    """Eye centres in frame pixels, the head's yaw in degrees (0 = facing the camera), the
    landmark model's probability that there is a face at all, and every point it placed.

    `mesh` is (N, 3) float32, read-only: x, y in frame pixels, z depth in the same pixel
    scale (FaceMesh: N = 468, MediaPipe's indices; z relative to the face's centre, smaller
    is nearer the camera).
    """

    right_eye: tuple[float, float]
    left_eye: tuple[float, float]
    yaw_deg: float
    face_score: float
    mesh: FloatArray


class RefusalReason(StrEnum):
    """Why a detected face was not embedded: the machine-readable twin of FaceQuality.reason
    (for events, metrics and liveness; the text is for people and may change)."""

    TOO_SMALL = "too_small"  # box narrower than the gate's min_face_px; no landmarks run
    NOT_A_FACE = "not_a_face"  # the landmark model says the detection holds no face
    NO_EYES = "no_eyes"  # the landmark model placed no usable (finite) eye positions
    BLURRED = "blurred"  # aligned crop below the gate's min_sharpness
    TURNED = "turned"  # head yaw beyond the gate's max_yaw_deg (or not measurable)


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """Why a face may be too poor to embed: size in pixels, sharpness, head turn.

    `refusal` is None exactly when the face is usable; `reason` says the same for people.
    """

    face_px: float
    sharpness: float
    usable: bool
    reason: str = ""
    yaw_deg: float = 0.0
    refusal: RefusalReason | None = None


@dataclass(frozen=True, slots=True)
class FaceEncoding:
    """One detected face in one frame, with everything later stages need.

    `landmarks` is None when the face was refused before the landmark model ran (too
    small); `crop` is the aligned face the embedder saw (or would have seen: blurred and
    turned faces keep theirs), None when refused before alignment; `embedding` is the unit
    vector (Embedder.dim long), None for every refused face. The crop is read-only.
    """

    detection: Detection
    quality: FaceQuality
    embedding: FloatArray | None
    landmarks: FaceLandmarks | None = None
    crop: ImageArray | None = None

    @property
    def refusal(self) -> RefusalReason | None:
        """Why the face was not embedded, or None if it was."""
        return self.quality.refusal


@dataclass(frozen=True, slots=True)
class LivenessEvidence:
    """What the liveness stage holds on one track so far. `live` True: a live face; False:
    a presentation attack; None: undecided (the stage is off, or the evidence is not
    enough yet); `reason` says why for people.

    `score` is the live evidence, 0..1: 0.5 and above is live (1.0: twice the evidence a
    live verdict needs), below undecided, 0 for an attack, NaN when off; `frames` counts
    the track's observations, and `actions` lists what the face did as (observation
    index, action) with action one of
    "turn_left", "turn_right" (the subject's own left and right) and "blink"; `yaw_deg`
    is this observation's signed head yaw (> 0: turned to the subject's left); `scores`
    the named evidence behind the verdict, for events and audits."""

    live: bool | None
    score: float = float("nan")
    frames: int = 0
    reason: str = ""
    method: str = "off"
    yaw_deg: float = float("nan")
    actions: tuple[tuple[int, str], ...] = ()
    scores: tuple[tuple[str, float], ...] = ()


def l2_normalize(vectors: FloatArray) -> FloatArray:
    """Scale rows (or one vector) to unit length; zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
