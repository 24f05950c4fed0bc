"""Face tracks (facegate.tracking); the policy's per-track confirmation is in test_policy."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.tracking import FaceTracker, TrackedFace, iou
from facegate.vision.types import FloatArray, l2_normalize


def box(x: float, y: float = 100.0, size: float = 100.0) -> tuple[float, float, float, float]:
    return (x, y, x + size, y + size)


def face(x: float, embedding: np.ndarray | None = None) -> TrackedFace:
    return TrackedFace(box(x), embedding)


def unit(seed: int) -> FloatArray:
    return l2_normalize(np.random.default_rng(seed).normal(size=128).astype(np.float32))


def test_iou() -> None:
    assert iou(box(0), box(0)) == 1.0
    assert iou(box(0), box(200)) == 0.0
    assert iou(box(0), box(50)) == pytest.approx(50 * 100 / (2 * 100 * 100 - 50 * 100))
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_a_moving_face_keeps_its_track_and_a_second_face_gets_another() -> None:
    tracker = FaceTracker()
    first = tracker.update([face(0)])
    assert tracker.update([face(10)]) == first
    both = tracker.update([face(500), face(20)])  # order of faces does not matter
    assert both[1] == first[0] and both[0] != first[0]
    assert tracker.live == 2


def test_a_track_survives_a_few_missed_frames_then_ends() -> None:
    tracker = FaceTracker(max_missed=2)
    (track,) = tracker.update([face(0)])
    tracker.update([])
    tracker.update([])
    assert tracker.update([face(5)]) == [track]
    for _ in range(3):
        tracker.update([])
    assert tracker.ended == [track]
    tracker.update([])
    assert tracker.ended == []
    assert tracker.live == 0
    assert tracker.update([face(5)]) != [track]


def test_another_person_in_the_same_place_starts_a_new_track() -> None:
    tracker = FaceTracker()
    alice, bob = unit(1), unit(2)
    assert float(np.linalg.norm(alice - bob)) > 1.0  # random 128-D directions: about 1.41
    (first,) = tracker.update([face(0, alice)])
    near_alice = l2_normalize(alice + 0.05 * unit(3))
    assert tracker.update([face(5, near_alice)]) == [first]
    assert tracker.update([face(5, bob)]) != [first]


def test_each_face_takes_its_best_overlapping_track() -> None:
    tracker = FaceTracker()
    left, right = tracker.update([face(0), face(120)])
    # Both moved right; the right face now also overlaps the left track a little.
    assert tracker.update([face(40), face(150)]) == [left, right]
