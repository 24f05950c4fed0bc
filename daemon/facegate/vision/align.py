"""Align a face to the embedder's 160x160 crop by its eye centres (from the landmarks)."""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np

from facegate.vision.types import FaceLandmarks, FloatArray, ImageArray

FACE_PX: Final = 160
#: Where the eye centres land in the crop (fractions of FACE_PX). The Keras FaceNet was
#: trained on MTCNN face boxes with a small margin. A sweep of eye spacing 0.26-0.40 and
#: height 0.36-0.48 on the 5-celebrity train split only (val kept for evaluation), scored by
#: the separation d' of genuine and impostor distances, peaked at spacing 0.36 and height
#: 0.40, with d' within 5 % of the peak from spacing 0.32 to 0.38: a broad optimum, not an
#: artefact of these faces.
RIGHT_EYE_XY: Final = (0.32, 0.40)  # subject's right eye, on the image's left
LEFT_EYE_XY: Final = (0.68, 0.40)


def eye_transform(landmarks: FaceLandmarks) -> FloatArray:
    """2x3 similarity transform taking the eye centres to the template eye positions."""
    src = np.array([landmarks.right_eye, landmarks.left_eye], dtype=np.float64)
    dst = np.array([RIGHT_EYE_XY, LEFT_EYE_XY], dtype=np.float64) * FACE_PX
    src_vec, dst_vec = src[1] - src[0], dst[1] - dst[0]
    # Complex-number form of a similarity: z -> a*z + b with a = dst_vec / src_vec.
    a = complex(*dst_vec) / complex(*src_vec) if np.any(src_vec) else complex(1.0, 0.0)
    rot = np.array([[a.real, -a.imag], [a.imag, a.real]])
    shift = dst[0] - rot @ src[0]
    return np.hstack([rot, shift[:, None]]).astype(np.float32)


class Aligner:
    """Warps faces into the embedder's 160x160 crop."""

    def align(self, image: ImageArray, landmarks: FaceLandmarks) -> ImageArray:
        """The aligned RGB crop, a new array per face: the observation keeps the very crop
        the embedder saw, so a buffer reused between faces would cost a copy instead."""
        crop = np.empty((FACE_PX, FACE_PX, 3), dtype=np.uint8)
        cv2.warpAffine(
            image, eye_transform(landmarks), (FACE_PX, FACE_PX), dst=crop,
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        return crop
