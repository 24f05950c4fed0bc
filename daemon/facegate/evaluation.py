"""Accuracy of the engine on a labelled dataset: pairs, EER, TAR at fixed FAR, top-1.

Used by `facegate evaluate` and the benchmarks. Distances are L2 between unit embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from facegate.errors import BadInputError
from facegate.files import IMAGE_SUFFIXES
from facegate.imageio import load_image
from facegate.matching import Matcher
from facegate.vision.engine import FaceEngine
from facegate.vision.types import FloatArray

logger = logging.getLogger(__name__)

SPLITS: Final = ("train", "val")


@dataclass(frozen=True, slots=True)
class Sample:
    path: Path
    person: str
    split: str  # "train", "val" or "all"


@dataclass(frozen=True, slots=True)
class Roc:
    """Pair scores summarised: EER (and its threshold) and TAR at fixed false-accept rates."""

    eer: float
    threshold_eer: float
    tar_at_far: dict[str, float]
    threshold_at_far: dict[str, float]
    pairs_genuine: int
    pairs_impostor: int


@dataclass(frozen=True, slots=True)
class EvalReport:
    roc: Roc
    top1: float
    probes: int
    images: int
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "eer": self.roc.eer,
            "threshold_eer": self.roc.threshold_eer,
            "pairs_genuine": self.roc.pairs_genuine,
            "pairs_impostor": self.roc.pairs_impostor,
            "top1": self.top1,
            "probes": self.probes,
            "images": self.images,
            "failures": [{"image": p, "reason": r} for p, r in self.failures],
        }
        for key, value in self.roc.tar_at_far.items():
            out[f"tar_at_far_{key}"] = value
            out[f"threshold_at_far_{key}"] = self.roc.threshold_at_far[key]
        return out


FAR_POINTS: Final = {"1e-2": 1e-2, "1e-3": 1e-3, "0": 0.0}


def scan_dataset(root: Path) -> list[Sample]:
    """`root/<person>/*.jpg`, or `root/{train,val}/<person>/*.jpg`."""
    if not root.is_dir():
        raise BadInputError(root, "dataset folder not found")
    has_splits = all((root / s).is_dir() for s in SPLITS)
    groups = [(root / s, s) for s in SPLITS] if has_splits else [(root, "all")]
    samples = [
        Sample(path, person_dir.name, split)
        for base, split in groups
        for person_dir in sorted(p for p in base.iterdir() if p.is_dir())
        for path in sorted(person_dir.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if len({s.person for s in samples}) < 2:
        raise BadInputError(root, "need images of at least 2 people in <person>/ folders")
    return samples


def pair_distances(embeddings: FloatArray, labels: np.ndarray) -> tuple[FloatArray, FloatArray]:
    """Distances of all genuine and all impostor pairs (each unordered pair once)."""
    cos = embeddings @ embeddings.T
    dist = np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, 4.0))
    upper = np.triu_indices(len(embeddings), k=1)
    same = (labels[:, None] == labels[None, :])[upper]
    flat = dist[upper]
    return flat[same], flat[~same]


def roc_summary(genuine: FloatArray, impostor: FloatArray) -> Roc:
    """Exact EER and TAR@FAR from sorted pair distances (accept when distance <= t)."""
    gen, imp = np.sort(genuine), np.sort(impostor)
    thresholds = np.concatenate([gen, imp])
    far = np.searchsorted(imp, thresholds, side="right") / len(imp)
    frr = 1.0 - np.searchsorted(gen, thresholds, side="right") / len(gen)
    best = int(np.argmin(np.abs(far - frr)))
    tar: dict[str, float] = {}
    at: dict[str, float] = {}
    for key, target in FAR_POINTS.items():
        # The k-th smallest impostor distance is the first one we may not accept.
        allowed = int(np.floor(target * len(imp)))
        limit = imp[allowed] if allowed < len(imp) else np.inf
        tar[key] = float(np.searchsorted(gen, limit, side="left") / len(gen))
        below = gen[gen < limit]
        at[key] = float(below.max()) if len(below) else 0.0
    return Roc(
        eer=float((far[best] + frr[best]) / 2),
        threshold_eer=float(thresholds[best]),
        tar_at_far=tar,
        threshold_at_far=at,
        pairs_genuine=len(gen),
        pairs_impostor=len(imp),
    )


def top1_accuracy(
    embeddings: FloatArray, labels: np.ndarray, splits: np.ndarray
) -> tuple[float, int]:
    """Train templates as gallery, val images as probes; leave-one-out when unsplit."""
    if (splits == "train").any() and (splits == "val").any():
        matcher = Matcher.from_embeddings(
            embeddings[splits == "train"], list(labels[splits == "train"])
        )
        probes, truth = embeddings[splits == "val"], labels[splits == "val"]
        names = np.array(matcher.identities)
        best = [names[int(np.argmin(matcher.distances(p)))] for p in probes]
        return float(np.mean(np.array(best) == truth)), len(probes)
    dist = np.sqrt(np.clip(2.0 - 2.0 * embeddings @ embeddings.T, 0.0, 4.0))
    np.fill_diagonal(dist, np.inf)
    return float(np.mean(labels[np.argmin(dist, axis=1)] == labels)), len(labels)


def embed_samples(
    engine: FaceEngine, samples: Iterable[Sample]
) -> tuple[list[Sample], FloatArray, list[tuple[str, str]]]:
    """One embedding per image that holds exactly one usable face; the rest are failures."""
    kept: list[Sample] = []
    vectors: list[FloatArray] = []
    failures: list[tuple[str, str]] = []
    for sample in samples:
        try:
            encoding = engine.encode_one(load_image(sample.path), sample.path)
        except BadInputError as exc:
            failures.append((str(sample.path), exc.detail))
            continue
        assert encoding.embedding is not None
        kept.append(sample)
        vectors.append(encoding.embedding)
    return kept, np.array(vectors, dtype=np.float32).reshape(-1, 128), failures


def evaluate(engine: FaceEngine, root: Path) -> tuple[EvalReport, FloatArray, FloatArray]:
    """Evaluate on a dataset folder; also returns the genuine and impostor distances."""
    samples = scan_dataset(root)
    kept, embeddings, failures = embed_samples(engine, samples)
    for path, reason in failures:
        logger.warning("%s: skipped: %s", path, reason)
    labels = np.array([s.person for s in kept])
    genuine, impostor = pair_distances(embeddings, labels)
    if len(genuine) == 0 or len(impostor) == 0:
        raise BadInputError(root, "too few usable faces to form genuine and impostor pairs")
    top1, probes = top1_accuracy(embeddings, labels, np.array([s.split for s in kept]))
    report = EvalReport(roc_summary(genuine, impostor), top1, probes, len(samples), failures)
    return report, genuine, impostor


def plot_roc(curves: dict[str, tuple[FloatArray, FloatArray]], path: Path) -> None:
    """ROC (TAR against FAR, log x) for one or more systems, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (genuine, impostor) in curves.items():
        thresholds = np.sort(np.concatenate([genuine, impostor]))
        far = np.searchsorted(np.sort(impostor), thresholds, side="right") / len(impostor)
        tar = np.searchsorted(np.sort(genuine), thresholds, side="right") / len(genuine)
        ax.plot(np.maximum(far, 1e-5), tar, label=name)
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_xlabel("false accept rate (impostor pairs accepted)")
    ax.set_ylabel("true accept rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
