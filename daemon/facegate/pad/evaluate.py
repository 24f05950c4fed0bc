"""Run rendered presentations through the door's vision and the liveness stage; rates.

Each presentation goes through the real detector, landmarks and quality gate, the face
tracker and a fresh liveness stage, frame by frame as the daemon does (the embedder is
skipped: liveness does not read embeddings, and recognition is evaluated elsewhere). A
presentation is *accepted* if any of its tracks was judged live at any frame, an
*attack* if a track was judged an attack and none live, else *undecided*.

- APCER per species: attacks accepted / attacks presented.
- BPCER: bona fide presentations judged attacks / bona fide presented (undecided ones are
  counted separately: they are not attacks, they wait or get a challenge).
- Upper bounds: one-sided 95 % Clopper-Pearson (0 of 150 gives 1.98 %).
- Time to decision: from the first frame whose face the quality gate would embed to the
  live verdict, at the sequences' 10 fps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Self

import cv2
import numpy as np

from facegate.config.app import RecognitionConfig
from facegate.files import IMAGE_SUFFIXES
from facegate.liveness_gate import LivenessGate, Verdict
from facegate.pad.scene import FPS
from facegate.pad.species import (
    ATTACKS,
    BONA_FIDE,
    KINDS,
    PROMPT_AT_S,
    FaceSource,
    Presentation,
    answer_for,
    load_source,
    render,
)
from facegate.tracking import FaceTracker, TrackedFace
from facegate.vision.engine import FaceEngine
from facegate.vision.liveness import PassiveLiveness
from facegate.vision.stages import Embedder
from facegate.vision.types import FloatArray, ImageArray, LivenessEvidence

logger = logging.getLogger(__name__)

#: Presentations per species when not told: at least 150 for species 1-3 (APCER target).
DEFAULT_PER_SPECIES: Final = 150
#: Sequence lengths: 3 s (prints and screens held up, a visitor standing still); a replayed
#: video and an answering visitor 5 s, so that a prompt's whole answer time fits after it.
#: A walking visitor (`live_moving`) walks up as in 3 s (arriving at 1.8-2.55 s) and then
#: stays at the door looking around until 5 s: their face is big enough to measure (eyes
#: 30 px apart) only from about 1-1.7 s, and a door waits `liveness_wait_s` = 3 s after
#: recognising someone before it reports them undecided; a 3 s sequence cut most visitors
#: off 1.3-2 s after that, so "not judged live in the sequence" measured its end.
DEFAULT_SECONDS: Final = 3.0
SECONDS: Final = {"screen_video": 5.0, "live_answering": 5.0, "live_moving": 5.0}
WALK_S: Final = {"live_moving": 3.0}
#: The door's default wait for a live verdict after recognition (`liveness_wait_s`).
DOOR_WAIT_S: Final = 3.0
#: Every prompt a challenge can draw (the config's default draws only the turns).
CHALLENGES: Final = ("turn_left", "turn_right", "blink")
CONFIDENCE: Final = 0.95


class _NoEmbedder(Embedder):
    """Stands in for the embedder: liveness never reads embeddings; saves ~16 ms a face."""

    fingerprint = "none"
    dim = 128

    @classmethod
    def load(cls, models_dir: Path, threads: int) -> Self:
        return cls()

    def embed(self, face: ImageArray) -> FloatArray:
        return np.zeros(self.dim, dtype=np.float32)


@dataclass(frozen=True)
class Outcome:
    """What the stage made of one presentation."""

    kind: str
    person: str
    source: str
    seed: int
    verdict: str  # "live" | "attack" | "undecided"
    live_frame: int | None
    attack_frame: int | None
    usable_frame: int | None  # first frame whose face the quality gate would embed
    frames: int
    cost_ms: float  # median liveness CPU time per frame with a face
    blinks: int
    # `challenge` mode, each prompt shown at the frame the identity would be confirmed:
    # (prompt, answered) for every prompt; `live_answering` answers one of them.
    challenge: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class Rate:
    """k of n, with the one-sided 95 % Clopper-Pearson upper bound."""

    errors: int
    presentations: int

    @property
    def rate(self) -> float:
        return self.errors / self.presentations if self.presentations else math.nan

    @property
    def upper(self) -> float:
        return clopper_pearson_upper(self.errors, self.presentations, CONFIDENCE)

    def text(self) -> str:
        return (
            f"{self.errors}/{self.presentations} = {100 * self.rate:.1f}% "
            f"(95% upper {100 * self.upper:.1f}%)"
        )


def clopper_pearson_upper(errors: int, n: int, confidence: float = CONFIDENCE) -> float:
    """The exact (Clopper-Pearson) one-sided upper confidence bound of a binomial rate: the
    p at which seeing `errors` or fewer in `n` has probability 1 - confidence."""
    if n <= 0:
        return math.nan
    if errors >= n:
        return 1.0
    alpha = 1.0 - confidence
    low, high = errors / n, 1.0
    for _ in range(100):  # bisection: the binomial CDF falls as p rises
        mid = (low + high) / 2
        if _binomial_cdf(errors, n, mid) > alpha:
            low = mid
        else:
            high = mid
    return high


def _binomial_cdf(k: int, n: int, p: float) -> float:
    if p <= 0:
        return 1.0
    if p >= 1:
        return 0.0 if k < n else 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
        + (n - i) * log_q
        for i in range(k + 1)
    ]  # fmt: skip
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def vision_only(models_dir: Path, threads: int = 1) -> FaceEngine:
    """Detector, landmarks and quality gate of the door, without the embedder."""
    engine = FaceEngine.load(models_dir, threads=threads, full_range_fallback=False)
    engine.embedder.close()
    engine.embedder = _NoEmbedder()
    return engine


@dataclass(frozen=True)
class Judged:
    """What the stage made of one sequence, and the main track's evidence frame by frame
    (frame, track, evidence) for replaying challenges."""

    verdict: str
    live_at: int | None
    attack_at: int | None
    usable_at: int | None
    cost_ms: float
    blinks: int
    main: tuple[tuple[int, int, LivenessEvidence], ...]


def judge(
    engine: FaceEngine, frames: Sequence[ImageArray], stage: PassiveLiveness | None = None
) -> Judged:
    """Feed frames through detect -> landmarks -> gate -> tracker -> liveness."""
    stage = stage or PassiveLiveness()
    tracker = FaceTracker()
    live_at = attack_at = usable_at = None
    costs: list[float] = []
    blinks = 0
    seen: dict[int, list[tuple[int, int, LivenessEvidence]]] = {}
    for index, frame in enumerate(frames):
        faces = engine.encode(frame)
        tracks = tracker.update([TrackedFace(f.detection.box, None) for f in faces])
        # Process CPU time (OpenCV's own threads included; nothing else runs in this
        # process meanwhile): on a shared machine wall time measures the neighbours.
        started = time.process_time()
        evidence = [
            stage.observe(track, face, frame) for face, track in zip(faces, tracks, strict=True)
        ]
        if faces:
            costs.append((time.process_time() - started) * 1000 / len(faces))
        for track in tracker.ended:
            stage.forget(track)
        if usable_at is None and any(face.embedding is not None for face in faces):
            usable_at = index
        for track, item in zip(tracks, evidence, strict=True):
            seen.setdefault(track, []).append((index, track, item))
            blinks = max(blinks, int(dict(item.scores).get("blinks", 0)))
            if item.live is True and live_at is None:
                live_at = index
            if item.live is False and attack_at is None:
                attack_at = index
    verdict = "live" if live_at is not None else "attack" if attack_at is not None else "undecided"
    cost = statistics.median(costs) if costs else math.nan
    main = max(seen.values(), key=len) if seen else []
    return Judged(verdict, live_at, attack_at, usable_at, cost, blinks, tuple(main))


def answers_challenge(
    main: Sequence[tuple[int, int, LivenessEvidence]],
    action: str,
    prompt_frame: int,
    timeout_s: float = 4.0,
) -> bool:
    """Whether the door's own challenge logic (LivenessGate) passes this track when
    `action` is prompted at `prompt_frame` (the recorded evidence replayed on its clock)."""
    settings = RecognitionConfig(
        liveness="challenge", challenge_prompts=(action,), challenge_timeout_s=timeout_s
    )
    gate = LivenessGate("eval", settings)
    for frame, track, evidence in main:
        now = frame / FPS
        gate.note({track: evidence}, now)
        if frame < prompt_frame:
            continue
        verdict = gate.check(track, now)
        if verdict is Verdict.PASS:
            return True
        if verdict in (Verdict.FAILED, Verdict.ATTACK):
            return False
    return False


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Which presentations to render: kind, the source photo's index, the seed."""

    models_dir: Path
    photos: tuple[tuple[str, Path], ...]  # (person, photo)
    jobs: tuple[tuple[str, int, int], ...]  # (kind, photo index, seed)


