"""The pure step of one door: frame -> faces -> tracks -> matches -> policy -> decisions.

No I/O, no threads, no clock of its own: the service feeds it frames and verify requests
and fans its results out to the outputs; tests feed it scripted frames with a fake clock
and read the results directly. Data flows one way: the step knows nothing of cameras,
MQTT or outputs.

Less work where the answer cannot change: a face track whose last `confirm_frames`
embeddings named the same identity (or no one) is not embedded again while its box and
pose stay put, for at most RECHECK_S; its earlier encoding is reused (marked not fresh, so
the policy decides nothing on it without embedding it first). Its landmarks are not placed
either, unless the liveness stage still reads them: passive liveness does until it has a
verdict on the track. Every face is encoded once per frame, at most.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from facegate.config import FacegateConfig
from facegate.config.enrollment import EnrollmentConfig
from facegate.decisions import ClaimOutcome, Decision, Prompt
from facegate.matching import Matcher, MatchResult
from facegate.policy import DoorPolicy, FaceObservation
from facegate.snapshots import face_jpeg
from facegate.tracking import FaceTracker, TrackedFace, iou
from facegate.vision.engine import FaceEngine, Reuse
from facegate.vision.stages import LivenessStage
from facegate.vision.types import Detection, FaceEncoding, ImageArray, LivenessEvidence

#: A standing face is embedded again at least this often (seconds): someone else stepping
#: into the very same box is seen within this time (any change of box or pose: at once).
RECHECK_S: Final = 1.0
#: The box "has not moved": overlap with the box of the last embedding at least this, ...
SAME_BOX_IOU: Final = 0.8
#: ... its width within this share of that box's, ...
SAME_SCALE: Final = 0.1
#: ... and its eyes, nose and mouth, relative to the box, within this share of the box
#: width: the head has not turned or tilted (a turn changes the embedding and the quality).
SAME_POSE: Final = 0.04


@dataclass(slots=True)
class _Seen:
    """A track's last embedded face and how long its identity has held."""

    face: FaceEncoding
    match: MatchResult  # what the gallery said of it (a reused face is not matched again)
    at: float  # the step's `now` when it was embedded
    agreed: int = 1  # embeddings in a row that gave the same identity
    # The liveness stage's verdict on the track (live or attack): it needs no more frames.
    verdict: LivenessEvidence | None = None
    verdict_identity: str | None = None  # whom the track showed when judged live


@dataclass(frozen=True, slots=True)
class Recognition:
    """What the doors match against; swapped whole on reload."""

    config: FacegateConfig
    enrollment: EnrollmentConfig
    matcher: Matcher


@dataclass(frozen=True, slots=True)
class StepResult:
    """Everything one frame produced. `faces` holds refused faces too (embedding None)."""

    faces: list[FaceEncoding]
    track_ids: list[int]
    decisions: list[Decision]
    claim_outcomes: list[ClaimOutcome]
    # Liveness challenges to show at the door (action None: clear the prompt).
    prompts: list[Prompt] = field(default_factory=list)
    # Per face: its embedding (and, unless liveness read them, its landmarks and crop)
    # came from an earlier frame of its track; the policy decides nothing on it.
    reused: list[bool] = field(default_factory=list)


