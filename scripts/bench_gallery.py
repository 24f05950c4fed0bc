"""Benchmark enrollment, matching and gallery loading; compare nearest vs mean-template.

    .venv/bin/python scripts/bench_gallery.py [--models models] [--skip-synthetic]

Prints: enrolling 5-celebrity train from scratch and unchanged (s), identify against
10k and 100k people x 5 synthetic unit embeddings (median ms), loading a 100k x 5 gallery
(ms, fresh process), and on the real data TAR at L2 0.9 / at zero false accepts for nearest
embedding vs per-person mean template (val probes against the train gallery).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facegate.enroll import LazyEngine, enroll
from facegate.errors import BadInputError
from facegate.gallery import Gallery, GalleryEntry, PersonPolicy
from facegate.imageio import load_image
from facegate.matching import Matcher, l2_normalize
from facegate.vision.engine import FaceEngine
from facegate.vision.types import FloatArray

THRESHOLD = 0.9
PER_PERSON = 5


def identify_median_ms(matcher: Matcher, probes: FloatArray) -> float:
    """Median wall time of one 1:K identify (with a margin, as the daemon calls it)."""
    times = []
    for probe in probes:
        start = time.perf_counter()
        matcher.identify(probe, THRESHOLD, 0.1)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def synthetic_gallery(people: int, seed: int = 0) -> Gallery:
    """`people` x PER_PERSON unit embeddings scattered around one centre per person."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.normal(size=(people, 128)).astype(np.float32))
    noise = rng.normal(scale=0.05, size=(people, PER_PERSON, 128)).astype(np.float32)
    embeddings = l2_normalize(centres[:, None, :] + noise)
    ids = [f"p{i:06d}" for i in range(people)]
    entries = [
        GalleryEntry(
            ids[i], f"people/{ids[i]}/{j}.jpg", hashlib.sha256(b"%d/%d" % (i, j)).hexdigest(),
            100.0, 50.0, 1.7e9, embeddings[i, j],
        )
        for i in range(people)
        for j in range(PER_PERSON)
    ]  # fmt: skip
    policies = [PersonPolicy(pid, pid, ("*",)) for pid in ids]
    return Gallery.build(fingerprint="0" * 64, people=policies, entries=entries)


def bench_synthetic(workdir: Path) -> dict[str, float]:
    results: dict[str, float] = {}
    probes = l2_normalize(np.random.default_rng(9).normal(size=(200, 128)).astype(np.float32))
    for people in (10_000, 100_000):
        start = time.perf_counter()
        gallery = synthetic_gallery(people)
        print(f"  built {people} x {PER_PERSON} in {time.perf_counter() - start:.1f} s", flush=True)
        matcher = gallery.matcher()
        scale = f"{people // 1000}k"
        results[f"identify_{scale}_ms"] = identify_median_ms(matcher, probes)
        results[f"identify_enrolled_{scale}_ms"] = identify_median_ms(
            matcher, gallery.templates[:200]
        )
        if people == 100_000:
            path = workdir / "big.fgg"
            gallery.save(path)
            results["gallery_100k_mb"] = path.stat().st_size / 1e6
            results.update(bench_load(path))
    return results


_LOAD = """
import sys, time
t = time.perf_counter()
from facegate.gallery import Gallery
t0 = time.perf_counter()
g = Gallery.load(sys.argv[1], "0" * 64)
t1 = time.perf_counter()
g.matcher()
t2 = time.perf_counter()
print((t1 - t0) * 1000, (t2 - t0) * 1000)
"""


