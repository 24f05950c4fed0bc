"""DoorPolicy: multi-frame confirmation, permissions, cooldown, unknown events, 1:1 claims.

Pure unit tests on tiny synthetic MatchResults and a fake clock: no models, no broker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from facegate.config import EnrollmentConfig, RecognitionConfig, load_enrollment
from facegate.decisions import ClaimOutcome, Decision, ReasonCode
from facegate.matching import MatchResult
from facegate.policy import (
    CLAIM_MISMATCH,
    NO_CLAIM,
    DoorPolicy,
    FaceObservation,
    PeopleDirectory,
)

ENROLLMENT = """\
timezone: UTC
schedules:
  office:
    timezone: Europe/Berlin
    windows:
      - days: weekdays
        start: "08:00"
        end: "18:00"
people:
  - {id: alice, images: [a.jpg], doors: [front]}
  - {id: bob, images: [b.jpg], doors: ["*"], schedule: office}
  - {id: carol, images: [c.jpg], doors: [back]}
  - {id: dave, images: [d.jpg], doors: [front], valid_from: 2025-07-01}
  - {id: erin, images: [e.jpg], doors: [front], valid_until: 2025-01-01}
  - {id: frank, images: [f.jpg], doors: [front], disabled: true}
"""

# Wednesday 2025-06-04 10:00 UTC (12:00 in Berlin, CEST).
WEDNESDAY_10_UTC = datetime(2025, 6, 4, 10, 0, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self, start: float = WEDNESDAY_10_UTC) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def people(tmp_path: Path) -> EnrollmentConfig:
    path = tmp_path / "enrollment.yaml"
    path.write_text(ENROLLMENT)
    return load_enrollment(path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def recognition(**overrides: float) -> RecognitionConfig:
    settings: dict[str, float | str] = {
        "liveness": "off",  # these tests are about the other rules; test_liveness_gate: liveness
        "confirm_frames": 3,
        "window": 5,
        "cooldown_s": 10.0,
        "unknown_event_interval_s": 5.0,
        "verify_timeout_s": 5.0,
    }
    settings.update(overrides)
    return RecognitionConfig.model_validate(settings)


def policy(
    people: PeopleDirectory, clock: FakeClock, mode: str = "face", door: str = "front", **rec: float
) -> DoorPolicy:
    return DoorPolicy(door, mode, recognition(**rec), people, clock=clock)


def seen(identity: str, distance: float = 0.5, margin: float = 0.3) -> FaceObservation:
    return FaceObservation(MatchResult(identity, identity, distance, margin, "match"))


def stranger(resembles: str = "alice", distance: float = 1.05) -> FaceObservation:
    return FaceObservation(
        MatchResult(None, resembles, distance, 0.2, f"distance {distance:.3f} > 0.9")
    )


def one_to_one(identity: str, distance: float = 0.6, accepted: bool = True) -> MatchResult:
    if accepted:
        return MatchResult(identity, identity, distance, 0.0, "match")
    return MatchResult(None, identity, distance, 0.0, f"distance {distance:.3f} > 0.9")


def run(
    door: DoorPolicy, clock: FakeClock, frames: Sequence[Sequence[FaceObservation]], dt: float = 0.1
) -> list[list[Decision]]:
    """Feed frames `dt` apart; the decisions of each frame."""
    out = []
    for faces in frames:
        out.append(door.observe(faces))
        clock.advance(dt)
    return out


def flat(per_frame: list[list[Decision]]) -> list[Decision]:
    return [d for frame in per_frame for d in frame]


def test_enrollment_config_is_a_people_directory(people: EnrollmentConfig) -> None:
    directory: PeopleDirectory = people  # mypy checks the Protocol fits
    assert directory.person("alice") is not None


# --- confirmation -----------------------------------------------------------------------------


def test_two_of_five_frames_do_not_confirm_three_do(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock)
    a = [seen("alice")]
    assert flat(run(door, clock, [a, [], a, [], []])) == []
    per_frame = run(door, clock, [a, [], a, [], a])
    assert flat(per_frame[:-1]) == []
    [decision] = per_frame[-1]
    assert (decision.kind, decision.person, decision.unlock) == ("granted", "alice", True)
    assert (decision.frames, decision.reason, decision.door) == (3, "match", "front")
    assert decision.request_id is None and len(decision.event_id) == 32
    assert decision.ts == pytest.approx(clock.now - 0.1)


def test_old_frames_leave_the_window(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock)
    a = [seen("alice")]
    # The first sighting is 6 frames back when the third arrives: only 2 of the last 5.
    assert flat(run(door, clock, [a, [], [], [], [], a, a])) == []
    assert [d.person for d in door.observe(a)] == ["alice"]


def test_interleaved_identities_each_need_their_own_frames(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, door="back", cooldown_s=0)
    a, c = [seen("alice")], [seen("carol")]
    per_frame = run(door, clock, [a, c, a, c, a])
    assert [(d.person, d.kind) for d in flat(per_frame)] == [
        ("alice", "denied")  # alice may not use the back door
    ]
    [decision] = door.observe(c)  # carol now has 3 of the last 5
    assert (decision.person, decision.kind, decision.frames) == ("carol", "granted", 3)


def test_confirmation_resets_history_one_approach_one_decision(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, cooldown_s=0)
    a = [seen("alice")]
    kinds = [[d.kind for d in frame] for frame in run(door, clock, [a] * 6)]
    assert kinds == [[], [], ["granted"], [], [], ["granted"]]


def test_rejected_matches_never_confirm(people: EnrollmentConfig, clock: FakeClock) -> None:
    # threshold and margin were applied upstream: identity None means rejected, whatever
    # the candidate.
    door = policy(people, clock, unknown_event_interval_s=0)
    ambiguous = FaceObservation(MatchResult(None, "alice", 0.5, 0.02, "margin 0.020 < 0.1"))
    decisions = flat(run(door, clock, [[stranger()], [ambiguous]] * 10))
    assert decisions and all(d.kind == "unknown" and not d.unlock for d in decisions)


def test_two_faces_in_one_frame(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock)
    twice = [seen("alice", 0.6), seen("alice", 0.4)]
    assert flat(run(door, clock, [twice, twice])) == []  # 2 frames, not 4 faces
    [decision] = door.observe(twice)
    assert (decision.person, decision.frames, decision.distance) == ("alice", 3, 0.4)

    door = policy(people, clock)
    pair = [seen("alice"), seen("bob")]
    decisions = flat(run(door, clock, [pair] * 3))
    assert sorted((d.person, d.kind) for d in decisions) == [
        ("alice", "granted"),
        ("bob", "granted"),
    ]


def test_a_face_beside_a_known_one_counts_as_unknown(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock)
    decisions = flat(run(door, clock, [[seen("alice"), stranger()]] * 3))
    assert sorted(d.kind for d in decisions) == ["granted", "unknown"]


# --- cooldown ---------------------------------------------------------------------------------


def test_cooldown_per_person_and_door(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock, cooldown_s=10)
    a = [seen("alice")]
    decisions = flat(run(door, clock, [a] * 41, dt=0.25))  # decided at 0.5 s; last frame 10.0 s
    assert [d.kind for d in decisions] == ["granted"]
    clock.advance(0.25)  # 10.5 s: 10 s after the decision
    assert [d.kind for d in flat(run(door, clock, [a] * 3))] == ["granted"]


def test_denial_also_starts_the_cooldown(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock, cooldown_s=10)
    c = [seen("carol")]  # not allowed at front
    assert [d.reason for d in flat(run(door, clock, [c] * 50))] == ["not allowed at door front"]


def test_clock_stepping_back_does_not_end_the_cooldown(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, cooldown_s=10)
    a = [seen("alice")]
    assert len(flat(run(door, clock, [a] * 3))) == 1
    clock.advance(-3600)
    assert flat(run(door, clock, [a] * 50)) == []


def test_update_keeps_cooldown_and_clears_window(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, cooldown_s=10)
    a, b = [seen("alice")], [seen("bob")]
    assert len(flat(run(door, clock, [a] * 3))) == 1
    run(door, clock, [b, b])
    door.update(recognition(cooldown_s=10), people, "face")  # SIGHUP
    # Bob's two frames are gone: he needs three new ones; alice is still cooling down.
    per_frame = run(door, clock, [a + b] * 3)
    assert [[d.person for d in frame] for frame in per_frame] == [[], [], ["bob"]]


def test_update_takes_new_people(
    people: EnrollmentConfig, clock: FakeClock, tmp_path: Path
) -> None:
    door = policy(people, clock)
    z = [seen("zed")]
    assert [d.reason for d in flat(run(door, clock, [z] * 3))] == ["not enrolled"]
    path = tmp_path / "more.yaml"
    path.write_text(ENROLLMENT + "  - {id: zed, images: [z.jpg], doors: [front]}\n")
    door.update(recognition(cooldown_s=0), load_enrollment(path), "face")
    assert [d.kind for d in flat(run(door, clock, [z] * 3))] == ["granted"]


def test_bad_mode_is_refused(people: EnrollmentConfig, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="mode"):
        policy(people, clock, mode="face_or_card")
    door = policy(people, clock)
    with pytest.raises(ValueError, match="mode"):
        door.update(recognition(), people, "open")


# --- unknown faces ----------------------------------------------------------------------------


def test_unknown_is_rate_limited_and_never_names_the_candidate(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, unknown_event_interval_s=5)
    per_frame = run(door, clock, [[stranger("alice", 1.05)]] * 40, dt=0.25)  # 10 s
    decisions = flat(per_frame)
    assert [i for i, frame in enumerate(per_frame) if frame] == [2, 22]  # 0.5 s and 5.5 s
    for decision in decisions:
        assert (decision.kind, decision.person, decision.unlock) == ("unknown", None, False)
        assert decision.distance == 1.05 and decision.frames >= 3
        assert "alice" not in repr(decision)


def test_unknown_needs_confirm_frames(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock)
    s = [stranger()]
    assert flat(run(door, clock, [s, [], s, [], []])) == []


def test_unknown_reports_the_nearest_face(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock)
    frame = [stranger("alice", 1.1), stranger("bob", 0.95)]
    [decision] = flat(run(door, clock, [frame] * 3))
    assert decision.distance == 0.95 and decision.person is None
    assert "bob" not in repr(decision)


# --- permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "door", "when", "reason"),
    [
        ("alice", "front", datetime(2025, 6, 4, 10, tzinfo=UTC), None),
        ("alice", "back", datetime(2025, 6, 4, 10, tzinfo=UTC), "not allowed at door back"),
        ("carol", "front", datetime(2025, 6, 4, 10, tzinfo=UTC), "not allowed at door front"),
        # office is 08:00-18:00 Berlin (CEST, UTC+2) on weekdays
        ("bob", "back", datetime(2025, 6, 4, 6, 30, tzinfo=UTC), None),
        ("bob", "back", datetime(2025, 6, 4, 5, 30, tzinfo=UTC), "outside schedule office"),
        # 17:30 UTC is inside 08-18 in UTC but 19:30 in Berlin
        ("bob", "back", datetime(2025, 6, 4, 17, 30, tzinfo=UTC), "outside schedule office"),
        ("bob", "back", datetime(2025, 6, 7, 10, tzinfo=UTC), "outside schedule office"),  # Sat
        (
            "dave",
            "front",
            datetime(2025, 6, 30, 23, tzinfo=UTC),
            "not valid before 2025-07-01T00:00:00+00:00",
        ),
        ("dave", "front", datetime(2025, 7, 1, 0, tzinfo=UTC), None),
        ("erin", "front", datetime(2025, 1, 1, 23, 59, tzinfo=UTC), None),
        ("erin", "front", datetime(2025, 1, 2, tzinfo=UTC), "expired at 2025-01-02T00:00:00+00:00"),
        ("frank", "front", datetime(2025, 6, 4, 10, tzinfo=UTC), "disabled"),
        ("zed", "front", datetime(2025, 6, 4, 10, tzinfo=UTC), "not enrolled"),
    ],
)
def test_every_denial_carries_its_reason(
    people: EnrollmentConfig, identity: str, door: str, when: datetime, reason: str | None
) -> None:
    clock = FakeClock(when.timestamp())
    gate = policy(people, clock, door=door)
    [decision] = flat(run(gate, clock, [[seen(identity)]] * 3, dt=0))
    assert decision.reason == (reason or "match")
    assert decision.code == _code_of(reason)
    assert decision.kind == ("granted" if reason is None else "denied")
    assert decision.unlock is (reason is None)
    assert decision.person == identity


def _code_of(reason: str | None) -> ReasonCode:
    """The code a program reads beside each human reason of the table above."""
    if reason is None:
        return ReasonCode.MATCH
    prefixes = {
        "not allowed at door": ReasonCode.DOOR_NOT_ALLOWED,
        "outside schedule": ReasonCode.OUTSIDE_SCHEDULE,
        "not enrolled": ReasonCode.NOT_ENROLLED,
    }
    for prefix, code in prefixes.items():
        if reason.startswith(prefix):
            return code
    return ReasonCode.NOT_VALID_NOW  # not valid before, expired, disabled


def test_unknown_schedule_fails_closed(clock: FakeClock) -> None:
    class Rules:
        schedule: str | None = "gone"

        def may_use(self, door: str) -> bool:
            return True

        def validity_problem(self, when: datetime) -> str | None:
            return None

    class Directory:
        schedules: dict[str, object] = {}

        def person(self, person_id: str) -> Rules:
            return Rules()

        def is_blocked(self, person_id: str) -> bool:
            return False

    door = DoorPolicy("front", "face", recognition(), Directory(), clock=clock)  # type: ignore[arg-type]
    [decision] = flat(run(door, clock, [[seen("alice")]] * 3))
    assert (decision.kind, decision.reason) == ("denied", "unknown schedule gone")
    assert decision.code is ReasonCode.UNKNOWN_SCHEDULE


# --- claims -----------------------------------------------------------------------------------


def claimed(identity: str, claim: str, distance: float = 0.6) -> FaceObservation:
    """A face 1:K-identified as `identity` and checked 1:1 against the claim `claim`."""
    match = MatchResult(identity, identity, 0.5, 0.3, "match")
    return FaceObservation(match, one_to_one(claim, distance, accepted=identity == claim))


def test_card_and_face_without_claim_never_unlocks(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, mode="card_and_face")
    decisions = flat(run(door, clock, [[seen("alice")]] * 200))  # 20 s
    assert [d.reason for d in decisions] == [NO_CLAIM, NO_CLAIM]  # one per cooldown
    assert not any(d.unlock for d in decisions)
    assert door.active_claim_identity() is None


def test_card_and_face_claim_and_matching_face_is_granted(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, mode="card_and_face")
    # The face was seen (and denied) before the badge: that must not block the claim.
    assert [d.reason for d in flat(run(door, clock, [[seen("alice")]] * 3))] == [NO_CLAIM]
    door.claim("r1", "alice", timeout_s=5)
    assert door.active_claim_identity() == "alice"
    per_frame = run(door, clock, [[claimed("alice", "alice", 0.55)]] * 3)
    [decision] = flat(per_frame)
    assert per_frame[2] == [decision]  # 3 frames after the claim, not before
    assert (decision.kind, decision.person, decision.request_id) == ("granted", "alice", "r1")
    assert decision.unlock and decision.distance == 0.55 and decision.frames == 3
    assert door.take_claim_outcomes() == [
        ClaimOutcome("r1", "alice", True, 0.55, ReasonCode.MATCH, "match"),
    ]
    assert door.take_claim_outcomes() == []
    assert door.active_claim_identity() is None
    # Still standing there: no "no valid claim" right after the grant (cooldown).
    assert flat(run(door, clock, [[seen("alice")]] * 10)) == []
    assert door.expired_claims(clock.now + 60) == []


def test_card_and_face_claim_still_needs_permission(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, mode="card_and_face")
    door.claim("r2", "carol", timeout_s=5)  # carol may only use back
    [decision] = flat(run(door, clock, [[claimed("carol", "carol")]] * 3))
    assert (decision.kind, decision.reason, decision.request_id) == (
        "denied",
        "not allowed at door front",
        "r2",
    )
    [outcome] = door.take_claim_outcomes()
    assert outcome.match  # the face did match; the door rules said no


def test_card_and_face_other_face_is_denied(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock, mode="card_and_face")
    door.claim("r3", "alice", timeout_s=5)
    decisions = flat(run(door, clock, [[claimed("bob", "alice", 1.3)]] * 3))
    [decision] = decisions
    assert (decision.kind, decision.person, decision.reason) == ("denied", "bob", CLAIM_MISMATCH)
    assert decision.code is ReasonCode.CLAIM_MISMATCH
    assert decision.request_id == "r3" and not decision.unlock
    [outcome] = door.take_claim_outcomes()
    assert (outcome.request_id, outcome.identity, outcome.match) == ("r3", "alice", False)
    assert outcome.reason == CLAIM_MISMATCH and outcome.distance == 1.3
    assert outcome.code is ReasonCode.CLAIM_MISMATCH
    assert door.expired_claims(clock.now + 60) == []  # answered once only


def test_a_lookalike_identified_as_someone_else_never_counts_for_the_claim(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    # Bob's face within 1:1 threshold of alice, but 1:K says bob: fail closed.
    door = policy(people, clock, mode="card_and_face", confirm_frames=3, window=10)
    door.claim("r4", "alice", timeout_s=5)
    lookalike = FaceObservation(
        MatchResult("bob", "bob", 0.4, 0.3, "match"), one_to_one("alice", 0.8)
    )
    decisions = flat(run(door, clock, [[lookalike]] * 3))
    assert [(d.kind, d.reason) for d in decisions] == [("denied", CLAIM_MISMATCH)]
    assert [o.match for o in door.take_claim_outcomes()] == [False]


def test_an_ambiguous_lookalike_never_counts_for_the_claim(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    # Bob is nearest to his own template (0.71) but within the threshold of alice's (0.81);
    # 1:K rejects him only for lack of margin. Alice's badge must not let him in.
    door = policy(people, clock, mode="card_and_face")
    door.claim("r5", "alice", timeout_s=5)
    ambiguous = FaceObservation(
        MatchResult(None, "bob", 0.71, 0.099, "margin 0.099 < 0.1"), one_to_one("alice", 0.81)
    )
    decisions = flat(run(door, clock, [[ambiguous]] * 5))
    assert not any(d.unlock for d in decisions)
    assert door.take_claim_outcomes() == []
    [expired] = door.expired_claims(clock.now + 60)
    assert not expired.match


def test_claim_rejected_one_to_one_does_not_count(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, mode="card_and_face")
    door.claim("r5", "alice", timeout_s=5)
    unsure = FaceObservation(stranger("alice", 0.95).match, one_to_one("alice", 0.95, False))
    decisions = flat(run(door, clock, [[unsure]] * 10))
    assert not any(d.unlock for d in decisions)
    assert all(d.kind == "unknown" for d in decisions)
    assert door.take_claim_outcomes() == []


def test_claim_expires_exactly_once(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock, mode="card_and_face", verify_timeout_s=5)
    door.claim("r6", "alice", timeout_s=60)  # capped at verify_timeout_s
    unsure = FaceObservation(stranger("alice", 0.95).match, one_to_one("alice", 0.95, False))
    run(door, clock, [[unsure]] * 19, dt=0.25)  # now 4.75 s after the claim
    assert door.expired_claims() == []
    clock.advance(0.25)
    [outcome] = door.expired_claims()
    assert (outcome.request_id, outcome.identity, outcome.match) == ("r6", "alice", False)
    assert outcome.reason == "timeout" and outcome.distance == 0.95
    assert outcome.code is ReasonCode.TIMEOUT
    assert door.expired_claims() == [] and door.take_claim_outcomes() == []
    assert door.active_claim_identity() is None
    # A match after the timeout no longer unlocks.
    decisions = flat(run(door, clock, [[claimed("alice", "alice")]] * 3))
    assert [d.reason for d in decisions] == [NO_CLAIM]


def test_expiry_noticed_by_observe_is_still_reported_once(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, mode="card_and_face")
    door.claim("r7", "alice", timeout_s=1)
    clock.advance(2)
    decisions = flat(run(door, clock, [[claimed("alice", "alice")]] * 3))
    assert not any(d.unlock for d in decisions)
    assert [o.request_id for o in door.expired_claims()] == ["r7"]
    assert door.expired_claims() == []


def test_bad_timeout_falls_back_to_config(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock, verify_timeout_s=5)
    door.claim("r8", "alice", timeout_s=float("nan"))
    assert door.expired_claims(clock.now + 4.9) == []
    assert [o.request_id for o in door.expired_claims(clock.now + 5)] == ["r8"]


def test_claim_without_timeout_waits_the_configured_time(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, verify_timeout_s=12)
    door.claim("r11", "alice", timeout_s=None)  # the badge reader sent no timeout_s
    assert door.expired_claims(clock.now + 11.9) == []
    assert [o.request_id for o in door.expired_claims(clock.now + 12)] == ["r11"]


def test_a_new_claim_supersedes_the_waiting_one(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock, mode="card_and_face")
    door.claim("r9", "alice", timeout_s=5)
    run(door, clock, [[claimed("alice", "alice")]] * 2)
    door.claim("r10", "bob", timeout_s=5)
    [outcome] = door.take_claim_outcomes()
    assert (outcome.request_id, outcome.match) == ("r9", False)
    assert door.active_claim_identity() == "bob"
    # Frames before the new claim do not count for it.
    assert flat(run(door, clock, [[claimed("bob", "bob")]] * 2)) == []
    [decision] = door.observe([claimed("bob", "bob")])
    assert (decision.person, decision.request_id, decision.kind) == ("bob", "r10", "granted")


def test_face_mode_answers_claims_without_changing_unlocks(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, mode="face")
    door.claim("r11", "alice", timeout_s=5)
    decisions = flat(run(door, clock, [[claimed("alice", "alice", 0.5)]] * 3))
    assert [(d.kind, d.person, d.request_id) for d in decisions] == [("granted", "alice", None)]
    assert door.take_claim_outcomes() == [
        ClaimOutcome("r11", "alice", True, 0.5, ReasonCode.MATCH, "match")
    ]

    door.claim("r12", "alice", timeout_s=5)
    decisions = flat(run(door, clock, [[claimed("bob", "alice", 1.2)]] * 3))
    assert [(d.kind, d.person) for d in decisions] == [("granted", "bob")]
    assert [(o.request_id, o.match) for o in door.take_claim_outcomes()] == [("r12", False)]


# --- face tracks -----------------------------------------------------------------------------


def tracked(identity: str, track_id: int) -> FaceObservation:
    return dataclasses.replace(seen(identity), track_id=track_id)


def test_two_people_in_view_never_pool_their_frames(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    """Alice's face on two different tracks, 2 frames each: no track has 3 frames."""
    door = policy(people, clock)
    frames = [[tracked("alice", 1)], [tracked("alice", 2)], [tracked("alice", 1)]]
    frames += [[tracked("alice", 2)]]
    assert all(not d for d in run(door, clock, frames))
    # Untracked (as before tracks existed), the same frames pool and confirm.
    door = policy(people, clock)
    assert any(run(door, clock, [[seen("alice")]] * 3))


def test_a_track_whose_identity_changes_never_confirms(
    people: EnrollmentConfig, clock: FakeClock
) -> None:
    door = policy(people, clock, window=5, confirm_frames=3)
    flip = [[tracked("alice", 7)], [tracked("dave", 7)]] * 3
    assert all(not d for d in run(door, clock, flip))


def test_a_steady_track_confirms_once(people: EnrollmentConfig, clock: FakeClock) -> None:
    door = policy(people, clock)
    decisions = [d for frame in run(door, clock, [[tracked("alice", 3)]] * 6) for d in frame]
    assert [(d.kind, d.person) for d in decisions] == [("granted", "alice")]
