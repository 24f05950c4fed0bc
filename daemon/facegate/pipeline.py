"""The pure step of one door: frame -> faces -> tracks -> matches -> policy -> decisions.

No I/O, no threads, no clock of its own: the service feeds it frames and verify requests
and fans its results out to the outputs; tests feed it scripted frames with a fake clock
and read the results directly. Data flows one way: the step knows nothing of cameras,
MQTT or outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from facegate.config import FacegateConfig
from facegate.config.enrollment import EnrollmentConfig
from facegate.decisions import ClaimOutcome, Decision, Prompt
from facegate.matching import Matcher
from facegate.policy import DoorPolicy, FaceObservation
from facegate.snapshots import face_jpeg
from facegate.tracking import FaceTracker, TrackedFace
from facegate.vision.engine import FaceEngine
from facegate.vision.stages import LivenessStage
from facegate.vision.types import FaceEncoding, ImageArray, LivenessEvidence


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

    def step(self, image: ImageArray, now: float | None = None) -> StepResult:
        """Process one frame; `now` (epoch seconds) defaults to the policy's clock."""
        faces = self._engine.encode(image)
        tracks = self._tracker.update([TrackedFace(f.detection.box, f.embedding) for f in faces])
        evidence = self._feed_liveness(image, faces, tracks)
        observations = [
            self._observe(face, track)
            for face, track in zip(faces, tracks, strict=True)
            if face.embedding is not None
        ]
        decisions = self.policy.observe(observations, now, evidence)
        if self._snapshots:
            decisions = [_with_snapshot(d, faces, tracks) for d in decisions]
        outcomes = self.policy.take_claim_outcomes()
        return StepResult(faces, tracks, decisions, outcomes, self.policy.take_prompts())

    def claim(
        self, request_id: str, identity: str, timeout_s: float | None, now: float | None = None
    ) -> list[ClaimOutcome]:
        """A 1:1 claim for the next frames; returns outcomes it settled (a superseded one)."""
        self.policy.claim(request_id, identity, timeout_s, now)
        return self.policy.take_claim_outcomes()

    def expired_claims(self, now: float | None = None) -> list[ClaimOutcome]:
        return self.policy.expired_claims(now)

    def _feed_liveness(
        self, image: ImageArray, faces: list[FaceEncoding], tracks: list[int]
    ) -> dict[int, LivenessEvidence]:
        """The liveness slot sees every observation of a track, refused faces too (nothing
        at all with `liveness: off`, which then costs nothing); the evidence per track."""
        liveness = self._liveness
        for track in self._tracker.ended:
            liveness.forget(track)
        if self._state.config.recognition.liveness == "off":
            return {}
        return {
            track: liveness.observe(track, face, image)
            for face, track in zip(faces, tracks, strict=True)
        }

    def _observe(self, face: FaceEncoding, track_id: int) -> FaceObservation:
        assert face.embedding is not None
        rec = self._state.config.recognition
        matcher = self._state.matcher
        match = matcher.identify(face.embedding, rec.threshold, rec.margin)
        claimed = self.policy.active_claim_identity()
        claim_match = matcher.verify(face.embedding, claimed, rec.threshold) if claimed else None
        return FaceObservation(match, claim_match, track_id)


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
