"""Who may open which door when: multi-frame confirmation, permissions, cooldown, 1:1 claims.

Pure decision logic for one door: no I/O, no threads, no MQTT. The service calls
`DoorPolicy.observe` once per processed frame with the faces already matched upstream
(threshold and margin applied by `Matcher.identify`), and gets back the decisions to publish.
Time comes from an injectable clock (epoch seconds) so tests need no sleeping.

Rules, all failing closed:
- An identity is confirmed when it is the accepted identity of one face track in at least
  `confirm_frames` of the last `window` frames (frames, not faces), and that track named no
  one else in the window: two people in view never pool their frames, and a track whose
  identity changes never confirms. Faces without a track id (offline tools, tests) count as
  one track per identity. Confirmation clears that identity's history, so one approach
  gives one decision.
- A decision rests on a face embedded in the frame that makes it: a face whose embedding
  was reused from an earlier frame of its track (`fresh` False: the pipeline re-embeds a
  standing face only now and then) keeps its track's window, but a decision it would
  make waits for the next frame, in which that track is embedded again (`take_recheck`).
  Another person stepping into the same place never decides as the one before.
- A confirmed identity is granted only if enrolled in the directory, valid now (not disabled,
  inside valid_from..valid_until), allowed at this door and inside its schedule (if any).
  A blocked identity (a negative identity: never let in) is denied with code `blocked`, at
  face and card_and_face doors alike.
- After a granted or denied decision the same person gets no new decision at this door for
  `cooldown_s`.
- Faces without an accepted identity give at most one `unknown` decision per
  `unknown_event_interval_s`; it never names the nearest candidate.
- Liveness (`recognition.liveness`, facegate/liveness_gate.py): with `passive` or
  `challenge`, a face is let in only when its own track passed liveness; a track judged a
  presentation attack is denied once with code `presentation_attack` naming whose face it
  shows, and never unlocks; `liveness_undecided` and `challenge_failed` are denied once
  per track. These denials start no cooldown (the resident may come next).
- `card_and_face` doors unlock only for an active claim (badge/keypad) whose identity the face
  matches 1:1 in `confirm_frames` of the frames since the claim. Every claim gets exactly one
  `ClaimOutcome` (match, mismatch, superseded or timed out), in `face` mode too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

from facegate.config.app import RecognitionConfig
from facegate.decisions import ClaimOutcome, Decision, DecisionKind, Prompt, ReasonCode
from facegate.liveness_gate import LivenessGate, Verdict
from facegate.matching import MatchResult
from facegate.vision.types import LivenessEvidence

logger = logging.getLogger(__name__)

MODES: Final = frozenset({"face", "card_and_face"})
ATTACK: Final = "presentation attack: a photo or a screen, not a live face"
_LIVENESS_DENIALS: Final = {
    Verdict.ATTACK: (ReasonCode.PRESENTATION_ATTACK, ATTACK),
    Verdict.UNDECIDED: (ReasonCode.LIVENESS_UNDECIDED, "recognised, but no sign of life yet"),
    Verdict.FAILED: (ReasonCode.CHALLENGE_FAILED, "liveness challenge not answered in time"),
}
NO_CLAIM: Final = "card_and_face: no valid claim"
CLAIM_MISMATCH: Final = "face does not match claim"
_TEXT: Final = {ReasonCode.NO_CLAIM: NO_CLAIM, ReasonCode.CLAIM_MISMATCH: CLAIM_MISMATCH}

#: A face track id, or ("-", identity) for untracked faces: one pseudo-track per identity.
TrackKey = int | tuple[str, str | None]


# --- what the policy needs from the people's source (EnrollmentConfig fits as is) ----------


class OpenHours(Protocol):
    """A schedule: open at a tz-aware instant or not."""

    def is_open(self, when: datetime) -> bool: ...


class PersonRules(Protocol):
    """One person's access rules."""

    @property
    def schedule(self) -> str | None: ...

    def may_use(self, door: str) -> bool: ...

    def validity_problem(self, when: datetime) -> str | None: ...


