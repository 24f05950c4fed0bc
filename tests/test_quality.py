"""The quality gate: size, sharpness and head turn decide which faces are embedded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import celeb_image
from facegate.imageio import load_image
from facegate.vision.engine import FaceEngine
from facegate.vision.quality import QualityGate, estimate_yaw_deg
from facegate.vision.types import Detection


def face_turned(yaw_deg: float) -> Detection:
    """Keypoints of a head of radius 50 px turned by yaw: the nose tip and the ear tragions
    sit on a circle around the head's centre, seen from the front."""
    yaw = math.radians(yaw_deg)
    cx, r = 200.0, 50.0
    nose_x = cx + r * math.sin(yaw)
    ear_right, ear_left = cx - r * math.cos(yaw), cx + r * math.cos(yaw)
    keypoints = np.array(
        [
            [cx - 20, 100],
            [cx + 20, 100],
            [nose_x, 110],
            [cx, 140],
            [ear_right, 110],
            [ear_left, 110],
        ],
        dtype=np.float32,
    )
    return Detection((140.0, 60.0, 260.0, 180.0), keypoints, 0.9)


@pytest.mark.parametrize("yaw", [0.0, 10.0, 25.0, 40.0])
def test_yaw_estimate_follows_the_head_turn(yaw: float) -> None:
    assert estimate_yaw_deg(face_turned(yaw)) == pytest.approx(yaw, abs=1.0)
    assert estimate_yaw_deg(face_turned(-yaw)) == pytest.approx(yaw, abs=1.0)


def test_gate_reasons_in_order() -> None:
    gate = QualityGate(min_face_px=80, min_sharpness=20, max_yaw_deg=30)
    assert gate.problem(100, 50, 10) == ""
    assert "too small" in gate.problem(50, 50, 10)
    assert "blurred" in gate.problem(100, 5, 10)
    assert "turned" in gate.problem(100, 50, 35)
    assert QualityGate(max_yaw_deg=90).problem(100, 50, 89) == ""


def test_turned_face_is_detected_but_not_embedded(engine: FaceEngine) -> None:
    image = load_image(celeb_image("madonna", index=2))
    frontal = engine.encode(image)[0]
    assert frontal.quality.usable and frontal.quality.yaw_deg < 30
    # The mirror image is turned by the same amount the other way.
    mirrored = engine.encode(np.ascontiguousarray(image[:, ::-1]))[0]
    assert mirrored.quality.yaw_deg == pytest.approx(frontal.quality.yaw_deg, abs=5.0)
    strict = FaceEngine(engine.detector, engine.embedder, None, QualityGate(max_yaw_deg=0.0))
    rejected = strict.encode(image)[0]
    assert rejected.embedding is None
    assert "turned" in rejected.quality.reason
