"""Bounded verify intake and output workers: what keeps a flood or a failing output away
from the camera loop (issue 11: bounded work per loop turn, supervision)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from facegate.decisions import ClaimOutcome, Decision, ReasonCode
from facegate.mqtt import RecordingDoorBus, VerifyRequest
from facegate.mqtt.contract import event_payload
from facegate.mqtt.intake import RequestIntake
from facegate.outputs import MqttOutput, Output, OutputWorker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(n: int, door: str = "front") -> VerifyRequest:
    return VerifyRequest(door, f"r{n}", "jerry", None)


def decision(n: int, *, unlock: bool, door: str = "front") -> Decision:
    return Decision(
        kind="granted" if unlock else "unknown",
        door=door,
        person="jerry" if unlock else None,
        distance=0.5,
        margin=0.3,
        frames=3,
        code=ReasonCode.MATCH if unlock else ReasonCode.UNKNOWN_FACE,
        reason="test",
        event_id=f"e{n}",
        ts=1.0,
        unlock=unlock,
    )


# -- intake --------------------------------------------------------------------------------


def test_intake_refuses_over_the_rate_and_counts() -> None:
    clock = FakeClock()
    intake = RequestIntake(rate_per_s=5, burst=10, queue_per_door=100, clock=clock)
    accepted = sum(intake.put(request(i)) for i in range(10_000))
    assert accepted == 10  # the burst, nothing more within the same instant
    assert intake.dropped("front") == (9_990, 0)
    clock.now += 1.0
    assert sum(intake.put(request(i)) for i in range(100)) == 5  # 5 per second refill


def test_intake_drops_the_oldest_when_the_queue_is_full() -> None:
    intake = RequestIntake(rate_per_s=1000, burst=1000, queue_per_door=4, max_per_turn=100)
    for i in range(10):
        assert intake.put(request(i))
    taken = intake.take()
    assert [r.request_id for r in taken] == ["r6", "r7", "r8", "r9"]
    assert intake.dropped("front") == (0, 6)


def test_intake_take_is_bounded_per_turn_in_arrival_order() -> None:
    intake = RequestIntake(rate_per_s=1000, burst=1000, queue_per_door=100, max_per_turn=4)
    for i in range(50):
        intake.put(request(i, "front"))
    intake.put(request(99, "back"))
    turns = []
    while batch := intake.take():
        assert len(batch) <= 4
        turns.append(batch)
    flat = [r for batch in turns for r in batch]
    assert len(flat) == 51
    assert flat.index(request(99, "back")) == 50


def test_one_flooded_door_does_not_starve_another() -> None:
    clock = FakeClock()
    intake = RequestIntake(rate_per_s=5, burst=10, clock=clock)
    for i in range(1000):
        intake.put(request(i, "front"))
    assert intake.put(request(1, "back"))  # its own bucket
    assert request(1, "back") in intake.take() + intake.take() + intake.take()


def test_intake_logs_drops_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    intake = RequestIntake(rate_per_s=1, burst=1, clock=clock)
    for i in range(5000):
        intake.put(request(i))
    lines = [r for r in caplog.records if "dropped since the last report" in r.getMessage()]
    assert len(lines) == 1


# -- output workers ------------------------------------------------------------------------


class GateOutput(Output):
    """Blocks on the first decision until released; records the order of everything."""

    name = "gate"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.order: list[str] = []
        self.closed = False

    def decision(self, decision: Decision) -> None:
        self.release.wait(10)
        self.order.append(decision.event_id)

    def claim_outcome(self, door: str, outcome: ClaimOutcome) -> None:
        self.order.append(outcome.request_id)

    def close(self) -> None:
        self.closed = True


class BrokenOutput(GateOutput):
    name = "broken"

    def decision(self, decision: Decision) -> None:
        if decision.event_id == "e1":
            raise RuntimeError("disk on fire")
        self.order.append(decision.event_id)


@pytest.fixture
def gate() -> Iterator[tuple[GateOutput, OutputWorker]]:
    output = GateOutput()
    worker = OutputWorker(output)
    worker.start()
    yield output, worker
    output.release.set()
    worker.close()


def test_submit_never_blocks_the_caller(gate: tuple[GateOutput, OutputWorker]) -> None:
    output, worker = gate
    started = time.monotonic()
    for i in range(500):
        worker.submit_decision(decision(i, unlock=False))
    assert time.monotonic() - started < 1.0  # the output is blocked the whole time
    assert output.order == []


def test_unlocks_overtake_queued_events_and_results(
    gate: tuple[GateOutput, OutputWorker],
) -> None:
    output, worker = gate
    worker.submit_decision(decision(0, unlock=False))  # the worker blocks on this one
    time.sleep(0.2)
    for i in range(1, 4):
        worker.submit_claim_outcome(
            "front", ClaimOutcome(f"q{i}", "jerry", False, None, ReasonCode.TIMEOUT, "x")
        )
        worker.submit_decision(decision(i, unlock=False))
    worker.submit_decision(decision(9, unlock=True))
    output.release.set()
    worker.close()
    assert output.order == ["e0", "e9", "e1", "e2", "e3", "q1", "q2", "q3"]
    assert output.closed


def test_a_full_queue_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    output = GateOutput()
    worker = OutputWorker(output, queue_size=3)
    for i in range(5):  # not started: nothing is taken from the queue
        worker.submit_decision(decision(i, unlock=i == 4))
    assert worker.dropped == 2
    assert any("NOT sent (fail closed)" in r.getMessage() for r in caplog.records)


def test_an_output_that_raises_is_logged_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    output = BrokenOutput()
    worker = OutputWorker(output)
    worker.start()
    for i in range(3):
        worker.submit_decision(decision(i, unlock=False))
    worker.close()
    assert output.order == ["e0", "e2"]
    assert worker.failed == 1
    assert any(r.exc_info and "disk on fire" in str(r.exc_info[1]) for r in caplog.records)


def test_a_stuck_output_reports_unhealthy() -> None:
    clock = FakeClock()
    output = GateOutput()
    worker = OutputWorker(output, stuck_s=20, clock=clock)
    worker.start()
    assert worker.healthy()
    worker.submit_decision(decision(0, unlock=False))
    deadline = time.monotonic() + 5
    while worker.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    clock.now += 19
    assert worker.healthy()
    clock.now += 2
    assert not worker.healthy()
    output.release.set()
    worker.close()
    assert not worker.healthy()  # stopped: no longer alive


def test_mqtt_output_publishes_the_contract() -> None:
    bus = RecordingDoorBus()
    output = MqttOutput(bus, "pi")
    granted = decision(1, unlock=True)
    output.decision(granted)
    output.claim_outcome(
        "front", ClaimOutcome("q1", "jerry", True, 0.51234, ReasonCode.MATCH, "matched")
    )
    assert [u.claims["sub"] for u in bus.unlocks] == ["jerry"]
    assert bus.events == [("front", event_payload(granted, "pi"))]
    assert bus.events[0][1]["device"] == "pi"
    door, result = bus.results[0]
    assert (door, result["request_id"], result["match"], result["distance"]) == (
        "front",
        "q1",
        True,
        0.5123,
    )
