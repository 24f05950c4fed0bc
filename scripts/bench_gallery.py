"""Benchmark enrollment, matching and gallery loading; compare nearest vs mean-template.

    .venv/bin/python scripts/bench_gallery.py [--models models] [--skip-synthetic]

Prints: enrolling 5-celebrity train from scratch and unchanged (s), identify against
10k and 100k people x 5 synthetic unit embeddings (median ms), loading a 100k x 5 gallery
(ms, fresh process), and on the real data TAR at L2 0.9 / at zero false accepts for nearest
embedding vs per-person mean template (val probes against the train gallery).
The .fgg format against safetensors, .npz and .npy (mmap): scripts/bench_storage.py gallery.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

# Shared with `facegate bench` (gallery scaling), so both measure the same thing.
from facegate.bench import PER_PERSON, identify_median_ms, synthetic_gallery
from facegate.enroll import LazyEngine, enroll
from facegate.errors import BadInputError
from facegate.gallery import Gallery
from facegate.imageio import load_image
from facegate.vision.engine import FaceEngine
from facegate.vision.types import FloatArray, l2_normalize

THRESHOLD = 0.9


def bench_synthetic(workdir: Path) -> dict[str, float]:
    results: dict[str, float] = {}
    probes = l2_normalize(np.random.default_rng(9).normal(size=(200, 128)).astype(np.float32))
    for people in (10_000, 100_000):
        start = time.perf_counter()
        gallery = synthetic_gallery(people)
        print(
            f"built {people} x {PER_PERSON} in {time.perf_counter() - start:.1f} s", file=sys.stderr
        )
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


def write_enrollment(path: Path, images: dict[str, list[Path]]) -> Path:
    lines = ["people:"]
    for person, files in images.items():
        lines += [f"  - id: {person}", f"    images: {json.dumps([str(f) for f in files])}"]
        lines += ['    doors: ["*"]']
    path.write_text("\n".join(lines) + "\n")
    return path


def timed_cli(enrollment: Path, gallery: Path, models: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "facegate", "enroll", "--enrollment", str(enrollment),
         "--gallery", str(gallery), "--models", str(models), "--skip-bad", "--json"],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def bench_enroll(models: Path, celeb: Path, workdir: Path) -> tuple[dict[str, float], Path]:
    """From scratch, unchanged (the set's 6 bad images are retried), and unchanged with the
    bad images dropped from the YAML (no model work at all)."""
    train = celeb / "train"
    folders = {p.name: [p] for p in sorted(train.iterdir()) if p.is_dir()}
    enrollment = write_enrollment(workdir / "enrollment.yaml", folders)
    gallery = workdir / "celeb.fgg"
    start = time.perf_counter()
    first = enroll(enrollment, gallery, LazyEngine(models), skip_bad=True)
    scratch = time.perf_counter() - start
    start = time.perf_counter()
    again = enroll(enrollment, gallery, LazyEngine(models), skip_bad=True)
    unchanged = time.perf_counter() - start
    cli = timed_cli(enrollment, gallery, models)
    bad = {Path(r.image).name for p in first.people for r in p.rejected}
    clean = write_enrollment(
        workdir / "clean.yaml",
        {
            n: [f for f in sorted(d[0].glob("*.jpg")) if f.name not in bad]
            for n, d in folders.items()
        },
    )
    start = time.perf_counter()
    clean_run = enroll(clean, gallery, LazyEngine(models))
    clean_s = time.perf_counter() - start
    return {
        "enroll_scratch_s": scratch,
        "enroll_images_embedded": first.embedded,
        "enroll_images_rejected": len(bad),
        "enroll_unchanged_s": unchanged,
        "enroll_unchanged_model_calls": again.embedded + len(bad),  # rejected ones are retried
        "enroll_unchanged_cli_wall_s": cli,
        "enroll_unchanged_clean_s": clean_s,
        "enroll_unchanged_clean_model_calls": clean_run.embedded,
        "enroll_unchanged_clean_cli_wall_s": timed_cli(clean, gallery, models),
    }, gallery


def embed_split(engine: FaceEngine, split: Path) -> tuple[list[str], FloatArray]:
    """Embeddings of every image with one usable face in <split>/<person>/*.jpg."""
    labels, vectors = [], []
    for person_dir in sorted(split.iterdir()):
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


def leave_one_out(labels: list[str], vectors: FloatArray) -> dict[str, FloatArray]:
    """(M, K) distances of every image to every identity built from all *other* images."""
    ids = sorted(set(labels))
    owner = np.array([ids.index(label) for label in labels])
    rows = np.sqrt(np.clip(2 - 2 * vectors @ vectors.T, 0, 4))
    np.fill_diagonal(rows, np.inf)  # an image never matches itself
    nearest = np.stack([rows[:, owner == k].min(axis=1) for k in range(len(ids))], axis=1)
    sums = np.stack([vectors[owner == k].sum(axis=0) for k in range(len(ids))])
    templates = np.sqrt(np.clip(2 - 2 * vectors @ l2_normalize(sums).T, 0, 4))
    own = l2_normalize(sums[owner] - vectors)  # the probe's own template, without the probe
    own_cos = np.einsum("ij,ij->i", vectors, own)
    templates[np.arange(len(labels)), owner] = np.sqrt(np.clip(2 - 2 * own_cos, 0, 4))
    return {"mean_template": templates, "nearest_embedding": nearest}


def truth_matrix(labels: list[str], ids: list[str]) -> npt.NDArray[np.bool_]:
    return np.array([[identity == label for identity in ids] for label in labels])


def accuracy(dist: FloatArray, truth: npt.NDArray[np.bool_]) -> dict[str, float]:
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
    """Val probes against the enrolled train gallery, and leave-one-out over train + val."""
    engine = FaceEngine.load(models)
    gallery = Gallery.load(gallery_path, engine.fingerprint)
    val_labels, val = embed_split(engine, celeb / "val")
    train_labels, train = embed_split(engine, celeb / "train")
    out: dict[str, object] = {"val_probes": len(val_labels), "train_embeddings": len(train)}
    truth = truth_matrix(val_labels, list(gallery.person_ids))
    for name, dist in per_identity_distances(gallery, val).items():
        out[f"val_vs_train/{name}"] = accuracy(dist, truth)
    labels = train_labels + val_labels
    truth = truth_matrix(labels, sorted(set(labels)))
    for name, dist in leave_one_out(labels, np.concatenate([train, val])).items():
        out[f"leave_one_out_{len(labels)}/{name}"] = accuracy(dist, truth)
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
    # Other work on the machine skews every timing here: record how busy it was.
    results["load_average_1min"] = os.getloadavg()[0]
    results["cpus"] = os.cpu_count() or 0
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
