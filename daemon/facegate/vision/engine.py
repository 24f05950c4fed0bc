"""The face engine: detect -> landmarks -> align -> quality gate -> embed, plus the
liveness slot. Each stage is an interface of vision/stages.py chosen by its config `type`
in the registries below: adding a model is one class plus one line in its registry.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal, Protocol, TypeVar

from facegate.errors import BadInputError, ManyFacesError, ModelError, NoFaceError
from facegate.paths import INSTALLED_MODELS_DIR
from facegate.vision.align import FACE_PX, LEFT_EYE_XY, RIGHT_EYE_XY, Aligner
from facegate.vision.detector import FULL_RANGE_FILE, BlazeFaceDetector
from facegate.vision.embedder import FaceNetEmbedder, FaceNetFloat32Embedder
from facegate.vision.landmarks import (
    LEFT_EYE,
    MESH_PX,
    MIN_FACE_SCORE,
    RIGHT_EYE,
    ROI_SCALE,
    FaceMeshLandmarker,
)
from facegate.vision.liveness import OffLiveness, PassiveLiveness
from facegate.vision.quality import DEFAULT_GATE, Gate, QualityGate, QualityMeter, format_against
from facegate.vision.runtime import file_sha256, runtime_name
from facegate.vision.stages import Embedder, FaceDetector, Landmarker, LivenessStage, Stage
from facegate.vision.types import (
    Detection,
    FaceEncoding,
    FaceLandmarks,
    FaceQuality,
    FloatArray,
    ImageArray,
    RefusalReason,
)

__all__ = [
    "DETECTORS",
    "EMBEDDERS",
    "INSTALLED_MODELS_DIR",
    "LANDMARKERS",
    "LIVENESS_STAGES",
    "MODEL_FILES",
    "EmbedderKind",
    "FaceEngine",
    "Plan",
    "Reuse",
    "default_models_dir",
    "pipeline_fingerprint",
    "required_model_files",
]

logger = logging.getLogger(__name__)

EmbedderKind = Literal["int8", "float32"]
_S = TypeVar("_S", bound=Stage)

# The registries: config `type` -> class. config/app.py ModelsConfig lists the same names
# (it is a leaf and cannot import these); tests/test_stages.py keeps the two in step.
DETECTORS: Final[dict[str, type[FaceDetector]]] = {"blazeface": BlazeFaceDetector}
LANDMARKERS: Final[dict[str, type[Landmarker]]] = {"facemesh": FaceMeshLandmarker}
EMBEDDERS: Final[dict[str, type[Embedder]]] = {
    "int8": FaceNetEmbedder,
    "float32": FaceNetFloat32Embedder,
}
LIVENESS_STAGES: Final[dict[str, type[LivenessStage]]] = {
    "off": OffLiveness,
    "passive": PassiveLiveness,
}

#: The model files by role, as `make models` names them (check-config and tests use it).
MODEL_FILES: Final = {
    "detector_short": BlazeFaceDetector.model_files[0],
    "detector_full": FULL_RANGE_FILE,
    "landmarks": FaceMeshLandmarker.model_files[0],
    "int8": FaceNetEmbedder.model_files[0],
    "float32": FaceNetFloat32Embedder.model_files[0],
}


@dataclass(frozen=True, slots=True)
class Reuse:
    """What the caller already knows of a detected face: its encoding from an earlier frame
    (the same face, its box unchanged). With `landmarks` the landmarks are placed again and
    the face aligned and gated anew (a stage reads them every frame); the embedding is
    reused only if the face still passes the gate. Without, the encoding is reused whole."""

    face: FaceEncoding
    landmarks: bool


#: Given a frame's detections (largest first), what is known of each: None embeds it.
Plan = Callable[[Sequence[Detection]], Sequence[Reuse | None]]


class StageTimer(Protocol):
    """Told how long each stage took (metrics set one on FaceEngine.stage_timer)."""

    def lap(self, stage: str, since: float) -> float:
        """Record `time.perf_counter() - since` for `stage`; return that perf_counter()."""


class FaceEngine:
    """Composes the stages; not thread-safe (one engine per pipeline thread)."""

    def __init__(
        self,
        detector: FaceDetector,
        landmarker: Landmarker,
        embedder: Embedder,
        fallback_detector: FaceDetector | None = None,
        gate: QualityGate = DEFAULT_GATE,
        liveness: LivenessStage | None = None,
    ) -> None:
        self.detector = detector
        self.fallback_detector = fallback_detector
        self.landmarker = landmarker
        self.embedder = embedder
        self.gate = gate
        # The slot the liveness issue fills; the caller that knows the tracks feeds it.
        self.liveness: LivenessStage = liveness if liveness is not None else OffLiveness()
        self.fingerprint = _combine(embedder.fingerprint, landmarker.fingerprint)
        self.runtime = runtime_name()
        self._aligner = Aligner()
        self._meter = QualityMeter()
        # None (the default) costs one `if` per stage; metrics set it to time the stages.
        self.stage_timer: StageTimer | None = None

    @classmethod
    def load(
        cls,
        models_dir: Path,
        embedder: EmbedderKind = "int8",
        threads: int = 2,
        gate: QualityGate = DEFAULT_GATE,
        full_range_fallback: bool = True,
        *,
        detector: str = "blazeface",
        landmarker: str = "facemesh",
        liveness: str = "off",
    ) -> FaceEngine:
        """Load every stage by its `type` from a `make models` output folder."""
        models_dir = Path(models_dir)
        # The detector runs on every frame: 2 threads take it from ~1.7 to ~1.3 ms per invoke.
        detector_cls = _lookup(DETECTORS, detector, "detector")
        primary = detector_cls.load(models_dir, threads)
        fallback = detector_cls.load_fallback(models_dir, threads) if full_range_fallback else None
        engine = cls(
            primary,
            _lookup(LANDMARKERS, landmarker, "landmarker").load(models_dir, threads),
            _lookup(EMBEDDERS, embedder, "embedder").load(models_dir, threads),
            fallback,
            gate,
            _lookup(LIVENESS_STAGES, liveness, "liveness").load(models_dir, threads),
        )
        logger.info(
            "face engine ready: %s detector, %s landmarks, %s embedder (%d-D) on %s",
            detector, landmarker, embedder, engine.embedding_dim, engine.runtime,
        )  # fmt: skip
        return engine

    @property
    def embedding_dim(self) -> int:
        """Length of this engine's embeddings, as its embedder model outputs them."""
        return self.embedder.dim

    def close(self) -> None:
        """Release every stage."""
        stages: list[Stage | None] = [
            self.detector,
            self.fallback_detector,
            self.landmarker,
            self.embedder,
            self.liveness,
        ]
        for stage in stages:
            if stage is not None:
                stage.close()

    def detect(self, image: ImageArray) -> list[Detection]:
        """Faces in the frame, largest first. Falls back to the full-range model (faces
        farther than ~2 m) only when the short-range model finds nothing."""
        faces = self.detector.detect(image)
        if not faces and self.fallback_detector is not None:
            faces = self.fallback_detector.detect(image)
        return sorted(faces, key=lambda d: d.width, reverse=True)

    def encode_detection(
        self,
        image: ImageArray,
        detection: Detection,
        gate: Gate | None = None,
        reuse: FloatArray | None = None,
    ) -> FaceEncoding:
        """Locate landmarks, align, gate and (if usable) embed one detected face. A refused
        face keeps whatever was computed before the refusal and its RefusalReason. `gate`
        defaults to the engine's (the door's live gate); photos pass a PhotoGate. `reuse`:
        the face's embedding from an earlier frame, taken instead of running the embedder
        when the face passes the gate."""
        gate = self.gate if gate is None else gate
        if too_small := gate.size_refusal(detection.width):
            return _refused(detection, too_small)
        timer = self.stage_timer
        mark = time.perf_counter() if timer else 0.0
        landmarks = self.landmarker.locate(image, detection)
        if timer:
            mark = timer.lap("landmarks", mark)
        if problem := _landmark_refusal(landmarks):
            return _refused(detection, problem, landmarks)
        crop = self._aligner.align(image, landmarks)
        if timer:
            mark = timer.lap("align", mark)
        if gate.native:
            quality = self._meter.measure_native(image, landmarks, detection.width, gate)
        else:
            quality = self._meter.measure(crop, detection.width, landmarks.yaw_deg, gate)
        if timer:
            mark = timer.lap("quality", mark)
        embedding: FloatArray | None = None
        if quality.usable and reuse is not None:
            embedding = reuse
        elif quality.usable:
            embedding = self.embedder.embed(crop)
            if timer:
                timer.lap("embed", mark)
        crop.flags.writeable = False  # after embedding: observers share the embedder's view
        return FaceEncoding(detection, quality, embedding, landmarks, crop)

    def encode(
        self, image: ImageArray, gate: Gate | None = None, plan: Plan | None = None
    ) -> list[FaceEncoding]:
        """Every face in the frame, largest first; `embedding` is None for unusable faces.
        `plan` (a door's pipeline) says which faces are already known from earlier frames:
        those are not embedded again (nor their landmarks placed, unless it asks)."""
        timer = self.stage_timer
        start = time.perf_counter() if timer else 0.0
        detections = self.detect(image)
        if timer:
            timer.lap("detect", start)
        known = plan(detections) if plan is not None else [None] * len(detections)
        faces = [self._encode(image, d, gate, k) for d, k in zip(detections, known, strict=True)]
        if timer:
            timer.lap("frame", start)  # the whole frame: detection and every face
        return faces

    def _encode(
        self, image: ImageArray, detection: Detection, gate: Gate | None, known: Reuse | None
    ) -> FaceEncoding:
        if known is None:
            return self.encode_detection(image, detection, gate)
        if known.landmarks:
            return self.encode_detection(image, detection, gate, known.face.embedding)
        return replace(known.face, detection=detection)

    def encode_one(
        self, image: ImageArray, source: str | Path, gate: Gate | None = None
    ) -> FaceEncoding:
        """Exactly one usable face, or an error naming `source` and what is wrong."""
        faces = self.encode(image, gate)
        if not faces:
            raise NoFaceError(source, "no face found")
        usable = [f for f in faces if f.embedding is not None]
        if len(usable) > 1:
            raise ManyFacesError(source, f"{len(usable)} faces found; exactly one is required")
        if not usable:
            raise BadInputError(source, faces[0].quality.reason)
        return usable[0]