class DoorPipeline:
    """One door's frame -> decisions step. Not thread-safe: one loop thread calls it."""

    def __init__(self, door: str, engine: FaceEngine, state: Recognition, policy: DoorPolicy):
        self.door = door
        self.policy = policy
        self._engine = engine
        self._state = state
        self._tracker = FaceTracker()
        # Fixed at start like the outputs that read them (they change only with a restart).
        self._snapshots = wants_face_snapshots(state.config)
        # This camera's own liveness stage: track ids are per camera, and so is the lens.
        camera = state.config.camera(door) if door in state.config.door_ids else None
        self._liveness: LivenessStage = engine.liveness.for_camera(
            hfov_deg=60.0 if camera is None else camera.hfov_deg,
            nir=camera is not None and camera.spectrum == "nir",
        )
        self._seen: dict[int, _Seen] = {}
        self._recheck: set[int | None] = set()  # tracks the policy wants embedded afresh
        # Set per step for `_plan`, which the engine calls back between detection and the
        # other stages (a bound method: no closure per frame).
        self._now = 0.0
        self._may_reuse = False
        self._predicted: list[int | None] = []
        self._known: list[Reuse | None] = []

    @property
    def state(self) -> Recognition:
        """What this door matches against now (metrics read the gallery size)."""
        return self._state

    def update(self, state: Recognition) -> None:
        """Match against a reloaded gallery and rules from now on (SIGHUP)."""
        self._state = state
        camera = state.config.camera(self.door) if self.door in state.config.door_ids else None
        mode = camera.mode if camera is not None else self.policy.mode
        self.policy.update(state.config.recognition, state.enrollment, mode)
        for seen in self._seen.values():
            seen.agreed = 0  # names from the old gallery: embed every face afresh

    def step(
        self, image: ImageArray, now: float | None = None, *, reuse: bool = True
    ) -> StepResult:
        """Process one frame; `now` (epoch seconds) defaults to the policy's clock.
        `reuse` False embeds every face of this frame (a walk-up capture reads them all)."""
        now = self.policy.now() if now is None else now
        self._now = now
        self._may_reuse = reuse and self.policy.active_claim_identity() is None
        faces = self._engine.encode(image, plan=self._plan)
        reused = [
            known is not None and face.embedding is not None
            for known, face in zip(self._known, faces, strict=True)
        ]
        tracks = self._tracker.update(
            [
                TrackedFace(f.detection.box, None if old else f.embedding)
                for f, old in zip(faces, reused, strict=True)
            ]
        )
        # A reused face on another track than foreseen (never, while `predict` holds) would
        # lend its identity to that track: it gives no observation at all.
        observations = [
            self._observe(face, track, old, now)
            for face, track, old, foreseen in zip(
                faces, tracks, reused, self._predicted, strict=True
            )
            if face.embedding is not None and (not old or track == foreseen)
        ]
        self._forget_unusable(faces, tracks)
        evidence = self._feed_liveness(image, faces, tracks)
        decisions = self.policy.observe(observations, now, evidence)
        self._recheck = self.policy.take_recheck()
        if self._snapshots:
            decisions = [_with_snapshot(d, faces, tracks) for d in decisions]
        outcomes = self.policy.take_claim_outcomes()
        return StepResult(faces, tracks, decisions, outcomes, self.policy.take_prompts(), reused)

    def claim(
        self, request_id: str, identity: str, timeout_s: float | None, now: float | None = None
    ) -> list[ClaimOutcome]:
        """A 1:1 claim for the next frames; returns outcomes it settled (a superseded one)."""
        self.policy.claim(request_id, identity, timeout_s, now)
        return self.policy.take_claim_outcomes()

    def expired_claims(self, now: float | None = None) -> list[ClaimOutcome]:
        return self.policy.expired_claims(now)

    def _plan(self, detections: Sequence[Detection]) -> list[Reuse | None]:
        """What is known of each detected face (the engine calls this after detection)."""
        self._predicted = self._tracker.predict([d.box for d in detections])
        if not self._may_reuse:
            self._known = [None] * len(detections)
        else:
            self._known = [
                self._reusable(d, t) for d, t in zip(detections, self._predicted, strict=True)
            ]
        return self._known

    def _reusable(self, detection: Detection, track: int | None) -> Reuse | None:
        """The track's last encoding if nothing can have changed the answer, else None."""
        seen = self._seen.get(track) if track is not None else None
        if seen is None or track in self._recheck:
            return None
        if seen.agreed < self._state.config.recognition.confirm_frames:
            return None  # not settled yet: every frame counts
        if not 0.0 <= self._now - seen.at < RECHECK_S:  # (a clock stepped back: embed)
            return None
        if not same_view(seen.face.detection, detection):
            return None
        return Reuse(seen.face, landmarks=self._liveness_reads(seen))

    def _liveness_reads(self, seen: _Seen) -> bool:
        """Whether the liveness stage still needs this track's landmarks every frame."""
        mode = self._state.config.recognition.liveness
        return mode == "challenge" or (mode == "passive" and seen.verdict is None)

    def _forget_unusable(self, faces: list[FaceEncoding], tracks: list[int]) -> None:
        """A track whose face was refused (turned, blurred) is embedded afresh when usable
        again; ended tracks are dropped."""
        for face, track in zip(faces, tracks, strict=True):
            seen = self._seen.get(track)
            if face.embedding is None and seen is not None:
                seen.agreed = 0
        for track in self._tracker.ended:
            self._seen.pop(track, None)

    def _remember(self, face: FaceEncoding, track: int, match: MatchResult, now: float) -> None:
        """A fresh embedding of `track`: how long its identity has held. A track judged
        live that now shows someone else (a photo held up in front of the face) must
        prove it again: its liveness starts over."""
        seen = self._seen.get(track)
        if seen is None:
            self._seen[track] = _Seen(face, match, now)
            return
        identity = match.identity
        seen.agreed = seen.agreed + 1 if identity == seen.match.identity else 1
        seen.face, seen.match, seen.at = face, match, now
        verdict = seen.verdict
        if verdict is not None and verdict.live and identity not in (None, seen.verdict_identity):
            self._liveness.forget(track)
            seen.verdict = None

    def _feed_liveness(
        self, image: ImageArray, faces: list[FaceEncoding], tracks: list[int]
    ) -> dict[int, LivenessEvidence]:
        """The liveness slot sees every observation of a track, refused faces too, until it
        has a verdict on the track (nothing at all with `liveness: off`, which then costs
        nothing); the evidence per track."""
        liveness = self._liveness
        for track in self._tracker.ended:
            liveness.forget(track)
        mode = self._state.config.recognition.liveness
        if mode == "off":
            return {}
        evidence: dict[int, LivenessEvidence] = {}
        for face, track in zip(faces, tracks, strict=True):
            seen = self._seen.get(track)
            if seen is not None and seen.verdict is not None and mode == "passive":
                evidence[track] = seen.verdict
                continue
            found = evidence[track] = liveness.observe(track, face, image)
            if seen is not None and found.live is not None:
                seen.verdict, seen.verdict_identity = found, seen.match.identity
        return evidence

    def _observe(
        self, face: FaceEncoding, track_id: int, reused: bool, now: float
    ) -> FaceObservation:
        assert face.embedding is not None
        if reused:  # never with a claim waiting (every face is embedded then)
            return FaceObservation(self._seen[track_id].match, None, track_id, fresh=False)
        rec = self._state.config.recognition
        matcher = self._state.matcher
        match = matcher.identify(face.embedding, rec.threshold, rec.margin)
        claimed = self.policy.active_claim_identity()
        claim_match = matcher.verify(face.embedding, claimed, rec.threshold) if claimed else None
        self._remember(face, track_id, match, now)
        return FaceObservation(match, claim_match, track_id)


