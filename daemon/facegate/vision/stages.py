"""The interfaces of the vision stages: what FaceEngine composes and a new model implements.

One small ABC per kind, synchronous, with a `load` hook that builds the stage from a
`make models` folder and a `close` hook. engine.py maps each config `type` string to its
class (DETECTORS, LANDMARKERS, EMBEDDERS, LIVENESS_STAGES): adding a model is one subclass
of these plus one line there. Stages exchange the frozen values of vision/types.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Self

from facegate.vision.types import (
    Detection,
    FaceEncoding,
    FaceLandmarks,
    FloatArray,
    ImageArray,
    LivenessEvidence,
)


class Stage(ABC):
    """What every stage has: the model files it reads, a load hook and a close hook."""

    #: Files this stage reads from the models folder (check-config tests they exist).
    model_files: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def load(cls, models_dir: Path, threads: int) -> Self:
        """Build the stage from a models folder; a wrong or missing file is a ModelError
        naming the file and, for a wrong one, the shape expected and found."""

    def close(self) -> None:  # noqa: B027  (a hook: most stages hold nothing to release)
        """Release what `load` acquired."""


class FaceDetector(Stage):
    """Finds faces in a whole RGB frame."""

    @abstractmethod
    def detect(self, image: ImageArray) -> list[Detection]:
        """Every face found, boxes and keypoints in frame pixels, in any order."""

    @classmethod
    def load_fallback(cls, models_dir: Path, threads: int) -> FaceDetector | None:
        """A second detector, run only on frames where this one finds nothing (BlazeFace:
        the full-range model, for faces beyond ~2 m); None if this kind has none."""
        return None


class Landmarker(Stage):
    """Places the points of one detected face: eyes for alignment, yaw, the full mesh."""

    #: sha256 of the model file: the eye positions, so the embeddings, depend on it.
    fingerprint: str

    @abstractmethod
    def locate(self, image: ImageArray, detection: Detection) -> FaceLandmarks:
        """The landmarks of `detection` in frame pixels (NaN where the model gave none)."""


class Embedder(Stage):
    """Turns one aligned face crop into a unit-length vector."""

    #: sha256 of the model file: galleries made with another file are refused.
    fingerprint: str
    #: Length of the embeddings, read from the model's output tensor.
    dim: int

    @abstractmethod
    def embed(self, face: ImageArray) -> FloatArray:
        """Unit embedding (shape (dim,), float32) of one aligned face; a new array."""


class LivenessStage(Stage):
    """Decides whether a track of faces is a live person rather than a photo or a screen.

    Evidence accumulates per track (the same face across frames of one camera), never per
    single frame: the caller feeds every observation of a track and forgets ended tracks.
    """

    @abstractmethod
    def observe(self, track_id: int, face: FaceEncoding, image: ImageArray) -> LivenessEvidence:
        """Add one observation of `track_id` (refused faces too); the evidence so far."""

    @abstractmethod
    def forget(self, track_id: int) -> None:
        """Drop what is held on a track that has ended."""

    def for_camera(self, *, hfov_deg: float, nir: bool = False) -> LivenessStage:
        """A stage with these settings and no track state, for one camera (track ids are
        per camera; the geometry needs the lens's horizontal field of view in degrees;
        `nir`: a near-infrared camera). Stateless stages return themselves."""
        return self