class PeopleDirectory(Protocol):
    """Who is enrolled and their schedules; `facegate.config.EnrollmentConfig` is one."""

    @property
    def schedules(self) -> Mapping[str, OpenHours]: ...

    def person(self, person_id: str) -> PersonRules | None: ...

    def is_blocked(self, person_id: str) -> bool: ...


# --- the contract with the service ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """One usable face in one frame, already matched."""

    match: MatchResult  # 1:K identify, threshold and margin applied
    claim_match: MatchResult | None = None  # 1:1 verify against the active claim, if any
    track_id: int | None = None  # the face track (facegate.tracking); None: untracked
    fresh: bool = True  # embedded in this frame (False: reused from an earlier frame)


@dataclass(slots=True)
class _Frame:
    """What one frame contributed to the window."""

    unknown: bool
    claim: bool  # a face matched the active claim 1:1 (and nobody else 1:K)


@dataclass(slots=True)
class _Claim:
    request_id: str
    identity: str
    deadline: float
    best_distance: float | None = None


@dataclass(slots=True)
class _Digest:
    """The best face per identity, the nearest unknown face and the best claim face."""

    best: dict[str, MatchResult] = field(default_factory=dict)
    unknown: MatchResult | None = None
    tracks: dict[str | None, int | None] = field(default_factory=dict)  # identity -> track
    fresh: dict[str | None, bool] = field(default_factory=dict)  # identity -> its face's
    claim: FaceObservation | None = None