def same_view(before: Detection, now: Detection) -> bool:
    """Whether a face's box and pose are those of an earlier detection: nothing moved
    enough to change its embedding or its quality."""
    if iou(before.box, now.box) < SAME_BOX_IOU or before.width <= 0:
        return False
    if abs(now.width / before.width - 1.0) > SAME_SCALE:
        return False
    # Eyes, nose and mouth (BlazeFace keypoints 0-3) relative to the box, in box widths.
    then = (before.keypoints[:4] - before.box[:2]) / before.width
    here = (now.keypoints[:4] - now.box[:2]) / now.width
    return float(np.abs(here - then).max()) <= SAME_POSE


def wants_face_snapshots(config: FacegateConfig) -> bool:
    """Whether an output asked for a JPEG of each decision's face (off unless configured)."""
    ha, audit = config.homeassistant, config.audit
    return (ha.enabled and ha.face_image) or (audit.enabled and audit.snapshots)


def _with_snapshot(decision: Decision, faces: list[FaceEncoding], tracks: list[int]) -> Decision:
    """The decision with a JPEG of its track's face in this frame, when there is one."""
    for face, track in zip(faces, tracks, strict=True):
        if track == decision.track_id and face.crop is not None:
            return dataclasses.replace(decision, snapshot=face_jpeg(face.crop))
    return decision
