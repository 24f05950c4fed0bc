"""face_recognition (dlib) side of `facegate bench`; runs inside its own venv.

    bench-fr-venv/bin/python scripts/bench_face_recognition.py \
        --frames bench/out/frames --dataset models/data/5-celebrity --out fr.json

Pinned to one CPU core (as face_recognition is used on a Pi: its HOG detector is single
threaded) with BLAS threads set to 1. Per frame: decode (`load_image_file`), HOG
`face_locations` (its default, upsample 1) and `face_encodings` (5-point landmarks, ResNet).
For accuracy every dataset image is encoded with its own detector; an image with no face or
several faces is a failure to enroll, the same rule facegate applies.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import face_recognition
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def summarise(ms: list[float]) -> dict[str, float]:
    values = np.asarray(ms, dtype=np.float64)
    return {
        "min": float(values.min()),
        "p50": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
    }


def frame_latency(frames: list[Path], iterations: int, warmup: int) -> dict[str, Any]:
    stages: dict[str, list[float]] = {"decode": [], "detect": [], "embed": [], "frame": []}
    missed = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(warmup + iterations):
        t0 = time.perf_counter()
        image = face_recognition.load_image_file(str(frames[i % len(frames)]))
        t1 = time.perf_counter()
        boxes = face_recognition.face_locations(image)
        t2 = time.perf_counter()
        face_recognition.face_encodings(image, boxes)
        t3 = time.perf_counter()
        if i < warmup:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            continue
        missed += len(boxes) != 1
        for name, value in (("decode", t1 - t0), ("detect", t2 - t1), ("embed", t3 - t2),
                            ("frame", t3 - t0)):  # fmt: skip
            stages[name].append(value * 1000)
    cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return {
        "stages_ms": {k: summarise(v) for k, v in stages.items() if k != "frame"},
        "frame_ms": summarise(stages["frame"]),
        "fps": 1000.0 / float(np.mean(stages["frame"])),
        "frames_without_exactly_one_face": missed,
        "cpu_share_while_running": cpu_share,
        "iterations": iterations,
    }


def dataset_embeddings(root: Path) -> dict[str, Any]:
    """path -> 128-D dlib encoding, or the reason it could not be enrolled."""
    out: dict[str, Any] = {}
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        image = face_recognition.load_image_file(str(path))
        boxes = face_recognition.face_locations(image)
        if len(boxes) != 1:
            out[str(path)] = {"failure": "no face found" if not boxes else f"{len(boxes)} faces"}
            continue
        encoding = face_recognition.face_encodings(image, boxes)[0]
        out[str(path)] = {"embedding": [float(x) for x in encoding]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    frames = sorted(args.frames.glob("*.jpg"))
    result = {
        "system": "face_recognition " + face_recognition.__version__,
        "threads": 1,
        "detector": "HOG, upsample 1 (default)",
        "speed": frame_latency(frames, args.iterations, warmup=2),
        "images": dataset_embeddings(args.dataset.resolve()),
    }
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
