"""Incoming ``<prefix>/<door>/verify`` requests: the one parser for what controllers send.

Every payload comes from the network, so the parser is total: it returns a VerifyRequest
or None after one WARNING line; no input makes it raise (an exception here would end
paho's network thread, and every unlock with it).

What is accepted: one strict JSON object (``load_json_object``: UTF-8, nesting at most
``MAX_JSON_DEPTH``, no NaN/Infinity or out-of-range numbers, no duplicate keys, so two
parsers can never read two different claims from one message) with

- ``request_id`` and ``identity``: 1..``MAX_ID_CHARS`` printable characters. Unicode
  categories C* (newline, NUL, DEL, bidi overrides such as U+202E, surrogates, private
  use, unassigned) and separators other than the ASCII space are refused: the values are
  echoed into logs and results, where a newline would start a forged log line;
- ``timeout_s`` (optional): a finite number in (0, ``MAX_VERIFY_TIMEOUT_S``].

Other fields are ignored, never read or logged: a controller may send more than this
daemon knows (forward compatibility), and the request is not signed, so refusing them
would add no safety. Log lines escape everything taken from the message (``%r``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Final

from facegate.mqtt.bus import MAX_VERIFY_TIMEOUT_S, VerifyRequest
from facegate.mqtt.signing import JsonRejected, load_json_object

logger = logging.getLogger(__name__)

MAX_INCOMING_BYTES: Final = 4096
MAX_ID_CHARS: Final = 128
MAX_LOGGED_TOPIC_CHARS: Final = 200


def parse_verify_request(
    topic_name: str, payload: bytes, prefix: str, doors: Sequence[str]
) -> VerifyRequest | None:
    """Validate an incoming ``<prefix>/<door>/verify`` message; log and return None if bad."""
    door = _door_of(topic_name, prefix)
    if door is None or door not in doors:
        logger.warning(
            "verify request on %r ignored: unknown door", topic_name[:MAX_LOGGED_TOPIC_CHARS]
        )
        return None
    # From here on ``door`` equals one of the configured ids, so it is safe to log as is.
    if len(payload) > MAX_INCOMING_BYTES:
        logger.warning("verify request for %s ignored: %d bytes", door, len(payload))
        return None
    try:
        return _request(door, load_json_object(payload))
    except (JsonRejected, _Refused) as exc:
        logger.warning("verify request for %s ignored: %s", door, exc)
        return None


class _Refused(ValueError):
    """Why a request is refused; the message never echoes the input."""


def _request(door: str, body: Mapping[str, object]) -> VerifyRequest:
    return VerifyRequest(
        door, _text_id(body, "request_id"), _text_id(body, "identity"), _timeout(body)
    )


def _door_of(topic_name: str, prefix: str) -> str | None:
    head, tail = prefix + "/", "/verify"
    if not (topic_name.startswith(head) and topic_name.endswith(tail)):
        return None
    door = topic_name[len(head) : -len(tail)]
    return door if door and "/" not in door else None


def _text_id(body: Mapping[str, object], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise _Refused(f"{name} must be a string of 1..{MAX_ID_CHARS} characters")
    # isprintable() is False for categories C* and Z*, except the ASCII space.
    if not value.isprintable():
        raise _Refused(f"{name} has a control or other non-printable character")
    return value


def _timeout(body: Mapping[str, object]) -> float | None:
    timeout = body.get("timeout_s")
    if timeout is None:  # absent: the daemon's recognition.verify_timeout_s
        return None
    # bool is an int subclass; true is not a timeout. Non-finite numbers never get here.
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise _Refused("timeout_s must be a number")
    if not 0 < timeout <= MAX_VERIFY_TIMEOUT_S:
        raise _Refused(f"timeout_s must be in (0, {MAX_VERIFY_TIMEOUT_S:g}]")
    return float(timeout)
