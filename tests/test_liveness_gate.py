"""Liveness in the door's rules (issue 13, item 2): DoorPolicy with synthetic matches and
liveness evidence on a fake clock; the prompt path to the bus; the config. No models."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from facegate.config import EnrollmentConfig, RecognitionConfig, load_enrollment
from facegate.decisions import Decision, Liveness, Prompt, ReasonCode
from facegate.liveness_gate import PROMPT_TEXT
from facegate.matching import MatchResult
from facegate.mqtt.bus import RecordingDoorBus
from facegate.mqtt.contract import event_payload
from facegate.outputs.mqtt import MqttOutput
from facegate.policy import DoorPolicy, FaceObservation
from facegate.vision.types import LivenessEvidence

ENROLLMENT = """\
people:
  - {id: alice, images: [a.jpg], doors: [front]}
  - {id: bob, images: [b.jpg], doors: [front]}
"""
START = 1_750_000_000.0
TRACK = 7
UNDECIDED = LivenessEvidence(None, 0.2, 5, "not enough motion", "passive")
LIVE = LivenessEvidence(True, 0.8, 9, "3-D face structure", "passive", scores=(("pairs", 6.0),))
ATTACK = LivenessEvidence(False, 0.0, 9, "a sheet", "passive", scores=(("sheet_pairs", 2.0),))


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def people(tmp_path: Path) -> EnrollmentConfig:
    (tmp_path / "enrollment.yaml").write_text(ENROLLMENT)
    return load_enrollment(tmp_path / "enrollment.yaml")


def door(
    people: EnrollmentConfig, clock: Clock, mode: str = "passive", **rec: object
) -> DoorPolicy:
    settings = {"liveness": mode, "cooldown_s": 10.0, **rec}
    policy = DoorPolicy("front", "face", RecognitionConfig.model_validate(settings), people, clock)
    policy._gate._rng = random.Random(4)  # a known prompt sequence for the tests
    return policy


def face(identity: str | None, track: int = TRACK) -> FaceObservation:
    match = MatchResult(identity, identity or "alice", 0.5, 0.3, "match" if identity else "far")
    return FaceObservation(match, None, track)


def frames(
    policy: DoorPolicy,
    clock: Clock,
    evidence: Sequence[LivenessEvidence],
    identity: str | None = "alice",
    track: int = TRACK,
) -> list[Decision]:
    """One frame per evidence, 0.1 s apart, the same face each time."""
    out: list[Decision] = []
    for item in evidence:
        out += policy.observe([face(identity, track)], clock.now, {track: item})
        clock.now += 0.1
    return out


def test_off_lets_a_recognised_face_in_as_before(people: EnrollmentConfig) -> None:
    clock = Clock()
    policy = door(people, clock, "off")
    decisions = [d for d in frames(policy, clock, [UNDECIDED] * 3) if d.kind == "granted"]
    assert len(decisions) == 1
    assert decisions[0].liveness == Liveness("off", "off")


def test_passive_waits_for_a_live_verdict_on_the_same_track(people: EnrollmentConfig) -> None:
    clock = Clock()
    policy = door(people, clock)
    assert frames(policy, clock, [UNDECIDED] * 6) == []  # recognised, not yet live: no unlock
    (granted,) = frames(policy, clock, [LIVE])
    assert granted.kind == "granted" and granted.unlock and granted.track_id == TRACK
    assert granted.liveness == Liveness("passive", "live", 0.8, (("pairs", 6.0),))


def test_a_live_verdict_on_another_track_does_not_count(people: EnrollmentConfig) -> None:
    clock = Clock()
    policy = door(people, clock)
    decisions = []
    for _ in range(6):  # alice's face on track 7 is undecided; track 8 (someone else) is live
        decisions += policy.observe([face("alice")], clock.now, {TRACK: UNDECIDED, 8: LIVE})
        clock.now += 0.1
    assert decisions == []


def test_an_attack_is_denied_once_naming_whose_face_and_never_unlocks(
    people: EnrollmentConfig,
) -> None:
    clock = Clock()
    policy = door(people, clock)
    decisions = frames(policy, clock, [UNDECIDED, UNDECIDED, ATTACK] + [ATTACK] * 20)
    (denied,) = decisions
    assert denied.kind == "denied" and not denied.unlock
    assert denied.code is ReasonCode.PRESENTATION_ATTACK and denied.person == "alice"
    assert denied.liveness is not None and denied.liveness.verdict == "attack"
    assert dict(denied.liveness.evidence)["sheet_pairs"] == 2.0
    event = event_payload(denied, "pi")
    assert event["code"] == "presentation_attack"
    assert event["liveness"] == {
        "method": "passive",
        "verdict": "attack",
        "score": 0.0,
        "evidence": {"sheet_pairs": 2.0},
        "action": None,
    }
    # The real alice, on her own track, is let in right after (no cooldown from an attack).
    (granted,) = frames(policy, clock, [UNDECIDED, LIVE, LIVE], track=TRACK + 1)
    assert granted.kind == "granted" and granted.person == "alice"


def test_an_attack_of_a_stranger_is_an_unknown_event_carrying_the_verdict(
    people: EnrollmentConfig,
) -> None:
    clock = Clock()
    policy = door(people, clock)
    (unknown,) = frames(policy, clock, [ATTACK] * 3, identity=None)
    assert unknown.kind == "unknown" and unknown.liveness is not None
    assert unknown.liveness.verdict == "attack"


def test_passive_reports_an_undecided_face_once_and_still_lets_it_in_later(
    people: EnrollmentConfig,
) -> None:
    clock = Clock()
    policy = door(people, clock, liveness_wait_s=1.0)
    decisions = frames(policy, clock, [UNDECIDED] * 30)  # 3 s standing still
    (undecided,) = decisions
    assert undecided.code is ReasonCode.LIVENESS_UNDECIDED and not undecided.unlock
    (granted,) = frames(policy, clock, [LIVE])
    assert granted.kind == "granted"


def evidence_with(
    actions: tuple[tuple[int, str], ...], live: bool | None, frames: int
) -> LivenessEvidence:
    return LivenessEvidence(live, 0.7 if live else 0.2, frames, "", "passive", actions=actions)


def challenged(people: EnrollmentConfig, clock: Clock) -> tuple[DoorPolicy, Prompt]:
    policy = door(people, clock, "challenge", challenge_timeout_s=3.0)
    assert frames(policy, clock, [evidence_with((), None, n) for n in range(1, 4)]) == []
    (prompt,) = policy.take_prompts()
    assert prompt.door == "front" and prompt.action in ("turn_left", "turn_right")
    assert prompt.text == PROMPT_TEXT[prompt.action]
    return policy, prompt


def turning(first: int, yaws: Sequence[float], live: bool | None = True) -> list[LivenessEvidence]:
    """One observation per yaw (degrees, > 0: the subject's left), numbered from `first`."""
    return [
        LivenessEvidence(live, 0.7 if live else 0.2, first + i, "", "passive", yaw_deg=yaw)
        for i, yaw in enumerate(yaws)
    ]


#: A deliberate turn to the subject's left, 0.1 s per sample: 0.5 s facing the display
#: after the prompt, out by 25 degrees in 0.3 s, held 0.3 s, back in 0.3 s.
TURN = (0, 0, 0, 0, 0, 8, 18, 25, 25, 25, 12, 3, 0, 0, 0)


def side(action: str | None) -> float:
    return 1.0 if action == "turn_left" else -1.0


def test_challenge_passes_on_the_prompted_turn_made_by_a_live_head(
    people: EnrollmentConfig,
) -> None:
    clock = Clock()
    policy, prompt = challenged(people, clock)
    answer = turning(4, [side(prompt.action) * y for y in TURN])
    decided = frames(policy, clock, answer)
    (granted,) = decided
    assert granted.kind == "granted" and granted.unlock
    assert granted.liveness is not None and granted.liveness.method == "challenge"
    assert granted.liveness.action == prompt.action
    assert policy.take_prompts() == [Prompt("front", None, None)]  # the display is cleared


def test_a_turn_passes_only_once_it_came_back(people: EnrollmentConfig) -> None:
    clock = Clock()
    policy, prompt = challenged(people, clock)
    out_and_held = [side(prompt.action) * y for y in TURN[:10]]
    assert frames(policy, clock, turning(4, out_and_held)) == []


def test_challenge_needs_more_than_passive_live(people: EnrollmentConfig) -> None:
    """A replayed video is live to the passive stage; only the prompted answer counts."""
    clock = Clock()
    policy, _ = challenged(people, clock)
    assert frames(policy, clock, [evidence_with((), True, n) for n in range(4, 20)]) == []


def test_a_head_looking_around_at_its_own_pace_does_not_answer(
    people: EnrollmentConfig,
) -> None:
    """25 degrees the prompted way and back over 2 s (a recording of a head looking around:
    about 4 degrees per 0.1 s) is no answer; the challenge then runs out."""
    clock = Clock()
    policy, prompt = challenged(people, clock)
    slow = [side(prompt.action) * min(4.0 * i, 25.0, 4.0 * (18 - i)) for i in range(19)]
    assert frames(policy, clock, turning(4, slow)) == []
    (failed,) = frames(policy, clock, turning(23, [0.0] * 12))
    assert failed.code is ReasonCode.CHALLENGE_FAILED and not failed.unlock


def test_a_wrong_answer_fails_once_and_never_unlocks(people: EnrollmentConfig) -> None:
    clock = Clock()
    policy, prompt = challenged(people, clock)
    wrong = turning(4, [-side(prompt.action) * y for y in TURN])
    (failed,) = frames(policy, clock, wrong + turning(19, [0.0] * 10))
    assert failed.code is ReasonCode.CHALLENGE_FAILED and not failed.unlock
    assert policy.take_prompts() == [Prompt("front", None, None)]


def test_a_turn_that_never_comes_back_fails(people: EnrollmentConfig) -> None:
    clock = Clock()
    policy, prompt = challenged(people, clock)
    away = [side(prompt.action) * y for y in (0, 0, 0, 0, 0, 8, 18, 25)] + [
        side(prompt.action) * 25.0
    ] * 25
    (failed,) = frames(policy, clock, turning(4, away))
    assert failed.code is ReasonCode.CHALLENGE_FAILED


def test_a_turn_too_soon_after_the_prompt_is_no_answer(people: EnrollmentConfig) -> None:
    """A turn made less than 0.3 s after the prompt appeared (already under way) was no
    answer to it; a deliberate one after it is."""
    clock = Clock()
    policy, prompt = challenged(people, clock)
    soon = [side(prompt.action) * y for y in (25, 25, 12, 0, 0, 0, 0, 0, 0, 0)]
    assert frames(policy, clock, turning(4, soon)) == []
    answer = turning(14, [side(prompt.action) * y for y in TURN[5:]])
    assert [d.kind for d in frames(policy, clock, answer)] == ["granted"]


def test_a_late_answer_is_not_a_pass(people: EnrollmentConfig) -> None:
    clock = Clock()
    policy, prompt = challenged(people, clock)
    (failed,) = frames(policy, clock, [evidence_with((), None, n) for n in range(4, 40)])
    assert failed.code is ReasonCode.CHALLENGE_FAILED
    late = turning(40, [side(prompt.action) * y for y in TURN])
    assert [d.kind for d in frames(policy, clock, late)] == []


def test_answers_before_the_prompt_do_not_count(people: EnrollmentConfig) -> None:
    clock = Clock()
    policy = door(people, clock, "challenge", challenge_timeout_s=3.0)
    # A deliberate-looking turn both ways before the face was recognised.
    before = [0, 10, 25, 25, 5, 0, -10, -25, -25, -5, 0]
    assert not any(d.unlock for d in frames(policy, clock, turning(1, before), identity=None))
    assert frames(policy, clock, turning(12, [0.0] * 3)) == []
    (prompt,) = policy.take_prompts()
    assert frames(policy, clock, turning(15, [0.0] * 10)) == []


def test_the_unlock_carries_the_liveness_method_and_score(people: EnrollmentConfig) -> None:
    clock = Clock()
    policy = door(people, clock)
    granted = frames(policy, clock, [UNDECIDED, LIVE, LIVE])
    bus = RecordingDoorBus(clock=clock)
    output = MqttOutput(bus, "pi")
    output.decision(granted[0])
    (unlock,) = bus.unlocks
    assert unlock.claims["liveness"] == {"method": "passive", "score": 0.8}
    output.prompt(Prompt("front", "turn_left", "turn your head to your left"))
    assert bus.prompts[-1] == ("front", "turn your head to your left")
    assert bus.prompt_actions[-1] == ("front", "turn_left")


@pytest.mark.parametrize(
    ("text", "mode"),
    [("off", "off"), ("'off'", "off"), ("passive", "passive"), ("challenge", "challenge")],
)
def test_yaml_reads_a_bare_off_as_off(text: str, mode: str) -> None:
    raw = yaml.safe_load(f"liveness: {text}")
    assert RecognitionConfig.model_validate(raw).liveness == mode


@pytest.mark.parametrize("text", ["on", "yes", "maybe", "[turn_left]"])
def test_other_liveness_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="liveness"):
        RecognitionConfig.model_validate(yaml.safe_load(f"liveness: {text}"))


def test_challenge_prompts_are_checked() -> None:
    assert RecognitionConfig().challenge_prompts == ("turn_left", "turn_right")
    with pytest.raises(ValueError, match="repeat"):
        RecognitionConfig.model_validate({"challenge_prompts": ["blink", "blink"]})
    with pytest.raises(ValueError):
        RecognitionConfig.model_validate({"challenge_prompts": ["wave"]})
    with pytest.raises(ValueError):
        RecognitionConfig.model_validate({"challenge_prompts": []})


def test_passive_is_the_default() -> None:
    assert RecognitionConfig().liveness == "passive"
