"""Per-stage latency of the face pipeline in this process, for `facegate bench`.

Kept apart from facegate.bench (plots, venvs, reports) so that it imports only the engine:
the bench runs it in fresh subprocesses, one per embedder and TFLite runtime, so the RSS it
reports is the daemon's, and in a separate venv for tflite_runtime (numpy<2).

    python -m facegate.bench_stages --models models --frames bench/out/frames --embedder int8
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np

from facegate.imageio import load_image
from facegate.matching import Matcher
from facegate.vision.align import Aligner
from facegate.vision.engine import EmbedderKind, FaceEngine
from facegate.vision.quality import QualityMeter
from facegate.vision.types import FloatArray, ImageArray, l2_normalize

logger = logging.getLogger(__name__)

FRAME_SIZE: Final = (640, 480)  # width, height
#: The per-frame match runs against this many enrolled people (a large site's door).
FRAME_GALLERY_PEOPLE: Final = 1_000
#: The daemon's default threshold and margin (config/app.py). Literals, not read from the
#: config models: this module also runs in the tflite_runtime venv, which has no pydantic.
ACCEPT_DISTANCE: Final = 0.9
ACCEPT_MARGIN: Final = 0.1
EMPTY_SCENE_FPS: Final = 10.0
STAGES: Final = ("decode", "detect", "landmarks", "align", "embed", "match")


def summarise(ms: Sequence[float]) -> dict[str, float]:
    """min / median / p95 of a list of milliseconds."""
    values = np.asarray(ms, dtype=np.float64)
    return {
        "min": float(values.min()),
        "p50": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
    }


def synthetic_templates(people: int, seed: int = 0) -> FloatArray:
    """`people` random unit vectors: stand-ins for enrolled identities."""
    rng = np.random.default_rng(seed)
    return l2_normalize(rng.normal(size=(people, 128)).astype(np.float32))


def proc_status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MB (Linux), 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def empty_frame() -> ImageArray:
    """A mid-grey 640x480 frame with sensor-like noise and no face."""
    rng = np.random.default_rng(1)
    noise = rng.normal(128, 6, size=(FRAME_SIZE[1], FRAME_SIZE[0], 3))
    return np.clip(noise, 0, 255).astype(np.uint8)


def stage_latency(
    engine: FaceEngine, matcher: Matcher, frames: Sequence[Path], iterations: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Each stage timed on its own, plus detect+align+embed (issue 3; landmarks included)."""
    aligner = Aligner()
    meter = QualityMeter()
    times: dict[str, list[float]] = {s: [] for s in (*STAGES, "detect_align_embed")}
    for i in range(warmup + iterations):
        path = frames[i % len(frames)]
        t0 = time.perf_counter()
        image = load_image(path)
        t1 = time.perf_counter()
        faces = engine.detect(image)
        t2 = time.perf_counter()
        if not faces:
            raise RuntimeError(f"{path}: no face")
        landmarks = engine.landmarker.locate(image, faces[0])
        t3 = time.perf_counter()
        crop = aligner.align(image, landmarks)
        meter.measure(crop, faces[0].width, landmarks.yaw_deg, engine.gate)
        t4 = time.perf_counter()
        embedding = engine.embedder.embed(crop)
        t5 = time.perf_counter()
        matcher.identify(embedding, ACCEPT_DISTANCE, ACCEPT_MARGIN)
        t6 = time.perf_counter()
        if i < warmup:
            continue
        ticks = (t0, t1, t2, t3, t4, t5, t6)
        for n, name in enumerate(STAGES):
            times[name].append((ticks[n + 1] - ticks[n]) * 1000)
        times["detect_align_embed"].append((t5 - t1) * 1000)
    return {name: summarise(values) for name, values in times.items()}


def frame_latency(
    engine: FaceEngine, matcher: Matcher, frames: Sequence[Path], iterations: int, warmup: int
) -> tuple[dict[str, float], float, float]:
    """The daemon's per-frame work end to end (decode -> encode -> identify), its FPS and
    the process CPU time per frame in ms (on a shared machine the fair figure for one
    thread on one core: time the process waited for the core is not in it)."""
    times: list[float] = []
    wall = 0.0
    cpu = 0.0
    for i in range(warmup + iterations):
        start = time.perf_counter()
        cpu_start = time.process_time()
        faces = engine.encode(load_image(frames[i % len(frames)]))
        for face in faces:
            if face.embedding is not None:
                matcher.identify(face.embedding, ACCEPT_DISTANCE, ACCEPT_MARGIN)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed * 1000)
            wall += elapsed
            cpu += time.process_time() - cpu_start
    return summarise(times), iterations / wall, cpu / iterations * 1000


def empty_scene_cpu(engine: FaceEngine, seconds: float) -> float:
    """Process CPU time over wall time (1.0 = one core busy) running the per-frame loop
    on empty frames at EMPTY_SCENE_FPS, as the daemon does when nobody is at the door."""
    frame = empty_frame()
    period = 1.0 / EMPTY_SCENE_FPS
    engine.encode(frame)  # warm-up
    cpu0, wall0 = time.process_time(), time.perf_counter()
    next_tick = wall0
    while time.perf_counter() - wall0 < seconds:
        engine.encode(frame)
        next_tick += period
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def run_stages(
    models: Path,
    frames: Sequence[Path],
    embedder: EmbedderKind,
    threads: int,
    iterations: int,
    empty_seconds: float,
) -> dict[str, object]:
    """Load the engine, measure RSS, then every latency figure; JSON-ready."""
    start = time.perf_counter()
    # As `facegate run` loads it: no full-range fallback at a door (service.py).
    engine = FaceEngine.load(models, embedder, threads, full_range_fallback=False)
    load_ms = (time.perf_counter() - start) * 1000
    rss_after_load = proc_status_mb("VmRSS")
    matcher = Matcher([f"p{i:06d}" for i in range(FRAME_GALLERY_PEOPLE)],
                      synthetic_templates(FRAME_GALLERY_PEOPLE))  # fmt: skip
    warmup = max(3, iterations // 10)
    stages = stage_latency(engine, matcher, frames, iterations, warmup)
    frame, fps, cpu_ms = frame_latency(engine, matcher, frames, iterations, warmup)
    cpu_share = empty_scene_cpu(engine, empty_seconds)
    return {
        "runtime": engine.runtime,
        "embedder": embedder,
        "threads_embedder": threads,
        "threads_detector": threads,
        "threads_landmarks": threads,
        "iterations": iterations,
        "frames": len(frames),
        "model_load_ms": load_ms,
        "rss_mb": rss_after_load,
        "rss_peak_mb": proc_status_mb("VmHWM"),
        "stages_ms": stages,
        "frame_ms": frame,
        "fps": fps,
        "frame_cpu_ms": cpu_ms,
        "empty_scene_cpu_share": cpu_share,
        "empty_scene_fps": EMPTY_SCENE_FPS,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--frames", type=Path, required=True, help="folder of 640x480 JPEGs")
    parser.add_argument("--embedder", choices=("int8", "float32"), default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--empty-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    frames = sorted(args.frames.glob("*.jpg"))
    if not frames:
        parser.error(f"{args.frames}: no .jpg frames")
    result = run_stages(
        args.models, frames, args.embedder, args.threads, args.iterations, args.empty_seconds
    )
    result["pid"] = os.getpid()
    result["python_numpy"] = np.__version__
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
