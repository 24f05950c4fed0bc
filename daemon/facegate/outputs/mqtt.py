"""The MQTT door bus as an output: events, signed unlocks and verify results."""

from __future__ import annotations

from facegate.decisions import ClaimOutcome, Decision, Prompt
from facegate.mqtt.bus import DoorBus
from facegate.mqtt.contract import event_payload, liveness_score, verify_result_payload
from facegate.outputs.base import Output


class MqttOutput(Output):
    """The door bus: events, signed unlocks and verify results (the MQTT contract)."""

    name = "mqtt"

    def __init__(self, bus: DoorBus, device: str) -> None:
        self._bus = bus
        self._device = device

    def decision(self, decision: Decision) -> None:
        # The unlock first: a resident is waiting at the door; the event can follow.
        if decision.unlock and decision.person is not None:
            live = decision.liveness
            # The signed `liveness` claim: how the face was judged live, and how sure.
            claim = None if live is None else {"method": live.method, "score": liveness_score(live)}
            self._bus.publish_unlock(decision.door, decision.person, decision.event_id, None, claim)
        self._bus.publish_event(decision.door, event_payload(decision, self._device))

    def prompt(self, prompt: Prompt) -> None:
        self._bus.publish_prompt(prompt.door, prompt.text, prompt.action)

    def claim_outcome(self, door: str, outcome: ClaimOutcome) -> None:
        self._bus.publish_verify_result(door, verify_result_payload(outcome))

    def close(self) -> None:
        self._bus.close()
