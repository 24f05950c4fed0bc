"""What the door decided, as data: decisions and claim outcomes with a machine-readable code.

Every consumer (the MQTT door bus, Home Assistant, metrics, the audit trail) reads these
frozen values; none of them parses the human `reason` text, which may change wording. The
codes are part of the MQTT contract (`code` in events and verify results): add codes, never
rename one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

DecisionKind = Literal["granted", "denied", "unknown"]


class ReasonCode(StrEnum):
    """Why a decision or claim outcome is what it is."""

    MATCH = "match"  # granted, or a claim matched
    UNKNOWN_FACE = "unknown_face"  # a face no enrolled person matched
    NOT_ENROLLED = "not_enrolled"  # matched an identity no longer in enrollment.yaml
    NOT_VALID_NOW = "not_valid_now"  # disabled, before valid_from or after valid_until
    DOOR_NOT_ALLOWED = "door_not_allowed"  # enrolled, but not for this door
    UNKNOWN_SCHEDULE = "unknown_schedule"  # the person's schedule is not defined
    OUTSIDE_SCHEDULE = "outside_schedule"  # outside the person's schedule
    NO_CLAIM = "no_claim"  # card_and_face door: a face without a badge claim
    CLAIM_MISMATCH = "claim_mismatch"  # the face at the door is not the claimed person
    TIMEOUT = "timeout"  # a claim saw no matching face in time
    SUPERSEDED = "superseded"  # a newer claim at the same door replaced this one
    BLOCKED = "blocked"  # a person enrollment.yaml lists under `blocked`: never let in
    PRESENTATION_ATTACK = "presentation_attack"  # a photo or screen of `person`, not a face
    LIVENESS_UNDECIDED = "liveness_undecided"  # recognised, but no sign of life yet: no unlock
    CHALLENGE_FAILED = "challenge_failed"  # a liveness challenge answered wrong or too late


@dataclass(frozen=True, slots=True)
class Liveness:
    """How the door judged that the face of a decision was live: `method` "off" (no check),
    "passive" (3-D structure from motion) or "challenge" (a prompted action answered);
    `verdict` "live", "attack" or "undecided"; `score` 0..1 (0.5 and above: live; None
    when off); `evidence` the named scores behind it; `action` the challenge prompted."""

    method: str
    verdict: str
    score: float | None = None
    evidence: tuple[tuple[str, float], ...] = ()
    action: str | None = None


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the person at a door is asked to do now (a liveness challenge), or None to
    clear it: `action` is machine-readable (turn_left, turn_right, blink: the subject's
    own left and right), `text` what a display or speaker says."""

    door: str
    action: str | None
    text: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """A granted / denied / unknown decision at one door; `unlock` only when granted."""

    kind: DecisionKind
    door: str
    person: str | None
    distance: float
    margin: float
    frames: int
    code: ReasonCode
    reason: str  # human text; `code` is what programs read
    event_id: str
    ts: float
    unlock: bool
    request_id: str | None = None
    track_id: int | None = None
    # A JPEG (<= 30 KB) of the face that decided, only when an output asked for snapshots
    # (Home Assistant's image, the audit trail's); never an embedding.
    snapshot: bytes | None = field(default=None, repr=False)
    # How liveness was judged on the decision's track (None: a decision made without it).
    liveness: Liveness | None = None


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """The answer to one 1:1 claim, for `<door>/verify/result`."""

    request_id: str
    identity: str
    match: bool
    distance: float | None
    code: ReasonCode
    reason: str
