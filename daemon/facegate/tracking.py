"""Face tracks: which face in this frame is the same face as in the last frames of a camera.

The policy confirms an identity per track, so two people in view never pool their frames
and a track whose identity changes never confirms. Association is greedy on box overlap
(IoU), largest overlap first; a face embedded in both frames must also stay close in
embedding space, so two people swapping places between frames start new tracks instead of
inheriting each other's history. A track not seen for `max_missed` frames ends.

Pure and cheap: a few boxes per frame, no allocation beyond the small result lists.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from facegate.vision.types import FloatArray

Box = tuple[float, float, float, float]

#: Overlap that makes two boxes in consecutive processed frames the same face. At 10 fps a
#: walking person's face box moves a fraction of its width per frame; 0.3 tolerates that.
MIN_IOU: Final = 0.3
#: Frames a track may go unseen (a missed detection, a blink-turned head) before it ends.
MAX_MISSED: Final = 5
#: L2 between unit embeddings above which two faces are not the same person's track.
#: Genuine pairs of the same person across frames stay far below (about 0.2-0.6); the
#: accept threshold is 0.9, so a jump past 1.0 is another face in the same place.
MAX_EMBEDDING_JUMP: Final = 1.0


@dataclass(slots=True)
class _Track:
    track_id: int
    box: Box
    embedding: FloatArray | None
    missed: int = 0


@dataclass(frozen=True, slots=True)
class TrackedFace:
    """What the tracker needs of a face: its box and, when it was embedded, the embedding."""

    box: Box
    embedding: FloatArray | None


class FaceTracker:
    """Track ids for the faces of one camera, frame after frame. Not thread-safe."""

    def __init__(
        self,
        *,
        min_iou: float = MIN_IOU,
        max_missed: int = MAX_MISSED,
        max_embedding_jump: float = MAX_EMBEDDING_JUMP,
    ) -> None:
        self._min_iou = min_iou
        self._max_missed = max_missed
        self._max_jump = max_embedding_jump
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)
        self._ended: list[int] = []

    @property
    def live(self) -> int:
        """Tracks currently alive (seen within the last `max_missed` frames)."""
        return len(self._tracks)

    @property
    def ended(self) -> list[int]:
        """Tracks that ended in the last `update` (for stages holding per-track state)."""
        return self._ended

    def update(self, faces: Sequence[TrackedFace]) -> list[int]:
        """One frame's faces in; their track ids out, in the same order."""
        pairs = self._candidate_pairs(faces)
        ids: list[int | None] = [None] * len(faces)
        taken: set[int] = set()
        for _, face_index, track_index in pairs:
            if ids[face_index] is not None or track_index in taken:
                continue
            track = self._tracks[track_index]
            ids[face_index] = track.track_id
            taken.add(track_index)
            self._refresh(track, faces[face_index])
        for index, track in enumerate(self._tracks):
            if index not in taken:
                track.missed += 1
        self._ended = [t.track_id for t in self._tracks if t.missed > self._max_missed]
        self._tracks = [t for t in self._tracks if t.missed <= self._max_missed]
        return [
            self._new_track(face) if i is None else i for i, face in zip(ids, faces, strict=True)
        ]

    def predict(self, boxes: Sequence[Box]) -> list[int | None]:
        """The track each box will continue when overlap alone decides (no embedding to
        compare): the one track it overlaps that overlaps no other box; None when there is
        no such track or the choice is not that plain. Changes nothing."""
        hits = [[t.track_id for t in self._tracks if iou(b, t.box) >= self._min_iou] for b in boxes]
        overlapped = Counter(track for hit in hits for track in hit)
        return [hit[0] if len(hit) == 1 and overlapped[hit[0]] == 1 else None for hit in hits]

    def _candidate_pairs(self, faces: Sequence[TrackedFace]) -> list[tuple[float, int, int]]:
        """(-IoU, face index, track index) for every plausible pair, best overlap first."""
        pairs = []
        for face_index, face in enumerate(faces):
            for track_index, track in enumerate(self._tracks):
                overlap = iou(face.box, track.box)
                if overlap >= self._min_iou and self._same_look(face, track):
                    pairs.append((-overlap, face_index, track_index))
        pairs.sort()
        return pairs

    def _same_look(self, face: TrackedFace, track: _Track) -> bool:
        if face.embedding is None or track.embedding is None:
            return True  # nothing to compare: overlap alone decides
        return float(np.linalg.norm(face.embedding - track.embedding)) <= self._max_jump

    @staticmethod
    def _refresh(track: _Track, face: TrackedFace) -> None:
        track.box = face.box
        track.missed = 0
        if face.embedding is not None:
            track.embedding = face.embedding

    def _new_track(self, face: TrackedFace) -> int:
        track = _Track(next(self._ids), face.box, face.embedding)
        self._tracks.append(track)
        return track.track_id


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 for degenerate ones."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
