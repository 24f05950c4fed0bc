"""Decode user images (files people really have) into RGB uint8 arrays, or fail clearly.

`load_image` is the one image parser of the project (enrollment, CLI, camera folders): it
returns an HxWx3 uint8 array or raises BadInputError naming the file, never anything else.
Everything that costs memory is bounded before it is spent: the file size before reading,
the decoded pixel count from the header before decoding.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from facegate.errors import BadInputError
from facegate.vision.types import ImageArray

logger = logging.getLogger(__name__)

#: The decoders tried, whatever the file name says (a .jpg saved as PNG still opens). No
#: others: each extra Pillow plugin (EPS runs Ghostscript) is attack surface for nothing.
DECODERS: Final = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
#: Longest side kept after decoding. Faces in larger photos still span hundreds of pixels,
#: and the detector sees a 128-px letterbox anyway; this bounds memory for 50 MP images.
MAX_SIDE_PX: Final = 2048
#: Smallest image side that can hold a face worth embedding.
MIN_SIDE_PX: Final = 32
#: Larger files are refused unread: a 50 MP phone JPEG is about 15 MiB.
MAX_FILE_BYTES: Final = 25 * 1024 * 1024
#: Pixels decoded at most (after JPEG draft scaling): 40 MP is 120 MB as RGB, which a Pi 4
#: can afford; a 420 KB PNG can claim 144 MP (847 MB peak to decode).
MAX_DECODE_PIXELS: Final = 40_000_000
EXIF_ORIENTATION: Final = 0x0112
_MIB: Final = 1024 * 1024


def load_image(
    path: str | Path,
    *,
    max_side_px: int | None = MAX_SIDE_PX,
    min_side_px: int = MIN_SIDE_PX,
) -> ImageArray:
    """Read an image file as HxWx3 RGB uint8, EXIF-rotated, alpha and palette flattened.

    `max_side_px=None` keeps the full resolution (camera frames: face sizes are measured in
    frame pixels); the pixel budget applies either way.
    """
    path = Path(path)
    with _open_regular_file(path) as file:
        return _decode(file, path, max_side_px, min_side_px)


def _open_regular_file(path: Path) -> BinaryIO:
    """The opened file if it is a regular file within MAX_FILE_BYTES, else BadInputError."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging;
        # it is refused just below, and has no effect on a regular file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadInputError(path, "file not found") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot open: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        _check_regular(path, info)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_regular(path: Path, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise BadInputError(path, "is a directory, not an image")
    if not stat.S_ISREG(info.st_mode):
        raise BadInputError(path, "not a regular file (a FIFO, device or socket), not an image")
    if info.st_size > MAX_FILE_BYTES:
        raise BadInputError(
            path,
            f"file is {info.st_size / _MIB:.1f} MiB; images over"
            f" {MAX_FILE_BYTES // _MIB} MiB are refused unread",
        )


def _decode(file: BinaryIO, path: Path, max_side_px: int | None, min_side_px: int) -> ImageArray:
    try:
        with Image.open(file, formats=DECODERS) as img:
            _check_decode_size(img, path, max_side_px)
            img.load()
            return to_rgb_array(img, path, max_side_px=max_side_px, min_side_px=min_side_px)
    except BadInputError:
        raise
    except UnidentifiedImageError:
        raise BadInputError(path, "not an image file (not JPEG, PNG, BMP, WebP or TIFF)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Image.open itself raises this for headers over 179 MP, before our own check sees
        # the size (89-179 MP only warns, and our budget refuses those); the warning is
        # raised here only where warnings are turned into errors.
        raise BadInputError(path, f"image too large to decode safely: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInputError(path, f"unreadable or truncated image: {exc}") from None
    except MemoryError:
        raise BadInputError(path, "not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes, not our bug: see below
        # Pillow's decoders raise struct.error, IndexError, TypeError ... on some malformed
        # files; for a parser of untrusted files any of them means "bad image", never a crash.
        logger.debug("decoding %s raised %s", path, type(exc).__name__, exc_info=True)
        raise BadInputError(path, f"unreadable image ({type(exc).__name__}: {exc})") from None


def _check_decode_size(img: Image.Image, path: Path, max_side_px: int | None) -> None:
    """Refuse from the header alone an image whose decoding would cost too much memory."""
    full_w, full_h = img.size
    is_jpeg = isinstance(img, JpegImagePlugin.JpegImageFile)  # MPO (camera JPEGs) too
    if is_jpeg and max_side_px is not None:
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale almost for free: far faster, far smaller.
        img.draft("RGB", (max_side_px, max_side_px))
    width, height = img.size
    if is_jpeg and img.info.get("progressive"):
        # A progressive JPEG keeps every DCT coefficient of the full image in memory, at any
        # draft scale: its budget is the full size.
        width, height = full_w, full_h
    if width * height > MAX_DECODE_PIXELS:
        raise BadInputError(
            path,
            f"image is {full_w}x{full_h} px: decoding {width * height / 1e6:.0f} MP exceeds"
            f" the {MAX_DECODE_PIXELS / 1e6:.0f} MP budget (refused before decoding)",
        )


def to_rgb_array(
    img: Image.Image,
    source: str | Path = "<image>",
    *,
    max_side_px: int | None = MAX_SIDE_PX,
    min_side_px: int = MIN_SIDE_PX,
) -> ImageArray:
    """Normalise a decoded Pillow image: bounded size, EXIF orientation, alpha on white, RGB."""
    if img.mode not in _RESIZABLE_MODES:
        img = img.convert("RGBA" if _has_alpha(img) else "RGB")
    if max_side_px is not None and max(img.size) > max_side_px:
        # Shrink first: every later step copies the image, and copies of a 40 MP image
        # cost hundreds of MB. Resizing RGBA/LA weights colours by alpha, as compositing does.
        img.thumbnail((max_side_px, max_side_px), Image.Resampling.BILINEAR)
    # Both calls copy the whole image even when there is nothing to do (a 640x480 frame
    # decoded 2.5 ms faster without them), so only make them when they change something.
    if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if _has_alpha(img):
        img = _on_white(img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    if min(img.size) < min_side_px:
        raise BadInputError(
            source, f"image is {img.size[0]}x{img.size[1]} px, too small to hold a face"
        )
    return np.asarray(img, dtype=np.uint8)


#: Modes Pillow resizes directly; others (palette, 16-bit, CMYK, 1-bit) are converted first.
_RESIZABLE_MODES: Final = frozenset({"RGB", "RGBA", "L", "LA"})


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info


def _on_white(img: Image.Image) -> Image.Image:
    """Composite transparency onto white, as a viewer would show it."""
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    # Pasting through the alpha band onto RGB white needs one RGB copy; alpha_composite
    # needed three RGBA ones (600 MB more at 40 MP).
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba)
    return background
