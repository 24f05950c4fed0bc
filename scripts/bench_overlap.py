#!/usr/bin/env python3
"""Would overlapping stages lower latency? (issue 17, item 2): prints JSON lines.

A paced camera thread keeps the newest frame in a slot (as LatestFrameGrabber does) and
the work of each frame runs either in sequence on one thread (as the daemon does), or
overlapped: detection, landmarks and alignment of frame n+1 on one thread while the
embedder runs frame n on another (a hand-off of one crop). Real frames (`make bench`'s
bench/out/frames, one face each), the real int8 engine. Per mode and camera rate: results
per second, the latency from capture to embedding (p50, p95) and the process CPU time as
a share of one core. Modes alternate, twice each, so a shared machine's load hits both.

Usage: scripts/bench_overlap.py [--fps 10 30 100] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))
from facegate.imageio import load_image  # noqa: E402
from facegate.vision.align import Aligner  # noqa: E402
from facegate.vision.engine import FaceEngine, default_models_dir  # noqa: E402
from facegate.vision.types import ImageArray  # noqa: E402

Captured = tuple[ImageArray, float]  # a frame and its capture time (perf_counter)


class Camera:
    """A newest-frame slot filled at `fps` from `frames`, on its own thread."""

    def __init__(self, frames: list[ImageArray], fps: float) -> None:
        self._frames, self._period = frames, 1.0 / fps
        self._slot: Captured | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due, index = time.perf_counter(), 0
        while not self._stop.is_set():
            due += self._period
            time.sleep(max(0.0, due - time.perf_counter()))
            with self._cond:
                self._slot = (self._frames[index % len(self._frames)], time.perf_counter())
                self._cond.notify()
            index += 1

    def take(self) -> Captured:
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None)
            captured, self._slot = self._slot, None
        assert captured is not None
        return captured

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Work:
    """The stages of one face, split where the overlap would split them."""

    def __init__(self, engine: FaceEngine) -> None:
        self._engine, self._aligner = engine, Aligner()

    def front(self, image: ImageArray) -> ImageArray:
        """Detection, landmarks and alignment: the crop the embedder takes."""
        detection = self._engine.detect(image)[0]
        return self._aligner.align(image, self._engine.landmarker.locate(image, detection))

    def embed(self, crop: ImageArray) -> None:
        self._engine.embedder.embed(crop)


def sequential(camera: Camera, work: Work, until: float) -> list[float]:
    latencies = []
    while time.perf_counter() < until:
        image, captured = camera.take()
        work.embed(work.front(image))
        latencies.append(time.perf_counter() - captured)
    return latencies


def overlapped(camera: Camera, work: Work, until: float) -> list[float]:
    latencies: list[float] = []
    handoff: queue.Queue[tuple[ImageArray, float] | None] = queue.Queue(maxsize=1)

    def embedder() -> None:
        while (item := handoff.get()) is not None:
            work.embed(item[0])
            latencies.append(time.perf_counter() - item[1])

    thread = threading.Thread(target=embedder)
    thread.start()
    while time.perf_counter() < until:
        image, captured = camera.take()
        handoff.put((work.front(image), captured))
    handoff.put(None)
    thread.join()
    return latencies


def measure(
    frames: list[ImageArray], work: Work, fps: float, seconds: float, overlap: bool
) -> dict[str, Any]:
    camera = Camera(frames, fps)
    cpu, wall = time.process_time(), time.perf_counter()
    run = overlapped if overlap else sequential
    latencies = sorted(x * 1000 for x in run(camera, work, wall + seconds))
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    camera.close()
    return {
        "mode": "overlapped" if overlap else "sequential",
        "camera_fps": fps,
        "results_per_s": round(len(latencies) / seconds, 1),
        "latency_p50_ms": round(statistics.median(latencies), 1),
        "latency_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        "cpu_share_of_one_core": round(share, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fps", type=float, nargs="+", default=[10.0, 30.0, 100.0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--frames", type=Path, default=REPO / "bench" / "out" / "frames")
    args = parser.parse_args()
    paths = sorted(args.frames.glob("*.jpg"))[:40]
    if not paths:
        parser.error(f"{args.frames}: no frames (run `make bench` first)")
    frames = [load_image(p) for p in paths]
    work = Work(FaceEngine.load(default_models_dir(), "int8", 2, full_range_fallback=False))
    for fps in args.fps:
        for overlap in (False, True, False, True):
            print(json.dumps(measure(frames, work, fps, args.seconds, overlap)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