def bench_load(path: Path) -> dict[str, float]:
    """Load in fresh processes (warm page cache, cold heap: what a daemon start sees)."""
    loads, with_matcher = [], []
    for _ in range(7):
        out = subprocess.run(
            [sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True, check=True
        )
        load_ms, matcher_ms = map(float, out.stdout.split())
        loads.append(load_ms)
        with_matcher.append(matcher_ms)
    return {
        "load_100k_ms": statistics.median(loads),
        "load_100k_ms_min": min(loads),
        "load_plus_matcher_100k_ms": statistics.median(with_matcher),
    }


def write_enrollment(folder: Path, train: Path) -> Path:
    people = sorted(p.name for p in train.iterdir() if p.is_dir())
    lines = ["people:"]
    for person in people:
        lines += [f"  - id: {person}", f"    images: [{json.dumps(str(train / person))}]"]
        lines += ['    doors: ["*"]']
    path = folder / "enrollment.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_enroll(models: Path, celeb: Path, workdir: Path) -> tuple[dict[str, float], Path]:
    enrollment = write_enrollment(workdir, celeb / "train")
    gallery = workdir / "celeb.fgg"
    start = time.perf_counter()
    first = enroll(enrollment, gallery, LazyEngine(models), skip_bad=True)
    scratch = time.perf_counter() - start
    start = time.perf_counter()
    again = enroll(enrollment, gallery, LazyEngine(models), skip_bad=True)
    unchanged = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "facegate", "enroll", "--enrollment", str(enrollment),
         "--gallery", str(gallery), "--models", str(models), "--skip-bad", "--json"],
        check=True, capture_output=True,
    )  # fmt: skip
    cli = time.perf_counter() - start
    rejected = sum(len(p.rejected) for p in first.people)
    return {
        "enroll_scratch_s": scratch,
        "enroll_images_embedded": first.embedded,
        "enroll_images_rejected": rejected,
        "enroll_unchanged_s": unchanged,
        "enroll_unchanged_model_calls": again.embedded + rejected,  # rejected ones are retried
        "enroll_unchanged_cli_wall_s": cli,
    }, gallery


def val_probes(engine: FaceEngine, val: Path) -> tuple[list[str], FloatArray]:
    labels, vectors = [], []
    for person_dir in sorted(val.iterdir()):
        for path in sorted(person_dir.glob("*.jpg")):
            try:
                face = engine.encode_one(load_image(path), path)
            except BadInputError:
                continue
            assert face.embedding is not None
            labels.append(person_dir.name)
            vectors.append(face.embedding)
    return labels, np.stack(vectors)


def per_identity_distances(gallery: Gallery, probes: FloatArray) -> dict[str, FloatArray]:
    """(P, K) L2 distances: to each mean template, and to each person's nearest embedding."""
    templates = np.sqrt(np.clip(2 - 2 * probes @ gallery.templates.T, 0, 4))
    rows = np.sqrt(np.clip(2 - 2 * probes @ gallery.embeddings.T, 0, 4))
    owner = np.array([gallery.person_ids.index(e.person_id) for e in gallery.entries()])
    nearest = np.stack([rows[:, owner == k].min(axis=1) for k in range(len(gallery))], axis=1)
    return {"mean_template": templates, "nearest_embedding": nearest}


def accuracy(dist: FloatArray, truth: FloatArray) -> dict[str, float]:
    """Verification (every probe x identity pair) and 1:K identification at THRESHOLD."""
    genuine, impostor = dist[truth], dist[~truth]
    zero_fa = float(impostor.min())  # accept strictly below the closest impostor
    best = dist.argmin(axis=1)
    best_dist = dist[np.arange(len(dist)), best]
    correct = truth[np.arange(len(dist)), best]
    return {
        "tar_at_0.9": float(np.mean(genuine <= THRESHOLD)),
        "false_accepts_at_0.9": int(np.sum(impostor <= THRESHOLD)),
        "zero_fa_threshold": zero_fa,
        "tar_at_zero_fa": float(np.mean(genuine < zero_fa)),
        "identify_correct_at_0.9": float(np.mean(correct & (best_dist <= THRESHOLD))),
        "identify_wrong_at_0.9": int(np.sum(~correct & (best_dist <= THRESHOLD))),
    }


def bench_accuracy(models: Path, celeb: Path, gallery_path: Path) -> dict[str, object]:
    engine = FaceEngine.load(models)
    gallery = Gallery.load(gallery_path, engine.fingerprint)
    labels, probes = val_probes(engine, celeb / "val")
    ids = list(gallery.person_ids)
    truth = np.array([[ids[k] == label for k in range(len(ids))] for label in labels])
    out: dict[str, object] = {
        "val_probes": len(labels),
        "train_embeddings": len(gallery.embeddings),
    }
    for name, dist in per_identity_distances(gallery, probes).items():
        out[name] = accuracy(dist, truth)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    celeb = args.models.resolve() / "data" / "5-celebrity"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results: dict[str, object] = {}
        enrolled, gallery = bench_enroll(args.models, celeb, workdir)
        results.update(enrolled)
        results.update(bench_accuracy(args.models, celeb, gallery))
        if not args.skip_synthetic:
            results.update(bench_synthetic(workdir))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
