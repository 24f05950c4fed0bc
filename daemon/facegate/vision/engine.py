"""The face engine: detect -> landmarks -> align -> quality gate -> embed."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Final, Literal

from facegate.errors import BadInputError, ManyFacesError, NoFaceError
from facegate.vision.align import FACE_PX, LEFT_EYE_XY, RIGHT_EYE_XY, Aligner
from facegate.vision.detector import FULL_RANGE, SHORT_RANGE, BlazeFaceDetector
from facegate.vision.embedder import FaceNetEmbedder, file_sha256
from facegate.vision.landmarks import (
    LEFT_EYE,
    MESH_PX,
    MIN_FACE_SCORE,
    RIGHT_EYE,
    ROI_SCALE,
    FaceMeshLandmarker,
)
from facegate.vision.quality import DEFAULT_GATE, QualityGate, QualityMeter
from facegate.vision.runtime import runtime_name
from facegate.vision.types import (
    Detection,
    FaceEncoding,
    FaceLandmarks,
    FaceQuality,
    FloatArray,
    ImageArray,
)

logger = logging.getLogger(__name__)

EmbedderKind = Literal["int8", "float32"]

#: Where scripts/install-pi.sh puts the models on a device.
INSTALLED_MODELS_DIR: Final = Path("/opt/facegate/models")

MODEL_FILES: Final = {
    "detector_short": "blazeface_short_range.tflite",
    "detector_full": "blazeface_full_range.tflite",
    "landmarks": "face_landmark.tflite",
    "int8": "facenet_int8.tflite",
    "float32": "facenet_float32.tflite",
}


class FaceEngine:
    """Owns the TFLite models; not thread-safe (one engine per pipeline thread)."""

    def __init__(
        self,
        detector: BlazeFaceDetector,
        landmarker: FaceMeshLandmarker,
        embedder: FaceNetEmbedder,
        fallback_detector: BlazeFaceDetector | None = None,
        gate: QualityGate = DEFAULT_GATE,
    ) -> None:
        self.detector = detector
        self.fallback_detector = fallback_detector
        self.landmarker = landmarker
        self.embedder = embedder
        self.gate = gate
        self.fingerprint = _combine(embedder.fingerprint, landmarker.fingerprint)
        self.runtime = runtime_name()
        self._aligner = Aligner()
        self._meter = QualityMeter()

    @classmethod
    def load(
        cls,
        models_dir: Path,
        embedder: EmbedderKind = "int8",
        threads: int = 2,
        gate: QualityGate = DEFAULT_GATE,
        full_range_fallback: bool = True,
    ) -> FaceEngine:
        """Load the detector(s) and the chosen embedder from a `make models` output folder."""
        models_dir = Path(models_dir)
        # The detector runs on every frame: 2 threads take it from ~1.7 to ~1.3 ms per invoke.
        detector = BlazeFaceDetector(
            models_dir / MODEL_FILES["detector_short"], SHORT_RANGE, threads
        )
        fallback = (
            BlazeFaceDetector(models_dir / MODEL_FILES["detector_full"], FULL_RANGE)
            if full_range_fallback
            else None
        )
        landmarker = FaceMeshLandmarker(models_dir / MODEL_FILES["landmarks"], threads)
        net = FaceNetEmbedder(models_dir / MODEL_FILES[embedder], threads)
        logger.info("face engine ready: %s embedder on %s", embedder, runtime_name())
        return cls(detector, landmarker, net, fallback, gate)

    def detect(self, image: ImageArray) -> list[Detection]:
        """Faces in the frame, largest first. Falls back to the full-range model (faces
        farther than ~2 m) only when the short-range model finds nothing."""
        faces = self.detector.detect(image)
        if not faces and self.fallback_detector is not None:
            faces = self.fallback_detector.detect(image)
        return sorted(faces, key=lambda d: d.width, reverse=True)

    def encode_detection(self, image: ImageArray, detection: Detection) -> FaceEncoding:
        """Locate landmarks, align, gate and (if usable) embed one detected face."""
        if too_small := self.gate.size_problem(detection.width):
            return _refused(detection, too_small)
        landmarks = self.landmarker.locate(image, detection)
        if problem := _landmark_problem(landmarks):
            return _refused(detection, problem)
        crop = self._aligner.align(image, landmarks)
        quality = self._meter.measure(crop, detection.width, landmarks.yaw_deg, self.gate)
        embedding: FloatArray | None = self.embedder.embed(crop) if quality.usable else None
        return FaceEncoding(detection, quality, embedding)

    def encode(self, image: ImageArray) -> list[FaceEncoding]:
        """Every face in the frame, largest first; `embedding` is None for unusable faces."""
        return [self.encode_detection(image, d) for d in self.detect(image)]

    def encode_one(self, image: ImageArray, source: str | Path) -> FaceEncoding:
        """Exactly one usable face, or an error naming `source` and what is wrong."""
        faces = self.encode(image)
        if not faces:
            raise NoFaceError(source, "no face found")
        usable = [f for f in faces if f.embedding is not None]
        if len(usable) > 1:
            raise ManyFacesError(source, f"{len(usable)} faces found; exactly one is required")
        if not usable:
            raise BadInputError(source, faces[0].quality.reason)
        return usable[0]


def _landmark_problem(landmarks: FaceLandmarks) -> str:
    """Why these landmarks cannot place a face, or "". Written so that NaN fails."""
    if not landmarks.face_score >= MIN_FACE_SCORE:
        return (
            f"not a face to the landmark model (score {landmarks.face_score:.3f} "
            f"< {MIN_FACE_SCORE})"
        )
    if not all(math.isfinite(v) for v in (*landmarks.right_eye, *landmarks.left_eye)):
        return "the landmark model gave no usable eye positions"
    return ""


def _refused(detection: Detection, reason: str) -> FaceEncoding:
    """A detection turned away before it was measured: sharpness and yaw unknown (NaN)."""
    return FaceEncoding(
        detection, FaceQuality(detection.width, math.nan, False, reason, math.nan), None
    )


def pipeline_fingerprint(models_dir: Path, embedder: EmbedderKind) -> str:
    """FaceEngine.fingerprint from the model files alone, without loading them."""
    return _combine(
        file_sha256(Path(models_dir) / MODEL_FILES[embedder]),
        file_sha256(Path(models_dir) / MODEL_FILES["landmarks"]),
    )


def alignment_parameters() -> str:
    """Every constant that decides where a face lands in the embedder's crop."""
    return repr((FACE_PX, RIGHT_EYE_XY, LEFT_EYE_XY, MESH_PX, ROI_SCALE, RIGHT_EYE, LEFT_EYE))


def _combine(embedder_sha256: str, landmarks_sha256: str) -> str:
    """Embeddings are comparable only when the embedder, the landmark model that places the
    eyes and the alignment are all the same: a gallery made with any other combination must
    be re-enrolled, and this digest is how it is recognised."""
    parts = f"{embedder_sha256}:{landmarks_sha256}:{alignment_parameters()}"
    return hashlib.sha256(parts.encode()).hexdigest()


def default_models_dir() -> Path:
    """$FACEGATE_MODELS, else the checkout's models/ (development), else the installed one."""
    env = os.environ.get("FACEGATE_MODELS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[3] / "models"
    if (checkout / MODEL_FILES["int8"]).is_file():
        return checkout
    return INSTALLED_MODELS_DIR
