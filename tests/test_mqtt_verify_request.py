"""Parsing of incoming 1:1 claims on <prefix>/<door>/verify (pure, no broker)."""

from __future__ import annotations

import pytest

from facegate.mqtt import VerifyRequest, parse_verify_request

DOORS = ("front", "back")


def parse(payload: bytes, topic: str = "facegate/front/verify") -> VerifyRequest | None:
    return parse_verify_request(topic, payload, "facegate", DOORS)


def test_timeout_is_optional_and_left_to_the_daemon() -> None:
    assert parse(b'{"request_id": "r", "identity": "ann"}') == VerifyRequest(
        "front", "r", "ann", None
    )
    assert parse(b'{"request_id": "r", "identity": "ann", "timeout_s": 2}') == VerifyRequest(
        "front", "r", "ann", 2.0
    )


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("facegate/front/verify", b"not json"),
        ("facegate/front/verify", b"[]"),
        ("facegate/front/verify", b'{"request_id": "r"}'),
        ("facegate/front/verify", b'{"request_id": "r", "identity": 7}'),
        ("facegate/front/verify", b'{"request_id": "r", "identity": "a", "timeout_s": true}'),
        ("facegate/front/verify", b'{"request_id": "r", "identity": "a", "timeout_s": 0}'),
        ("facegate/front/verify", b'{"request_id": "r", "identity": "a", "timeout_s": 61}'),
        ("facegate/garage/verify", b'{"request_id": "r", "identity": "a"}'),
        ("facegate/front/verify", b'{"request_id": "r", "identity": "' + b"a" * 5000 + b'"}'),
    ],
)
def test_bad_claims_are_ignored(topic: str, payload: bytes) -> None:
    assert parse(payload, topic) is None
