"""Liveness stages: is a track of faces a live person rather than a photo or a screen?

- `OffLiveness` (`type: off`): no check, no state, no opinion on any track; every decision
  is made exactly as without the slot.
- `PassiveLiveness` (`type: passive`, in passive.py): 3-D structure from the face's own
  motion (texture.py measures, structure.py tests), blinks and head turns (actions.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Self

from facegate.vision.liveness.passive import PassiveLiveness
from facegate.vision.stages import LivenessStage
from facegate.vision.types import FaceEncoding, ImageArray, LivenessEvidence

__all__ = ["NO_OPINION", "OffLiveness", "PassiveLiveness"]

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
