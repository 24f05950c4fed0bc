"""BlazeFace face detector (MediaPipe short- and full-range models) on TFLite.

Decoding follows MediaPipe's SSD anchors and tensors-to-detections calculators: raw boxes are
(cx, cy, w, h, 6 x keypoint) offsets in input pixels relative to fixed unit anchors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

import cv2
import numpy as np

from facegate.vision.runtime import check_input_shape, load_interpreter, output_by_shape
from facegate.vision.stages import FaceDetector
from facegate.vision.types import Detection, FloatArray, ImageArray

logger = logging.getLogger(__name__)

MIN_SCORE: Final = 0.5
NMS_IOU: Final = 0.3
RAW_SCORE_LIMIT: Final = 80.0
NUM_KEYPOINTS: Final = 6


@dataclass(frozen=True, slots=True)
class AnchorSpec:
    """MediaPipe SSD anchor options for one BlazeFace variant."""

    input_px: int
    strides: tuple[int, ...]
    interpolated_aspect: bool


SHORT_RANGE: Final = AnchorSpec(128, (8, 16, 16, 16), True)
FULL_RANGE: Final = AnchorSpec(192, (4,), False)
SHORT_RANGE_FILE: Final = "blazeface_short_range.tflite"
FULL_RANGE_FILE: Final = "blazeface_full_range.tflite"


def generate_anchors(spec: AnchorSpec) -> FloatArray:
    """Anchor centres (N, 2) in [0, 1], MediaPipe's ssd_anchors_calculator, trimmed."""
    anchors: list[FloatArray] = []
    layer = 0
    while layer < len(spec.strides):
        stride = spec.strides[layer]
        repeats = 0
        while layer < len(spec.strides) and spec.strides[layer] == stride:
            repeats += 2 if spec.interpolated_aspect else 1
            layer += 1
        cells = spec.input_px // stride
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(centres, centres)
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        anchors.append(np.repeat(grid, repeats, axis=0))
    return np.concatenate(anchors).astype(np.float32)


class BlazeFaceDetector(FaceDetector):
    """Detector `type: blazeface`: finds faces in an RGB frame; boxes and keypoints in frame
    pixels. Short range (faces within ~2 m), the full-range model as the fallback."""

    model_files = (SHORT_RANGE_FILE,)

    def __init__(self, model_path: Path, spec: AnchorSpec, threads: int = 1) -> None:
        self._interpreter = load_interpreter(model_path, threads)
        self._spec = spec
        self._anchors = generate_anchors(spec)
        size = spec.input_px
        detail = check_input_shape(self._interpreter, model_path, (1, size, size, 3), "BlazeFace")
        self._input_index = int(detail["index"])
        self._boxes_index = output_by_shape(self._interpreter, 16, model_path, "BlazeFace")
        self._scores_index = output_by_shape(self._interpreter, 1, model_path, "BlazeFace")
        # Reused every frame: the letterboxed uint8 image and its float tensor.
        self._letterbox = np.zeros((size, size, 3), dtype=np.uint8)
        self._tensor = np.zeros((1, size, size, 3), dtype=np.float32)

    @classmethod
    def load(cls, models_dir: Path, threads: int) -> Self:
        return cls(models_dir / SHORT_RANGE_FILE, SHORT_RANGE, threads)

    @classmethod
    def load_fallback(cls, models_dir: Path, threads: int) -> BlazeFaceDetector:
        # One thread, as it always had: it runs only on frames where the short range found none.
        return cls(models_dir / FULL_RANGE_FILE, FULL_RANGE)

    def detect(self, image: ImageArray) -> list[Detection]:
        """All faces with score >= MIN_SCORE after weighted non-maximum suppression."""
        to_input = self._fill_input(image)
        self._interpreter.set_tensor(self._input_index, self._tensor)
        self._interpreter.invoke()
        raw_scores = self._interpreter.get_tensor(self._scores_index).reshape(-1)
        keep = raw_scores > _logit(MIN_SCORE)
        if not keep.any():
            return []
        raw_boxes = self._interpreter.get_tensor(self._boxes_index).reshape(-1, 8, 2)[keep]
        points = raw_boxes / self._spec.input_px
        points[:, 0] += self._anchors[keep]
        points[:, 2:] += self._anchors[keep][:, None, :]
        scores = _sigmoid(raw_scores[keep])
        return [self._to_frame(p, s, to_input) for p, s in _weighted_nms(points, scores)]

    def _fill_input(self, image: ImageArray) -> FloatArray:
        """Letterbox `image` into the input tensor; return the frame->input affine (2x3)."""
        height, width = image.shape[:2]
        size = self._spec.input_px
        scale = size / max(height, width)
        to_input = np.array(
            [[scale, 0.0, (size - width * scale) / 2], [0.0, scale, (size - height * scale) / 2]],
            dtype=np.float32,
        )
        cv2.warpAffine(
            image, to_input, (size, size), dst=self._letterbox, flags=cv2.INTER_AREA,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
        )  # fmt: skip
        # MediaPipe's input range is [-1, 1].
        np.multiply(self._letterbox, 1.0 / 127.5, out=self._tensor[0], casting="unsafe")
        self._tensor -= 1.0
        return to_input

    def _to_frame(self, points: FloatArray, score: float, to_input: FloatArray) -> Detection:
        size = self._spec.input_px
        scale, off_x, off_y = to_input[0, 0], to_input[0, 2], to_input[1, 2]
        centre, wh = points[0], points[1]
        keypoints = (points[2:] * size - (off_x, off_y)) / scale
        x0, y0 = (centre - wh / 2) * size
        x1, y1 = (centre + wh / 2) * size
        box = (
            (x0 - off_x) / scale,
            (y0 - off_y) / scale,
            (x1 - off_x) / scale,
            (y1 - off_y) / scale,
        )
        return Detection(
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            keypoints=keypoints.astype(np.float32),
            score=float(score),
        )


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _sigmoid(raw: FloatArray) -> FloatArray:
    clipped = np.clip(raw, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
    return (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)


def _iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    """IoU of one (cx, cy, w, h) box against many."""
    lo = np.maximum(box[0] - box[1] / 2, boxes[:, 0] - boxes[:, 1] / 2)
    hi = np.minimum(box[0] + box[1] / 2, boxes[:, 0] + boxes[:, 1] / 2)
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
    union = np.prod(box[1]) + np.prod(boxes[:, 1], axis=1) - inter
    return np.asarray(inter / np.maximum(union, 1e-9), dtype=np.float32)


def _weighted_nms(points: FloatArray, scores: FloatArray) -> list[tuple[FloatArray, float]]:
    """MediaPipe's weighted NMS: overlapping candidates are averaged, weighted by score."""
    order = np.argsort(-scores)
    points, scores = points[order], scores[order]
    alive = np.ones(len(scores), dtype=bool)
    results: list[tuple[FloatArray, float]] = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        overlap = alive & (_iou(points[i], points) > NMS_IOU)
        weights = scores[overlap]
        merged = np.tensordot(weights, points[overlap], axes=1) / weights.sum()
        results.append((merged.astype(np.float32), float(scores[i])))
        alive &= ~overlap
    return results
