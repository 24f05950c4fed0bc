"""The MQTT contract is defined once (facegate.mqtt.contract): the README is generated from
it and every payload the daemon builds has exactly its fields (issue 12, item 4)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from facegate.config.mqtt import MqttConfig
from facegate.decisions import ClaimOutcome, Decision, ReasonCode
from facegate.keys import KeyType, PrivateKey
from facegate.mqtt import MqttPublisher, build_unlock, parse_verify_request
from facegate.mqtt.contract import (
    EVENT,
    PROMPT,
    STATUS,
    UNLOCK,
    VERIFY,
    VERIFY_RESULT,
    event_payload,
    prompt_payload,
    render_markdown,
    verify_result_payload,
)
from scenes import write_key

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_contract_is_generated_from_the_schema() -> None:
    text = README.read_text()
    start = text.index("<!-- contract:start -->\n") + len("<!-- contract:start -->\n")
    end = text.index("\n<!-- contract:end -->")
    assert text[start:end] == render_markdown(), (
        "README's MQTT contract is stale; paste facegate.mqtt.contract.render_markdown()"
    )


@pytest.mark.parametrize("request_id", [None, "r1"])
@pytest.mark.parametrize("code", list(ReasonCode))
def test_event_payload_has_the_contract_fields(code: ReasonCode, request_id: str | None) -> None:
    decision = Decision(
        "denied", "front", "alice", 0.5, 0.2, 3, code, "text", "e1", 1.5, False, request_id
    )
    event = event_payload(decision, "pi")
    assert EVENT.required <= event.keys() <= EVENT.names
    assert event["code"] == str(code)
    json.dumps(event, allow_nan=False)


@pytest.mark.parametrize("key_type", list(KeyType))
def test_unlock_payload_has_exactly_the_contract_fields(key_type: KeyType) -> None:
    key = PrivateKey.generate(key_type)
    unlock = build_unlock(key, "front", "alice", "e1", 7, 1796022114.0, 5.0)
    header, payload, _ = unlock.token.split(".")
    assert json.loads(b64url(header)) == {
        "alg": "EdDSA" if key_type is KeyType.ED25519 else "HS256",
        "typ": "facegate-unlock+jwt",
        **({"kid": key.public().kid} if key_type is KeyType.ED25519 else {}),
    }
    claims = json.loads(b64url(payload))
    assert claims == unlock.claims
    assert claims.keys() == UNLOCK.names
    assert claims["liveness"] == {"method": "none", "score": None}


def b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_verify_result_payload_has_exactly_the_contract_fields() -> None:
    outcome = ClaimOutcome("r1", "alice", False, None, ReasonCode.TIMEOUT, "timeout")
    result = verify_result_payload(outcome, now=1.0)
    assert result.keys() == VERIFY_RESULT.names
    assert result["code"] == "timeout"


def test_status_payloads_have_the_contract_fields(tmp_path: Path) -> None:
    config = MqttConfig(signing_key_file=write_key(tmp_path / "k.key"))
    publisher = MqttPublisher(config, device="pi", doors=["front"], journal_dir=tmp_path / "j")
    for payload in (publisher._online_payload("front"), publisher._will("front")[1]):
        status = json.loads(payload)
        assert STATUS.required <= status.keys() <= STATUS.names


def test_verify_requests_need_the_required_fields_only() -> None:
    full = {"request_id": "r1", "identity": "alice", "timeout_s": 3}
    assert full.keys() == VERIFY.names
    for name in VERIFY.names:
        body = {k: v for k, v in full.items() if k != name}
        parsed = parse_verify_request(
            "facegate/front/verify", json.dumps(body).encode(), "facegate", ["front"]
        )
        assert (parsed is None) == (name in VERIFY.required), name


def test_prompt_payload_has_exactly_the_contract_fields() -> None:
    for prompt in ("turn your head left", None):
        assert prompt_payload("front", prompt, now=1.0).keys() == PROMPT.required
    challenge = prompt_payload("front", "turn your head to your left", 1.0, "turn_left")
    assert challenge.keys() == PROMPT.names
