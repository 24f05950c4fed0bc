"""Ad-hoc references for `verify --refs DIR` / `identify --refs DIR`: no gallery file needed.

DIR holds `<id>.<ext>` images and/or `<id>/` folders of images: a one-shot database (one
tight face crop per person, as in the FaceNet tutorials) works as it is. Images are judged
by the photo gate (native resolution). An unusable reference (no face, two faces, too
small or blurred, unreadable) is skipped and reported; only when nothing usable is left
for what was asked is it a BadInputError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.errors import BadInputError
from facegate.files import IMAGE_SUFFIXES
from facegate.imageio import load_image
from facegate.matching import Matcher
from facegate.vision.engine import FaceEngine
from facegate.vision.quality import DEFAULT_PHOTO_GATE, Gate


@dataclass(frozen=True, slots=True)
class SkippedReference:
    """A reference image left out, and why (the error's text names the file)."""

    identity: str
    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class References:
    """The matcher over every usable reference, and the references skipped."""

    matcher: Matcher
    skipped: tuple[SkippedReference, ...]


def reference_images(root: Path) -> list[tuple[str, Path]]:
    """(identity, image path) pairs found in `root`, sorted."""
    if not root.is_dir():
        raise BadInputError(root, "references folder not found")
    pairs: list[tuple[str, Path]] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            pairs += [
                (entry.name, p)
                for p in sorted(entry.iterdir())
                if p.suffix.lower() in IMAGE_SUFFIXES
            ]
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            pairs.append((entry.stem, entry))
    if not pairs:
        raise BadInputError(root, "no <id>.<ext> images or <id>/ folders of images found")
    return pairs


def load_references(
    root: Path,
    engine: FaceEngine,
    gate: Gate = DEFAULT_PHOTO_GATE,
    only: str | None = None,
    on_skip: Callable[[SkippedReference], object] | None = None,
) -> References:
    """Embed the reference images (all, or only identity `only`'s) and build one template
    per identity; unusable images are skipped (`on_skip` hears of each at once, so even a
    final error is explained). BadInputError if `only` has no image at all ("not
    enrolled") or no usable one, or if no reference at all is usable."""
    pairs = reference_images(root)
    if only is not None:
        pairs = [(identity, path) for identity, path in pairs if identity == only]
        if not pairs:
            raise BadInputError(root, f"{only!r} is not enrolled")
    vectors, labels, skipped = [], [], []
    for identity, path in pairs:
        try:
            embedding = engine.encode_one(load_image(path), path, gate).embedding
        except BadInputError as exc:
            skipped.append(SkippedReference(identity, path, str(exc)))
            if on_skip is not None:
                on_skip(skipped[-1])
            continue
        assert embedding is not None  # encode_one returns only usable faces
        vectors.append(embedding)
        labels.append(identity)
    if not vectors:
        whose = f"of {only!r} " if only is not None else ""
        raise BadInputError(root, f"no usable reference image {whose}({len(skipped)} skipped)")
    return References(Matcher.from_embeddings(np.stack(vectors), labels), tuple(skipped))
