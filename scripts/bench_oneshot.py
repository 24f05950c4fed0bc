#!/usr/bin/env python3
"""One-shot databases (issue 14, item 1): tight 96x96 face crops of the 5-celebrity photos.

    .venv/bin/python scripts/bench_oneshot.py [--factor 1.6] [--factor 2.0] [--blur 1.0]

For each crop factor (face box x factor = the crop's side; 1.6 gives faces of 34-68 px)
it reports how many crops enroll under the photo gate, the distances of genuine pairs and
the nearest stranger, acceptance at the door threshold (single pairs, and one-shot: the
first usable train crop of each person as the reference, every val crop as a probe), and
the failure to enroll of the full photos under the gates before and after this change.
Deterministic (no timing): the numbers do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from facegate.errors import BadInputError  # noqa: E402
from facegate.imageio import load_image  # noqa: E402
from facegate.matching import Matcher  # noqa: E402
from facegate.vision.engine import FaceEngine, default_models_dir  # noqa: E402
from facegate.vision.quality import DEFAULT_GATE, PhotoGate, QualityGate  # noqa: E402
from facegate.vision.types import FloatArray, ImageArray  # noqa: E402
from oneshot import TIGHT, tight_crop  # noqa: E402

CELEB = REPO / "models" / "data" / "5-celebrity"
THRESHOLD = 0.9
MARGIN = 0.1


@dataclass(frozen=True)
class Photo:
    split: str
    person: str
    path: Path


@dataclass(frozen=True)
class Enrolled:
    photo: Photo
    face_px: float
    embedding: FloatArray


def photos() -> list[Photo]:
    return [
        Photo(split, person.name, path)
        for split in ("train", "val")
        for person in sorted((CELEB / split).iterdir())
        for path in sorted(person.glob("*.jpg"))
    ]


def enroll_all(
    engine: FaceEngine,
    images: Sequence[tuple[Photo, ImageArray | None]],
    gate: PhotoGate | QualityGate,
) -> tuple[list[Enrolled], dict[str, int]]:
    """Who enrolls under `gate`, and why the others did not (refusal counts)."""
    enrolled: list[Enrolled] = []
    refused: dict[str, int] = {}
    for photo, image in images:
        try:
            if image is None:
                raise BadInputError(photo.path, "no face found (when cropping)")
            face = engine.encode_one(image, photo.path, gate)
        except BadInputError as exc:
            key = exc.detail.split(" (")[0]
            refused[key] = refused.get(key, 0) + 1
            continue
        assert face.embedding is not None
        enrolled.append(Enrolled(photo, face.quality.face_px, face.embedding))
    return enrolled, refused


def pair_stats(enrolled: list[Enrolled]) -> dict[str, float]:
    vectors = np.stack([e.embedding for e in enrolled])
    labels = np.array([e.photo.person for e in enrolled])
    dist = np.sqrt(np.clip(2 - 2 * vectors @ vectors.T, 0, 4))
    upper = np.triu_indices(len(enrolled), 1)
    same = (labels[:, None] == labels[None, :])[upper]
    pairs = dist[upper]
    genuine, impostor = pairs[same], pairs[~same]
    return {
        "genuine_pairs": len(genuine),
        "genuine_min": float(genuine.min()),
        "genuine_median": float(np.median(genuine)),
        "genuine_max": float(genuine.max()),
        "genuine_accepted": float(np.mean(genuine <= THRESHOLD)),
        "impostor_pairs": len(impostor),
        "nearest_stranger": float(impostor.min()),
        "impostor_accepted": int(np.sum(impostor <= THRESHOLD)),
    }


def one_shot(enrolled: list[Enrolled]) -> dict[str, float]:
    """One reference per person (their first usable train crop), every val crop a probe."""
    refs: dict[str, Enrolled] = {}
    for e in enrolled:
        if e.photo.split == "train":
            refs.setdefault(e.photo.person, e)
    names = sorted(refs)
    matcher = Matcher(names, np.stack([refs[n].embedding for n in names]))
    probes = [e for e in enrolled if e.photo.split == "val" and e.photo.person in refs]
    genuine, stranger, accepted, identified, false_accepts = [], [], 0, 0, 0
    for probe in probes:
        dist = matcher.distances(probe.embedding)
        own = names.index(probe.photo.person)
        genuine.append(float(dist[own]))
        stranger.append(float(np.delete(dist, own).min()))
        accepted += matcher.verify(probe.embedding, probe.photo.person, THRESHOLD).accepted
        false_accepts += sum(
            matcher.verify(probe.embedding, n, THRESHOLD).accepted
            for n in names
            if n != probe.photo.person
        )
        found = matcher.identify(probe.embedding, THRESHOLD, MARGIN)
        identified += found.identity == probe.photo.person
        false_accepts += found.accepted and found.identity != probe.photo.person
    return {
        "probes": len(probes),
        "genuine_median": float(np.median(genuine)),
        "genuine_max": float(max(genuine)),
        "nearest_stranger": float(min(stranger)),
        "verify_accepted": accepted / len(probes),
        "identify_correct": identified / len(probes),
        "false_accepts": false_accepts,
    }


def blurred(image: ImageArray | None, sigma: float) -> ImageArray | None:
    if image is None or sigma <= 0:
        return image
    return np.asarray(cv2.GaussianBlur(image, (0, 0), sigma))


def report_crops(engine: FaceEngine, all_photos: list[Photo], factor: float, blur: float) -> None:
    crops = [(p, blurred(tight_crop(engine, p.path, factor), blur)) for p in all_photos]
    enrolled, refused = enroll_all(engine, crops, PhotoGate())
    sizes = [e.face_px for e in enrolled]
    label = f"factor {factor}" + (f", Gaussian blur {blur} px" if blur else "")
    print(f"\n### 96x96 crops, {label}\n")
    print(f"enrolled {len(enrolled)}/{len(crops)} ({len(enrolled) / len(crops):.1%})", end="")
    print(f"; faces {min(sizes):.0f}-{max(sizes):.0f} px (median {np.median(sizes):.0f})")
    print(f"refused: {refused or 'none'}")
    if len(enrolled) < 2:
        return
    pairs = pair_stats(enrolled)
    print(
        f"all pairs: genuine {pairs['genuine_pairs']:.0f}, L2 {pairs['genuine_min']:.2f}-"
        f"{pairs['genuine_max']:.2f} (median {pairs['genuine_median']:.2f}),"
        f" {pairs['genuine_accepted']:.1%} within {THRESHOLD}; impostor"
        f" {pairs['impostor_pairs']:.0f}, nearest stranger {pairs['nearest_stranger']:.3f},"
        f" accepted {pairs['impostor_accepted']}"
    )
    shot = one_shot(enrolled)
    print(
        f"one-shot (1 train crop per person, {shot['probes']:.0f} val probes): genuine median"
        f" {shot['genuine_median']:.2f}, max {shot['genuine_max']:.2f}; nearest stranger"
        f" {shot['nearest_stranger']:.3f}; verify accepted {shot['verify_accepted']:.0%},"
        f" identify correct {shot['identify_correct']:.0%}, false accepts"
        f" {shot['false_accepts']:.0f}"
    )


def report_full_set(engine: FaceEngine, all_photos: list[Photo]) -> None:
    print("\n### full 5-celebrity photos: failure to enroll\n")
    images = [(p, load_image(p.path)) for p in all_photos]
    door = QualityGate(80.0, DEFAULT_GATE.min_sharpness, DEFAULT_GATE.max_yaw_deg)
    for name, gate in (
        ("before: CLI default gate (40 px, aligned sharpness, 30 deg)", DEFAULT_GATE),
        ("before: `enroll --config` with the default door gate (80 px)", door),
        ("after: photo gate (32 px, detail 14 px, 45 deg)", PhotoGate()),
    ):
        enrolled, refused = enroll_all(engine, images, gate)
        failed = len(images) - len(enrolled)
        print(f"{name}: {failed}/{len(images)} fail ({failed / len(images):.1%}): {refused}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--factor", type=float, action="append", help=f"default {TIGHT}")
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian blur of each crop, px")
    args = parser.parse_args()
    engine = FaceEngine.load(args.models or default_models_dir(), "int8")
    all_photos = photos()
    for factor in args.factor or [TIGHT]:
        report_crops(engine, all_photos, factor, args.blur)
    report_full_set(engine, all_photos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
