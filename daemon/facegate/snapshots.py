"""A face as a small JPEG: what Home Assistant's `image` entity and the audit trail keep.

Only the aligned face crop (160x160) is encoded, never the frame: a snapshot shows who
was at the door, not the hallway behind them.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np

from facegate.vision.types import ImageArray

#: Home Assistant's image entity and the audit trail's files stay below this.
MAX_SNAPSHOT_BYTES: Final = 30 * 1024
_QUALITIES: Final = (90, 75, 60, 45, 30)


def face_jpeg(crop: ImageArray, max_bytes: int = MAX_SNAPSHOT_BYTES) -> bytes | None:
    """The RGB crop as a JPEG of at most `max_bytes`; lower quality, then half size, until it
    fits (a 160x160 face is about 6 KB at quality 90). None if it never fits."""
    bgr = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR)
    while min(bgr.shape[:2]) >= 16:
        for quality in _QUALITIES:
            ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and encoded.size <= max_bytes:
                return encoded.tobytes()
        bgr = cv2.resize(bgr, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    return None
