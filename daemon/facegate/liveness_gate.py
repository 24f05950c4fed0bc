"""What a door does with liveness evidence: let a recognised face through, wait, deny an
attack, or challenge it. Pure and clock-injected, like the policy that asks it.

`recognition.liveness`:

- `off`: every recognised face passes (a photo of a resident opens the door).
- `passive`: a recognised face passes once its own track is judged live (3-D structure
  in its motion). An attack verdict on the track is reported once as `presentation_attack`
  and the track never passes. A track still undecided `liveness_wait_s` after its identity
  was confirmed is reported once as `liveness_undecided`; it keeps its chance to pass
  when it moves.
- `challenge`: a recognised face gets a random prompt (`challenge_prompts`) published for
  the door; it passes when the first answer seen on the same track after the prompt is
  the prompted action, within `challenge_timeout_s`, and (for a turn) the track is judged
  live, so the turn was made by a 3-D head. A turn answers only when it is deliberate
  (`actions.prompted_turn`): started 0.3-2 s after the prompt, fast (14 degrees of yaw
  within 0.3 s) and back within 2 s; a head looking around at its own pace, or one that
  turns to face the display and stays, is no answer either way. A different first answer
  or none in time is `challenge_failed`, once; the track never passes. A video replay
  does not answer a prompt it could not know, except by chance (measured in
  `facegate liveness-eval`).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from facegate.config.app import RecognitionConfig
from facegate.decisions import Liveness, Prompt
from facegate.vision.liveness.actions import (
    BLINK,
    TURN_LEFT,
    TURN_RIGHT,
    prompted_turn,
)
from facegate.vision.types import LivenessEvidence

logger = logging.getLogger(__name__)

#: What a display or speaker says for each prompt (the subject's own left and right).
PROMPT_TEXT: Final = {
    TURN_LEFT: "turn your head to your left",
    TURN_RIGHT: "turn your head to your right",
    BLINK: "blink",
}
_TURNS: Final = frozenset({TURN_LEFT, TURN_RIGHT})
#: A track's evidence not refreshed for this long is dropped (the track has ended).
FORGET_AFTER_S: Final = 10.0
#: Yaw samples kept per track (the answer to a prompt is read from them): 20 s at 10 fps.
YAW_SAMPLES: Final = 200


class Verdict(Enum):
    PASS = "pass"
    WAIT = "wait"
    ATTACK = "attack"
    UNDECIDED = "undecided"  # passive: waited liveness_wait_s; report once, keep waiting
    FAILED = "failed"  # challenge answered wrong or late


@dataclass
class _Challenge:
    action: str
    after_frame: int  # answers seen on frames after this one count
    deadline: float
    shown_at: float  # when the prompt was published (a turn's reaction counts from here)
    answered: bool = False  # the prompted action was seen (a turn then waits for live)


@dataclass
class _Track:
    evidence: LivenessEvidence
    seen: float
    #: (time, signed yaw) of each observation of the track (one per evidence frame).
    yaws: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=YAW_SAMPLES))
    confirmed_at: float | None = None
    challenge: _Challenge | None = None
    passed: str | None = None  # the method that let it through
    failed: bool = False
    reported: set[Verdict] = field(default_factory=set)


class LivenessGate:
    """Liveness state of one door's tracks. Not thread-safe (the loop thread owns it)."""

    def __init__(
        self, door: str, recognition: RecognitionConfig, rng: random.Random | None = None
    ) -> None:
        self.door = door
        self._rng = rng or random.SystemRandom()  # a prompt must not be guessable
        self._tracks: dict[int, _Track] = {}
        self._prompts: list[Prompt] = []
        self._prompting: int | None = None  # the track the published prompt is for
        self.update(recognition)

    def update(self, recognition: RecognitionConfig) -> None:
        """New settings (SIGHUP): pending challenges keep theirs."""
        self.mode = recognition.liveness
        self._wait_s = recognition.liveness_wait_s
        self._timeout_s = recognition.challenge_timeout_s
        self._choices = tuple(recognition.challenge_prompts)

    # --- per frame -----------------------------------------------------------------------

    def note(self, evidence: Mapping[int, LivenessEvidence], now: float) -> None:
        """The evidence of this frame's tracks; tracks not seen for a while are dropped."""
        for track, found in evidence.items():
            state = self._tracks.get(track)
            if state is None:
                state = self._tracks[track] = _Track(found, now)
                state.yaws.append((now, found.yaw_deg))
            else:
                if found.frames > state.evidence.frames:  # a new observation of the face
                    state.yaws.append((now, found.yaw_deg))
                state.evidence, state.seen = found, now
        for track in [t for t, s in self._tracks.items() if now - s.seen > FORGET_AFTER_S]:
            del self._tracks[track]
            if track == self._prompting:
                self._clear_prompt()

    def new_attacks(self) -> list[int]:
        """Tracks judged attacks and not yet reported as such (the policy reports them)."""
        if self.mode == "off":
            return []
        return [
            track
            for track, state in self._tracks.items()
            if state.evidence.live is False and Verdict.ATTACK not in state.reported
        ]

    def reported(self, track: int, verdict: Verdict) -> None:
        """The policy published a decision for this verdict: never again for this track."""
        state = self._tracks.get(track)
        if state is not None:
            state.reported.add(verdict)
        if verdict in (Verdict.ATTACK, Verdict.FAILED) and track == self._prompting:
            self._clear_prompt()

    def already_reported(self, track: int | None, verdict: Verdict) -> bool:
        state = self._tracks.get(track) if track is not None else None
        return state is not None and verdict in state.reported

    def take_prompts(self) -> list[Prompt]:
        prompts, self._prompts = self._prompts, []
        return prompts

    # --- the question the policy asks ------------------------------------------------------

    def check(self, track: int | None, now: float) -> Verdict:
        """May the recognised face on `track` pass now?"""
        if self.mode == "off":
            return Verdict.PASS
        state = self._tracks.get(track) if track is not None else None
        if state is None:
            return Verdict.WAIT  # no evidence (an untracked face): never a pass
        evidence = state.evidence
        if evidence.live is False:
            return Verdict.ATTACK
        if state.failed:
            return Verdict.FAILED
        if state.confirmed_at is None:
            state.confirmed_at = now
        if self.mode == "passive":
            return self._passive(state, now)
        return self._challenge(track, state, now)

    def waiting(self, track: int | None, now: float) -> bool:
        """Whether `check(track, now)` would only say WAIT, changing nothing: a passive
        track with no verdict yet, confirmed less than `liveness_wait_s` ago or already
        reported undecided (the policy then needs no fresh look at its face)."""
        state = self._tracks.get(track) if track is not None else None
        if self.mode != "passive" or state is None:
            return self.mode == "passive"
        if state.evidence.live is not None or state.failed or state.confirmed_at is None:
            return False
        return now - state.confirmed_at < self._wait_s or Verdict.UNDECIDED in state.reported

    def _passive(self, state: _Track, now: float) -> Verdict:
        if state.evidence.live is True:
            state.passed = "passive"
            return Verdict.PASS
        assert state.confirmed_at is not None
        if now - state.confirmed_at >= self._wait_s and Verdict.UNDECIDED not in state.reported:
            return Verdict.UNDECIDED
        return Verdict.WAIT

    def _challenge(self, track: int | None, state: _Track, now: float) -> Verdict:
        assert track is not None
        if state.passed is not None:
            return Verdict.PASS
        challenge = state.challenge
        if challenge is None:
            action = self._rng.choice(self._choices)
            state.challenge = _Challenge(
                action, state.evidence.frames - 1, now + self._timeout_s, now
            )
            self._publish(track, action)
            logger.info("door %s: track %s challenged: %s", self.door, track, action)
            return Verdict.WAIT
        if challenge.action in _TURNS:
            turn = prompted_turn(state.yaws, challenge.shown_at)
            # A turn counts once it came back (a head that turned to face the display and
            # stays is no answer); until then, wait.
            answer = turn.action if turn is not None and turn.back_at is not None else None
        else:
            answer = self._first_answer(state.evidence, challenge)
        if answer is not None and answer != challenge.action:
            return self._fail(track, state, f"answered {answer} to {challenge.action}")
        if answer == challenge.action:
            challenge.answered = True
        # A turn must come from a 3-D head: the passive verdict confirms it.
        done = challenge.answered and (
            state.evidence.live is True or challenge.action not in _TURNS
        )
        if done and now <= challenge.deadline:
            state.passed = "challenge"
            if track == self._prompting:
                self._clear_prompt()
            return Verdict.PASS
        if now > challenge.deadline:
            late = "answered too late" if challenge.answered else "no answer"
            return self._fail(track, state, f"{late} to {challenge.action}")
        return Verdict.WAIT

    @staticmethod
    def _first_answer(evidence: LivenessEvidence, challenge: _Challenge) -> str | None:
        """The first action of the prompted kind (a turn for a turn, a blink for a blink)
        seen after the prompt: a turn the wrong way counts, a spontaneous blink while a
        turn is asked does not."""
        kind = _TURNS if challenge.action in _TURNS else frozenset({BLINK})
        for frame, action in evidence.actions:
            if frame > challenge.after_frame and action in kind:
                return action
        return None

    def _fail(self, track: int, state: _Track, why: str) -> Verdict:
        state.failed = True
        logger.info("door %s: track %s failed its challenge: %s", self.door, track, why)
        if track == self._prompting:
            self._clear_prompt()
        return Verdict.FAILED

    def _publish(self, track: int, action: str) -> None:
        self._prompting = track
        self._prompts.append(Prompt(self.door, action, PROMPT_TEXT[action]))

    def _clear_prompt(self) -> None:
        self._prompting = None
        self._prompts.append(Prompt(self.door, None, None))

    # --- what decisions carry --------------------------------------------------------------

    def summary(self, track: int | None) -> Liveness:
        """How liveness stands on `track`, for the decision about it."""
        if self.mode == "off":
            return Liveness("off", "off")
        state = self._tracks.get(track) if track is not None else None
        if state is None:
            return Liveness(self.mode, "undecided")
        evidence = state.evidence
        verdict = {True: "live", False: "attack", None: "undecided"}[evidence.live]
        method = state.passed or ("challenge" if state.challenge is not None else "passive")
        action = state.challenge.action if state.challenge is not None else None
        return Liveness(method, verdict, evidence.score, evidence.scores, action)
