"""Liveness stages: is a track of faces a live person? Only the empty slot so far.

The liveness issue fills this module; until then FaceEngine composes `OffLiveness`, which
holds nothing and has no opinion, so every decision is made exactly as without the slot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Self

from facegate.vision.stages import LivenessStage
from facegate.vision.types import FaceEncoding, ImageArray, LivenessEvidence

#: The one answer of the "off" stage; shared, since it is frozen and never changes.
NO_OPINION: Final = LivenessEvidence(live=None, reason="liveness check off")


class OffLiveness(LivenessStage):
    """Liveness `type: off`: no check, no state, no opinion on any track."""

    @classmethod
    def load(cls, models_dir: Path, threads: int) -> Self:
        return cls()

    def observe(self, track_id: int, face: FaceEncoding, image: ImageArray) -> LivenessEvidence:
        return NO_OPINION

    def forget(self, track_id: int) -> None:
        return None