def plan(
    models_dir: Path,
    photo_root: Path,
    kinds: Sequence[str],
    per_kind: int,
    seed: int,
) -> Plan:
    """Every photo under `photo_root/<person>/` in sorted order; `per_kind` presentations
    of each kind cycling through them (a kind-specific offset spreads the photos). Seeds
    depend on the kind, not on which others run: one kind can be rerun alone."""
    photos = tuple(
        (person.name, path)
        for person in sorted(p for p in photo_root.iterdir() if p.is_dir())
        for path in sorted(person.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    )
    jobs = tuple(
        (kind, (i * 7 + k) % max(len(photos), 1), seed + 100_003 * k + i)
        for kind in kinds
        for k in [KINDS.index(kind)]
        for i in range(per_kind)
    )
    return Plan(models_dir, photos, jobs)


_WORKER: dict[str, object] = {}


def _worker_init(models_dir: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # The workers are the parallelism: OpenCV's own threads would only add their idle
    # spinning to the measured CPU time.
    cv2.setNumThreads(1)
    # Thousands of replayed challenges: the gate's per-challenge lines are for a door.
    logging.getLogger("facegate.liveness_gate").setLevel(logging.WARNING)
    _WORKER["engine"] = vision_only(models_dir)
    _WORKER["sources"] = {}


def _source(index: int, photos: tuple[tuple[str, Path], ...]) -> FaceSource | None:
    cache = _WORKER["sources"]
    assert isinstance(cache, dict)
    if index not in cache:
        engine = _WORKER["engine"]
        assert isinstance(engine, FaceEngine)
        person, path = photos[index]
        cache[index] = load_source(engine, path, person)
    found = cache[index]
    assert found is None or isinstance(found, FaceSource)
    return found


def _run_one(job: tuple[str, int, int], photos: tuple[tuple[str, Path], ...]) -> Outcome | None:
    kind, index, seed = job
    source = None
    # A photo that is not enrollment quality is skipped for the next one that is.
    for step in range(len(photos)):
        source = _source((index + step) % len(photos), photos)
        if source is not None:
            break
    if source is None:
        return None
    presentation = render(
        kind, source, seed, seconds=SECONDS.get(kind, DEFAULT_SECONDS), walk_s=WALK_S.get(kind)
    )
    engine = _WORKER["engine"]
    assert isinstance(engine, FaceEngine)
    found = judge(engine, presentation.frames)
    if kind == "live_answering":
        prompts: tuple[str, ...] = (answer_for(seed),)
        prompt_at = round(PROMPT_AT_S * FPS)  # the render answers a prompt shown then
    else:
        prompts = CHALLENGES
        # The prompt appears when the identity would be confirmed (3 usable frames).
        prompt_at = (found.usable_at if found.usable_at is not None else 0) + 2
    challenge = tuple((p, answers_challenge(found.main, p, prompt_at)) for p in prompts)
    return Outcome(
        kind, source.person, source.path.name, seed, found.verdict, found.live_at,
        found.attack_at, found.usable_at, len(presentation.frames), found.cost_ms,
        found.blinks, challenge,
    )  # fmt: skip


def _run_chunk(
    models_dir: Path, jobs: list[tuple[str, int, int]], photos: tuple[tuple[str, Path], ...]
) -> list[Outcome | None]:
    if "engine" not in _WORKER:
        _worker_init(models_dir)
    return [_run_one(job, photos) for job in jobs]


def run(the_plan: Plan, workers: int = 1) -> list[Outcome]:
    """Render and judge every planned presentation (in `workers` processes)."""
    jobs = list(the_plan.jobs)
    if workers <= 1:
        _worker_init(the_plan.models_dir)
        found = [_run_one(job, the_plan.photos) for job in jobs]
    else:
        chunks = [jobs[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            parts = list(
                pool.map(
                    _run_chunk,
                    [the_plan.models_dir] * workers,
                    chunks,
                    [the_plan.photos] * workers,
                )
            )
        found = [outcome for part in parts for outcome in part]
    return [outcome for outcome in found if outcome is not None]


# --- the report ------------------------------------------------------------------------------


def summarise(outcomes: Sequence[Outcome]) -> dict[str, object]:
    """Per kind: counts of each verdict, the error rate with its bound, decision times."""
    report: dict[str, object] = {}
    for kind in sorted({o.kind for o in outcomes}, key=_kind_order):
        mine = [o for o in outcomes if o.kind == kind]
        counts = {v: sum(o.verdict == v for o in mine) for v in ("live", "attack", "undecided")}
        entry: dict[str, object] = {"presentations": len(mine), **counts}
        if kind in ATTACKS:
            rate = Rate(counts["live"], len(mine))
            entry["apcer"] = rate.text()
            entry["apcer_upper95"] = round(rate.upper, 4)
            attack_times = [
                (o.attack_frame - (o.usable_frame or 0)) / FPS
                for o in mine
                if o.attack_frame is not None
            ]
            entry["attack_verdict_s_median"] = _median(attack_times)
            entry["challenge"] = _challenge_rates(mine)
        else:
            rate = Rate(counts["attack"], len(mine))
            entry["bpcer"] = rate.text()
            entry["bpcer_upper95"] = round(rate.upper, 4)
            times = sorted(
                max(0.0, (o.live_frame - (o.usable_frame or 0)) / FPS)
                for o in mine
                if o.live_frame is not None
            )
            entry["time_to_live_s_median"] = _median(times)
            entry["time_to_live_s_p90"] = _percentile(times, 90)
            entry["live_within_1s"] = sum(t <= 1.0 for t in times)
            # Not judged live within the door's wait after the face became usable, among
            # the sequences that lasted that long after it (the others were cut short).
            observed = [
                o for o in mine
                if o.usable_frame is not None and o.frames - o.usable_frame >= DOOR_WAIT_S * FPS
            ]  # fmt: skip
            late = sum(
                o.live_frame is None or (o.live_frame - (o.usable_frame or 0)) / FPS > DOOR_WAIT_S
                for o in observed
            )
            entry["not_live_within_wait"] = Rate(late, len(observed)).text()
            entry["never_usable"] = sum(o.usable_frame is None for o in mine)
            if kind == "live_answering":
                failed = sum(not ok for o in mine for _, ok in o.challenge)
                entry["challenge_rejected"] = Rate(failed, len(mine)).text()
        costs = [o.cost_ms for o in mine if math.isfinite(o.cost_ms)]
        entry["cost_ms_median"] = _median(costs)
        report[kind] = entry
    return report


def _challenge_rates(mine: Sequence[Outcome]) -> dict[str, str]:
    """Attacks that answered each prompt, and with the default prompts (a turn, drawn per
    presentation from its seed as the door draws at random)."""
    rates = {
        prompt: Rate(sum(dict(o.challenge).get(prompt, False) for o in mine), len(mine)).text()
        for prompt in CHALLENGES
    }
    drawn = sum(dict(o.challenge).get(CHALLENGES[(o.seed // 7) % 2], False) for o in mine)
    rates["default_prompts"] = Rate(drawn, len(mine)).text()
    return rates


def render_report(report: dict[str, object]) -> str:
    """The summary as a Markdown table (simulated: the header says so)."""
    lines = [
        "Simulated presentations (seeded renders; `facegate liveness-eval`).",
        "",
        "| kind | n | live | attack | undecided | passive: APCER / BPCER (95% upper) |"
        " time to live median / p90 | not live within 3 s of usable |"
        " challenge: answered (default prompts) | CPU ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, raw in report.items():
        assert isinstance(raw, dict)
        entry: dict[str, object] = raw
        rate = entry.get("apcer", entry.get("bpcer", ""))
        times = ""
        if "time_to_live_s_median" in entry:
            times = f"{entry['time_to_live_s_median']} s / {entry['time_to_live_s_p90']} s"
        challenge = entry.get("challenge", {})
        answered = (
            challenge.get("default_prompts", "") if isinstance(challenge, dict) else ""
        ) or entry.get("challenge_rejected", "")
        lines.append(
            f"| {kind} | {entry['presentations']} | {entry['live']} | {entry['attack']} |"
            f" {entry['undecided']} | {rate} | {times} | {entry.get('not_live_within_wait', '')} |"
            f" {answered} |"
            f" {entry['cost_ms_median']} |"
        )
    return "\n".join(lines)


def _kind_order(kind: str) -> int:
    order = [*ATTACKS, *BONA_FIDE]
    return order.index(kind) if kind in order else len(order)


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def write(outcomes: Sequence[Outcome], path: Path) -> None:
    """Every outcome, one JSON object per line (the report is recomputed from these)."""
    with path.open("w") as out:
        for outcome in outcomes:
            out.write(json.dumps(asdict(outcome)) + "\n")


def read(path: Path) -> Iterator[Outcome]:
    with path.open() as lines:
        for line in lines:
            yield Outcome(**json.loads(line))


__all__ = [
    "Outcome",
    "Plan",
    "Presentation",
    "Rate",
    "clopper_pearson_upper",
    "judge",
    "plan",
    "run",
    "summarise",
    "vision_only",
]
