"""One-shot databases as users make them: tight 96x96 face crops of the 5-celebrity photos
(the face fills the image, as in the FaceNet tutorials). Shared by the tests and
scripts/bench_oneshot.py.

A crop is the detected face box scaled by `factor` around its centre, resized to 96x96:
at the default 1.6 the detector then finds faces 34-68 px wide in the crops (median 59),
the range the issue met in real one-shot databases (34-66 px).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import cv2
import numpy as np

from facegate.imageio import load_image
from facegate.vision.engine import FaceEngine
from facegate.vision.types import ImageArray

CROP_PX: Final = 96
#: Face box x this = the crop's side: faces of 34-68 px in a 96 px crop.
TIGHT: Final = 1.6


def tight_crop(
    engine: FaceEngine, photo: Path, factor: float = TIGHT, size: int = CROP_PX
) -> ImageArray | None:
    """The photo's largest face cropped tight and resized to `size` (RGB), None if no face.
    Downscaling is area-averaged, as an image editor does it."""
    image = load_image(photo)
    faces = engine.detect(image)
    if not faces:
        return None
    x0, y0, x1, y1 = faces[0].box
    side = max(x1 - x0, y1 - y0) * factor
    scale = size / side
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    shift = np.array([size / 2 - centre_x * scale, size / 2 - centre_y * scale])
    transform = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]], dtype=np.float32)
    if scale >= 1.0:  # a small face in the photo: enlarged, as an editor would
        return np.asarray(cv2.warpAffine(image, transform, (size, size), flags=cv2.INTER_CUBIC))
    # Area averaging needs a plain resize: cut the square first, then shrink it.
    half = side / 2
    box = [round(centre_x - half), round(centre_y - half), round(centre_x + half)]
    square = _cut(image, box[0], box[1], box[2] - box[0])
    return np.asarray(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))


def _cut(image: ImageArray, x: int, y: int, side: int) -> ImageArray:
    """A side x side square at (x, y); parts outside the photo repeat its edge."""
    pad = max(0, -x, -y, x + side - image.shape[1], y + side - image.shape[0])
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return np.asarray(padded[y + pad : y + pad + side, x + pad : x + pad + side])


def write_png(path: Path, image: ImageArray) -> Path:
    """An RGB array as a PNG file (the lossless form one-shot databases often use)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1])):
        raise OSError(f"cannot write {path}")
    return path
