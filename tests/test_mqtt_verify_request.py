"""Parsing of incoming 1:1 claims on <prefix>/<door>/verify (pure, no broker)."""

from __future__ import annotations

import json

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


def test_extra_fields_are_ignored() -> None:
    payload = b'{"request_id": "r", "identity": "ann", "badge": {"reader": [2]}, "v": 2}'
    assert parse(payload) == VerifyRequest("front", "r", "ann", None)


@pytest.mark.parametrize(
    ("identity", "timeout"),
    [("Zoë Müller", 60), ("o'brien", 0.001), ("a" * 128, 59.999)],
)
def test_printable_text_and_timeouts_in_range_are_accepted(identity: str, timeout: float) -> None:
    body = {"request_id": "r", "identity": identity, "timeout_s": timeout}
    payload = json.dumps(body, ensure_ascii=False)
    assert parse(payload.encode()) == VerifyRequest("front", "r", identity, float(timeout))


REQUEST = b'{"request_id": "r", "identity": "ann"'


# Issue 11 findings 1 and 9: each of these raised (and killed paho's network thread) or
# was accepted although no controller can mean it.
@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 1000 + b"]" * 1000,
        b"[" * 4096,
        b'{"a":' * 600 + b"1" + b"}" * 600,
        REQUEST + b', "x": [[[[[1]]]]]}',
        REQUEST + b', "timeout_s": NaN}',
        REQUEST + b', "timeout_s": Infinity}',
        REQUEST + b', "timeout_s": -Infinity}',
        REQUEST + b', "timeout_s": 1e999}',
        REQUEST + b', "timeout_s": -0.0}',
        REQUEST + b', "timeout_s": 60.001}',
        REQUEST + b', "timeout_s": 1' + b"0" * 400 + b"}",
        REQUEST + b', "x": NaN}',
        REQUEST + b', "x": 1e999}',
        REQUEST + b', "identity": "mallory"}',  # duplicate key
        REQUEST.replace(b"ann", b"\xe9") + b"}",  # Latin-1, not UTF-8
        (REQUEST + b"}").decode().encode("utf-16"),
        b"\xef\xbb\xbf" + REQUEST + b"}",  # UTF-8 BOM
        b"null",
        b'"text"',
        b"1e999",
    ],
)
def test_poison_payloads_are_ignored(payload: bytes) -> None:
    assert parse(payload) is None


@pytest.mark.parametrize(
    "text",
    [
        "ann\n2026-01-01 INFO decision door=front person=ann kind=granted",
        "ann\r",
        "a\x00b",
        "a\x7fb",
        "a\x1bb",  # ESC: terminal escape sequences
        "a\u202eb",  # right-to-left override
        "a\u200bb",  # zero-width space (category Cf)
        "a\u2028b",  # line separator
        "a\u00a0b",  # no-break space
        "a\ud800b",  # lone surrogate (only possible through a \\u escape)
        "a\ue000b",  # private use
        "",
    ],
)
@pytest.mark.parametrize("field", ["identity", "request_id"])
def test_non_printable_ids_are_refused(field: str, text: str) -> None:
    body = {"request_id": "r", "identity": "ann", field: text}
    assert parse(json.dumps(body).encode()) is None


def test_each_refusal_is_one_escaped_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    forged = "ann\nINFO decision door=front person=ann kind=granted"
    cases = [
        ("facegate/front/verify", json.dumps({"request_id": "r", "identity": forged})),
        ("facegate/front/verify", json.dumps({"request_id": forged, "identity": "ann"})),
        ("facegate/front/verify", "[" * 1000 + "]" * 1000),
        (f"facegate/{forged}/verify", json.dumps({"request_id": "r", "identity": "ann"})),
    ]
    for topic, payload in cases:
        caplog.clear()
        assert parse(payload.encode(), topic) is None
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        message = caplog.records[0].getMessage()
        assert "ignored" in message and "\n" not in message
    # The payload is never echoed; the topic is, escaped: its newline stays a backslash-n.
    assert "decision door=front person=ann kind=granted" in message
    assert repr(topic) in message