def _landmark_refusal(landmarks: FaceLandmarks) -> tuple[RefusalReason, str] | None:
    """Why these landmarks cannot place a face, or None. Written so that NaN fails."""
    if not landmarks.face_score >= MIN_FACE_SCORE:
        score, limit = format_against(landmarks.face_score, MIN_FACE_SCORE, places=3)
        return (
            RefusalReason.NOT_A_FACE,
            f"not a face to the landmark model (score {score} < {limit})",
        )
    if not all(math.isfinite(v) for v in (*landmarks.right_eye, *landmarks.left_eye)):
        return RefusalReason.NO_EYES, "the landmark model gave no usable eye positions"
    return None


def _refused(
    detection: Detection,
    refusal: tuple[RefusalReason, str],
    landmarks: FaceLandmarks | None = None,
) -> FaceEncoding:
    """A detection turned away before it was measured: sharpness and yaw unknown (NaN)."""
    code, text = refusal
    quality = FaceQuality(detection.width, math.nan, False, text, math.nan, code)
    return FaceEncoding(detection, quality, None, landmarks)


def _lookup(registry: dict[str, type[_S]], name: str, role: str) -> type[_S]:
    """The class registered for a config `type`; config validation names the same set."""
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise ModelError(f"unknown {role} type {name!r} (known: {known})") from None


def required_model_files(
    embedder: EmbedderKind = "int8", detector: str = "blazeface", landmarker: str = "facemesh"
) -> tuple[str, ...]:
    """The files FaceEngine.load(full_range_fallback=False) reads for these types."""
    return (
        *_lookup(DETECTORS, detector, "detector").model_files,
        *_lookup(LANDMARKERS, landmarker, "landmarker").model_files,
        *_lookup(EMBEDDERS, embedder, "embedder").model_files,
    )


def pipeline_fingerprint(
    models_dir: Path, embedder: EmbedderKind, landmarker: str = "facemesh"
) -> str:
    """FaceEngine.fingerprint from the model files alone, without loading them."""
    models_dir = Path(models_dir)
    embedder_file = _lookup(EMBEDDERS, embedder, "embedder").model_files[0]
    landmarks_file = _lookup(LANDMARKERS, landmarker, "landmarker").model_files[0]
    return _combine(
        file_sha256(models_dir / embedder_file), file_sha256(models_dir / landmarks_file)
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