class DoorPolicy:
    """Turns matched faces at one door into decisions and claim outcomes."""

    def __init__(
        self,
        door: str,
        mode: str,
        recognition: RecognitionConfig,
        people: PeopleDirectory,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.door = door
        self._clock = clock
        self._frames: deque[_Frame] = deque()
        # track key -> the accepted identity of that track in each of the last `window`
        # frames (None: not seen, or seen without an accepted identity).
        self._tracks: dict[TrackKey, deque[str | None]] = {}
        self._cooldown: dict[str, float] = {}
        # "no valid claim" denials have their own rate limit so that a face seen before the
        # badge is swiped does not put the person's claim into cooldown.
        self._no_claim_cooldown: dict[str, float] = {}
        self._last_unknown: float | None = None
        self._claim: _Claim | None = None
        self._outcomes: list[ClaimOutcome] = []
        self._expired: list[ClaimOutcome] = []
        # Tracks whose reused face held back a decision: the pipeline embeds them next.
        self._recheck: set[int | None] = set()
        self._gate = LivenessGate(door, recognition)
        self.update(recognition, people, mode)

    # --- configuration ----------------------------------------------------------------------

    def update(self, recognition: RecognitionConfig, people: PeopleDirectory, mode: str) -> None:
        """Take new settings (SIGHUP); keeps cooldowns and the active claim, clears the window."""
        if mode not in MODES:
            raise ValueError(f"door {self.door}: mode must be one of {sorted(MODES)}, got {mode!r}")
        self.mode = mode
        self._recognition = recognition
        self._gate.update(recognition)
        self._people = people
        self._frames = deque(maxlen=recognition.window)
        self._tracks = {}

    # --- frames -----------------------------------------------------------------------------

    def observe(
        self,
        faces: Sequence[FaceObservation],
        now: float | None = None,
        liveness: Mapping[int, LivenessEvidence] | None = None,
    ) -> list[Decision]:
        """Feed one processed frame (possibly without faces) and the liveness evidence of
        its face tracks (refused faces' too); return the decisions it made."""
        now = self._clock() if now is None else now
        self._expire(now)
        digest = self._digest(faces)
        self._frames.append(_Frame(digest.unknown is not None, digest.claim is not None))
        self._advance_tracks(faces)
        self._gate.note(liveness or {}, now)
        decisions: list[Decision] = []
        self._report_attacks(faces, now, decisions)
        self._resolve_claim_match(digest, now, decisions)
        for identity in sorted(digest.best):
            self._confirm_identity(identity, digest, now, decisions)
        self._confirm_unknown(digest, now, decisions)
        # Which face track each decision is about (audit, liveness): the best face's.
        decided = []
        for d in decisions:
            track = d.track_id if d.track_id is not None else digest.tracks.get(d.person)
            summary = d.liveness or self._gate.summary(track)
            decided.append(dataclasses.replace(d, track_id=track, liveness=summary))
        return decided

    def now(self) -> float:
        """The policy's clock (epoch seconds)."""
        return self._clock()

    def take_recheck(self) -> set[int | None]:
        """Tracks a decision waits to see embedded afresh (their face in the last frame was
        reused), once: the pipeline embeds them in the next frame."""
        recheck, self._recheck = self._recheck, set()
        return recheck

    def take_prompts(self) -> list[Prompt]:
        """Liveness challenges to publish for this door (and clears: action None), once."""
        return self._gate.take_prompts()

    def _digest(self, faces: Sequence[FaceObservation]) -> _Digest:
        digest = _Digest()
        claim = self._claim
        for face in faces:
            match = face.match
            if claim is not None:
                self._note_claim_distance(claim, face)
            if claim is not None and _counts_for_claim(face, claim.identity):
                if digest.claim is None or _claim_distance(face) < _claim_distance(digest.claim):
                    digest.claim = face
                if match.identity is None:
                    continue  # the claimed person's face, not a stranger
            if match.identity is not None:
                known = digest.best.get(match.identity)
                if known is None or match.distance < known.distance:
                    digest.best[match.identity] = match
                    digest.tracks[match.identity] = face.track_id
                    digest.fresh[match.identity] = face.fresh
            elif digest.unknown is None or match.distance < digest.unknown.distance:
                digest.unknown = match
                digest.tracks[None] = face.track_id
                digest.fresh[None] = face.fresh
        return digest

    @staticmethod
    def _note_claim_distance(claim: _Claim, face: FaceObservation) -> None:
        # Reported when a claim times out, so an installer can see how close it came.
        result = face.claim_match
        if result is not None and result.candidate == claim.identity:
            if claim.best_distance is None or result.distance < claim.best_distance:
                claim.best_distance = result.distance

    def _advance_tracks(self, faces: Sequence[FaceObservation]) -> None:
        """One window slot per track for this frame; tracks that named no one for a whole
        window are dropped."""
        seen: dict[TrackKey, str | None] = {}
        for face in faces:
            identity = face.match.identity
            key: TrackKey = face.track_id if face.track_id is not None else ("-", identity)
            if identity is not None or key not in seen:
                seen[key] = identity
        for key in seen.keys() - self._tracks.keys():
            self._tracks[key] = deque(maxlen=self._recognition.window)
        for key, window in list(self._tracks.items()):
            window.append(seen.get(key))
            if not any(window):
                del self._tracks[key]

    def _count(self, identity: str) -> int:
        """Frames of the best track that named `identity` and no one else in the window."""
        best = 0
        for window in self._tracks.values():
            named = [name for name in window if name is not None]
            if named and all(name == identity for name in named):
                best = max(best, len(named))
        return best

    def _forget(self, identity: str) -> None:
        for window in self._tracks.values():
            for index, name in enumerate(window):
                if name == identity:
                    window[index] = None

    def _confirm_identity(
        self, identity: str, digest: _Digest, now: float, out: list[Decision]
    ) -> None:
        claim = self._claim
        if claim is not None and claim.identity == identity and self.mode == "card_and_face":
            return  # the claim's 1:1 frames decide for this person, not 1:K alone
        frames = self._count(identity)
        if frames < self._recognition.confirm_frames:
            return
        track = digest.tracks[identity]
        if not digest.fresh[identity] and self._could_decide(identity, track, now):
            self._recheck.add(track)  # decide on this face, embedded again
            return
        match = digest.best[identity]
        grant = self.mode == "face" and self._may_pass(identity, now)
        if grant and not self._alive(
            identity, digest.tracks.get(identity), match, frames, now, out
        ):
            return  # no unlock without liveness on the same track (waiting, or denied)
        self._forget(identity)
        request_id: str | None = None
        if claim is not None and claim.identity != identity:
            # Someone else was confirmed while a claim waited: never let it match later.
            request_id = claim.request_id
            self._finish_claim(False, ReasonCode.CLAIM_MISMATCH, CLAIM_MISMATCH, None)
        # A blocked person is denied as such at every door: `no_claim` would hide who it was.
        if self.mode == "card_and_face" and not self._people.is_blocked(identity):
            code = ReasonCode.CLAIM_MISMATCH if request_id is not None else ReasonCode.NO_CLAIM
            self._deny_in_card_mode(identity, match, frames, code, request_id, now, out)
            return
        self._decide_person(identity, match, frames, None, now, out)

    def _could_decide(self, identity: str, track: int | None, now: float) -> bool:
        """Whether a confirmation of `identity` on `track` now may publish anything: every
        decision about a person (grant, denial, liveness denial) waits out their cooldown,
        a card_and_face door's "no valid claim" its own as well, and a grant its track's
        liveness verdict."""
        cooldown = self._recognition.cooldown_s
        if not _quiet(self._cooldown, identity, now, cooldown, mark=False):
            return False
        if self.mode == "card_and_face" and not self._people.is_blocked(identity):
            return _quiet(self._no_claim_cooldown, identity, now, cooldown, mark=False)
        when = datetime.fromtimestamp(now, UTC)
        return self.permission_problem(identity, when) is not None or not self._gate.waiting(
            track, now
        )

    def _deny_in_card_mode(
        self,
        identity: str,
        match: MatchResult,
        frames: int,
        code: ReasonCode,
        request_id: str | None,
        now: float,
        out: list[Decision],
    ) -> None:
        denial = self._decision(
            "denied", identity, match, frames, code, _TEXT[code], now, request_id
        )
        if code is ReasonCode.NO_CLAIM:
            cooldown = self._recognition.cooldown_s
            # A granted claim starts the real cooldown: no "no valid claim" right after it.
            if not _quiet(self._cooldown, identity, now, cooldown, mark=False):
                return
            if not _quiet(self._no_claim_cooldown, identity, now, cooldown):
                return
            out.append(denial)
            return
        if _quiet(self._cooldown, identity, now, self._recognition.cooldown_s):
            out.append(denial)

    # --- claims -----------------------------------------------------------------------------

    def claim(
        self, request_id: str, identity: str, timeout_s: float | None, now: float | None = None
    ) -> None:
        """A badge or keypad says who is at the door; the next frames are checked 1:1.

        The wait is `timeout_s`, capped at `verify_timeout_s` (a missing, non-positive or
        non-finite value means `verify_timeout_s`). A claim still waiting is answered
        "superseded" (match False): one claim at a time per door.
        """
        now = self._clock() if now is None else now
        self._expire(now)
        limit = self._recognition.verify_timeout_s
        usable = timeout_s is not None and math.isfinite(timeout_s) and timeout_s > 0
        wait = timeout_s if usable and timeout_s is not None else limit
        if self._claim is not None:
            self._finish_claim(
                False, ReasonCode.SUPERSEDED, f"superseded by request {request_id}", None
            )
        self._claim = _Claim(request_id, identity, now + min(wait, limit))
        for frame in self._frames:
            frame.claim = False  # only frames after the claim count for it
        logger.debug("door %s: claim %s for %s", self.door, request_id, identity)

    def active_claim_identity(self) -> str | None:
        """The identity the service should verify each face against 1:1, or None."""
        return None if self._claim is None else self._claim.identity

    def expired_claims(self, now: float | None = None) -> list[ClaimOutcome]:
        """Claims that timed out without a match (match False), each returned once."""
        self._expire(self._clock() if now is None else now)
        expired, self._expired = self._expired, []
        return expired

    def take_claim_outcomes(self) -> list[ClaimOutcome]:
        """Claims answered by `observe` (match, mismatch) or superseded, each returned once."""
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

    def _expire(self, now: float) -> None:
        claim = self._claim
        if claim is None or now < claim.deadline:
            return
        self._claim = None
        self._expired.append(
            ClaimOutcome(
                claim.request_id,
                claim.identity,
                False,
                claim.best_distance,
                ReasonCode.TIMEOUT,
                "timeout",
            )
        )
        logger.debug("door %s: claim %s timed out", self.door, claim.request_id)

    def _finish_claim(
        self, matched: bool, code: ReasonCode, reason: str, distance: float | None
    ) -> None:
        claim = self._claim
        if claim is None:
            return
        self._claim = None
        if distance is None:
            distance = claim.best_distance
        self._outcomes.append(
            ClaimOutcome(claim.request_id, claim.identity, matched, distance, code, reason)
        )
        logger.debug("door %s: claim %s -> %s (%s)", self.door, claim.request_id, matched, reason)

    def _resolve_claim_match(self, digest: _Digest, now: float, out: list[Decision]) -> None:
        claim, face = self._claim, digest.claim
        if claim is None or face is None:
            return
        frames = sum(1 for frame in self._frames if frame.claim)
        if frames < self._recognition.confirm_frames:
            return
        if not face.fresh:
            self._recheck.add(face.track_id)
            return
        identity, request_id = claim.identity, claim.request_id
        result = face.claim_match
        assert result is not None  # _counts_for_claim checked it
        match = MatchResult(identity, identity, result.distance, face.match.margin, "match")
        if self.mode == "card_and_face" and self._may_pass(identity, now):
            if not self._alive(identity, face.track_id, match, frames, now, out, request_id):
                if self._gate.already_reported(face.track_id, Verdict.ATTACK):
                    self._finish_claim(False, ReasonCode.PRESENTATION_ATTACK, ATTACK, None)
                return  # the claim waits for liveness on the same track (until its timeout)
        self._finish_claim(True, ReasonCode.MATCH, "match", _claim_distance(face))
        if self.mode != "card_and_face":
            return  # face mode: the claim is answered, unlocking follows the 1:K path
        self._forget(identity)
        self._decide_person(identity, match, frames, request_id, now, out)

    # --- liveness -----------------------------------------------------------------------------

    def _may_pass(self, identity: str, now: float) -> bool:
        """Whether a decision now would let `identity` in (only then liveness is asked)."""
        quiet = _quiet(self._cooldown, identity, now, self._recognition.cooldown_s, mark=False)
        when = datetime.fromtimestamp(now, UTC)
        return quiet and self.permission_problem(identity, when) is None

    def _alive(
        self,
        identity: str,
        track: int | None,
        match: MatchResult,
        frames: int,
        now: float,
        out: list[Decision],
        request_id: str | None = None,
    ) -> bool:
        """Whether the recognised face on `track` may pass liveness now; if not, the denial
        its verdict calls for (once per track; never a cooldown: the resident may be next)."""
        verdict = self._gate.check(track, now)
        if verdict is Verdict.PASS:
            return True
        if verdict is Verdict.WAIT or self._gate.already_reported(track, verdict):
            return False
        code, reason = _LIVENESS_DENIALS[verdict]
        denial = self._decision("denied", identity, match, frames, code, reason, now, request_id)
        out.append(dataclasses.replace(denial, track_id=track))
        if track is not None:
            self._gate.reported(track, verdict)
        if verdict is not Verdict.UNDECIDED:
            self._forget(identity)  # this approach is over; undecided may still pass
        return False

    def _report_attacks(
        self, faces: Sequence[FaceObservation], now: float, out: list[Decision]
    ) -> None:
        """A track judged a presentation attack is denied once, naming whose face it shows
        (an audit must know whose photo was used), as soon as one of its faces is matched."""
        attacked = set(self._gate.new_attacks())
        for face in faces:
            track, identity = face.track_id, face.match.identity
            if track not in attacked or identity is None:
                continue
            attacked.discard(track)
            code, reason = _LIVENESS_DENIALS[Verdict.ATTACK]
            denial = self._decision("denied", identity, face.match, 1, code, reason, now, None)
            out.append(dataclasses.replace(denial, track_id=track))
            self._gate.reported(track, Verdict.ATTACK)
            self._forget(identity)

    # --- decisions --------------------------------------------------------------------------

    def _decide_person(
        self,
        identity: str,
        match: MatchResult,
        frames: int,
        request_id: str | None,
        now: float,
        out: list[Decision],
    ) -> None:
        if not _quiet(self._cooldown, identity, now, self._recognition.cooldown_s):
            logger.debug("door %s: %s in cooldown", self.door, identity)
            return
        problem = self.permission_problem(identity, datetime.fromtimestamp(now, UTC))
        kind: DecisionKind = "denied" if problem else "granted"
        code, reason = problem or (ReasonCode.MATCH, "match")
        out.append(self._decision(kind, identity, match, frames, code, reason, now, request_id))

    def permission_problem(self, identity: str, when: datetime) -> tuple[ReasonCode, str] | None:
        """Why `identity` may not open this door at aware `when` (code, text), or None."""
        if self._people.is_blocked(identity):
            return ReasonCode.BLOCKED, "blocked: never let in"
        person = self._people.person(identity)
        if person is None:
            return ReasonCode.NOT_ENROLLED, "not enrolled"
        problem = person.validity_problem(when)
        if problem is not None:
            return ReasonCode.NOT_VALID_NOW, problem
        if not person.may_use(self.door):
            return ReasonCode.DOOR_NOT_ALLOWED, f"not allowed at door {self.door}"
        if person.schedule is not None:
            hours = self._people.schedules.get(person.schedule)
            if hours is None:
                return ReasonCode.UNKNOWN_SCHEDULE, f"unknown schedule {person.schedule}"
            if not hours.is_open(when):
                return ReasonCode.OUTSIDE_SCHEDULE, f"outside schedule {person.schedule}"
        return None

    def _confirm_unknown(self, digest: _Digest, now: float, out: list[Decision]) -> None:
        nearest = digest.unknown
        if nearest is None:
            return
        frames = sum(1 for frame in self._frames if frame.unknown)
        if frames < self._recognition.confirm_frames:
            return
        if not digest.fresh[None] and self._unknown_allowed(now, mark=False):
            self._recheck.add(digest.tracks[None])
            return
        if not self._unknown_allowed(now):
            return
        for frame in self._frames:
            frame.unknown = False
        # The nearest candidate's name stays out: it would tell who the stranger resembles.
        out.append(
            self._decision(
                "unknown", None, nearest, frames, ReasonCode.UNKNOWN_FACE, "unknown face", now, None
            )
        )

    def _unknown_allowed(self, now: float, *, mark: bool = True) -> bool:
        last = self._last_unknown
        interval = self._recognition.unknown_event_interval_s
        if last is not None and now < last:
            if mark:
                self._last_unknown = now  # clock stepped back: restart the interval from here
            return False
        if last is not None and now - last < interval:
            return False
        if mark:
            self._last_unknown = now
        return True

    def _decision(
        self,
        kind: DecisionKind,
        person: str | None,
        match: MatchResult,
        frames: int,
        code: ReasonCode,
        reason: str,
        now: float,
        request_id: str | None,
    ) -> Decision:
        return Decision(
            kind=kind,
            door=self.door,
            person=person,
            distance=match.distance,
            margin=match.margin,
            frames=frames,
            code=code,
            reason=reason,
            event_id=uuid.uuid4().hex,
            ts=now,
            unlock=kind == "granted",
            request_id=request_id,
        )


def _counts_for_claim(face: FaceObservation, identity: str) -> bool:
    """A 1:1 match for the claim whose nearest enrolled identity is the claimed one.

    Requiring the nearest 1:K candidate (not only an accepted 1:K identity) closes the case
    of another enrolled person whose face is within the threshold of the claimed template
    but was not accepted as themselves only for lack of margin."""
    result = face.claim_match
    if result is None or result.identity != identity:
        return False
    return face.match.candidate == identity


def _claim_distance(face: FaceObservation) -> float:
    return face.claim_match.distance if face.claim_match is not None else math.inf


def _quiet(
    last: dict[str, float], key: str, now: float, interval: float, *, mark: bool = True
) -> bool:
    """Whether `key` is out of its cooldown at `now`; if so and `mark`, start a new one."""
    previous = last.get(key)
    if previous is not None and now < previous:
        last[key] = now  # clock stepped back: restart the cooldown from here, fail closed
        return False
    if previous is not None and now - previous < interval:
        return False
    if mark:
        last[key] = now
    return True
