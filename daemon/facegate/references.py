"""Ad-hoc references for `verify --refs DIR` / `identify --refs DIR`: no gallery file needed.

DIR holds `<id>.<ext>` images and/or `<id>/` folders of images; every image must hold
exactly one usable face (else a BadInputError naming it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegate.errors import BadInputError
from facegate.files import IMAGE_SUFFIXES
from facegate.imageio import load_image
from facegate.matching import Matcher
from facegate.vision.engine import FaceEngine


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


def load_references(root: Path, engine: FaceEngine) -> Matcher:
    """Embed every reference image and build one template per identity."""
    pairs = reference_images(root)
    vectors = []
    for _, path in pairs:
        embedding = engine.encode_one(load_image(path), path).embedding
        assert embedding is not None
        vectors.append(embedding)
    return Matcher.from_embeddings(np.stack(vectors), [identity for identity, _ in pairs])
