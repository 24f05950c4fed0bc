"""Decode user images (files people really have) into RGB uint8 arrays, or fail clearly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facegate.errors import BadInputError
from facegate.vision.types import ImageArray

logger = logging.getLogger(__name__)

#: File name endings read as images everywhere (enrollment folders, datasets, camera folders).
IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: Longest side kept after decoding. Faces in larger photos still span hundreds of pixels,
#: and the detector sees a 128-px letterbox anyway; this bounds memory for 50 MP images.
MAX_SIDE_PX: Final = 2048
#: Smallest image side that can hold a face worth embedding.
MIN_SIDE_PX: Final = 32
EXIF_ORIENTATION: Final = 0x0112


def load_image(path: str | Path) -> ImageArray:
    """Read an image file as HxWx3 RGB uint8, EXIF-rotated, alpha and palette flattened."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                # Let libjpeg decode at a reduced scale: far faster for huge photos.
                img.draft("RGB", (MAX_SIDE_PX, MAX_SIDE_PX))
            img.load()
            return to_rgb_array(img, path)
    except FileNotFoundError:
        raise BadInputError(path, "file not found") from None
    except IsADirectoryError:
        raise BadInputError(path, "is a directory, not an image") from None
    except UnidentifiedImageError:
        raise BadInputError(path, "not an image file (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise BadInputError(path, f"image too large to decode safely: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(path, f"unreadable or truncated image: {exc}") from None


def to_rgb_array(img: Image.Image, source: str | Path = "<image>") -> ImageArray:
    """Normalise a decoded Pillow image: EXIF orientation, RGB, bounded size."""
    # Both calls copy the whole image even when there is nothing to do (a 640x480 frame
    # decoded 2.5 ms faster without them), so only make them when they change something.
    if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency onto white, as a viewer would show it.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    if max(img.size) > MAX_SIDE_PX:
        img.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX), Image.Resampling.BILINEAR)
    if min(img.size) < MIN_SIDE_PX:
        raise BadInputError(
            source, f"image is {img.size[0]}x{img.size[1]} px, too small to hold a face"
        )
    return np.asarray(img, dtype=np.uint8)
