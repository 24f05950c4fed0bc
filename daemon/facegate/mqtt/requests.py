"""Incoming ``<prefix>/<door>/verify`` requests: the one parser for what controllers send.

Every payload comes from the network, so the parser is total: it returns a VerifyRequest
or None (after one log line); no input makes it raise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Final

from facegate.mqtt.bus import MAX_VERIFY_TIMEOUT_S, VerifyRequest

logger = logging.getLogger(__name__)

MAX_INCOMING_BYTES: Final = 4096
MAX_ID_CHARS: Final = 128


def parse_verify_request(
    topic_name: str, payload: bytes, prefix: str, doors: Sequence[str]
) -> VerifyRequest | None:
    """Validate an incoming ``<prefix>/<door>/verify`` message; log and return None if bad."""
    door = _door_of(topic_name, prefix)
    if door is None or door not in doors:
        logger.warning("verify request on %r ignored: unknown door", topic_name[:200])
        return None
    if len(payload) > MAX_INCOMING_BYTES:
        logger.warning("verify request for %s ignored: %d bytes", door, len(payload))
        return None
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        logger.warning("verify request for %s ignored: not JSON", door)
        return None
    error = _verify_body_error(body)
    if error is not None:
        logger.warning("verify request for %s ignored: %s", door, error)
        return None
    timeout = body.get("timeout_s")  # absent: the daemon's recognition.verify_timeout_s
    return VerifyRequest(
        door, body["request_id"], body["identity"], None if timeout is None else float(timeout)
    )


def _door_of(topic_name: str, prefix: str) -> str | None:
    head, tail = prefix + "/", "/verify"
    if not (topic_name.startswith(head) and topic_name.endswith(tail)):
        return None
    door = topic_name[len(head) : -len(tail)]
    return door if door and "/" not in door else None


def _verify_body_error(body: object) -> str | None:
    if not isinstance(body, dict):
        return "not a JSON object"
    for name in ("request_id", "identity"):
        value = body.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
            return f"{name} must be a string of 1..{MAX_ID_CHARS} characters"
    timeout = body.get("timeout_s")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        return "timeout_s must be a number"
    if not 0 < timeout <= MAX_VERIFY_TIMEOUT_S:
        return f"timeout_s must be in (0, {MAX_VERIFY_TIMEOUT_S:g}]"
    return None
