"""Unlock signing (HMAC-SHA256 over canonical JSON) and the reference verifier for controllers.

Canonical form: the payload without ``sig``, ``json.dumps(sort_keys=True,
separators=(",", ":"))`` with Python's default ASCII escaping, UTF-8 encoded. A
controller in another language must reproduce exactly these bytes (JavaScript:
``JSON.parse``, sort the keys, ``JSON.stringify``), so a signed payload only holds values
that both languages write the same way:

- strings that are ASCII ids (door and person slugs, hex event ids), so Python's ``\\u``
  escaping never applies;
- ``seq``: an integer in [0, 2**53), exact in a JavaScript Number;
- ``ts`` and ``expires_at``: epoch seconds (magnitude ~1e9), an int when the value is
  integral, else a float with at most 3 decimals. For these Python's ``repr`` and
  JavaScript's ``Number#toString`` agree (both write the shortest round-trip digits, in
  plain notation from 1e-4 to 1e16). They differ for integral floats (``1796022114.0``
  vs ``1796022114``), which are therefore never emitted, and in exponent notation
  (``1e-07`` vs ``1e-7``), which no such number needs.

The trust-and-fleet issue replaces this re-serialisation with a signed byte string.

Every message the verifier reads is untrusted: ``load_json_object`` parses it strictly
and ``UnlockVerifier.verify`` raises nothing but ``UnlockRejected``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from facegate.errors import BadInputError, FacegateError
from facegate.files import KIB, read_regular_text

logger = logging.getLogger(__name__)

SIG_FIELD: Final = "sig"
MIN_KEY_BYTES: Final = 16
MAX_UNLOCK_BYTES: Final = 4096
DEFAULT_MAX_SKEW_S: Final = 2.0
DEFAULT_REPLAY_WINDOW: Final = 4096
# Our messages are flat objects (depth 1); the rest is room for fields a newer sender may
# add. Far below the recursion limit that json.loads would otherwise run into.
MAX_JSON_DEPTH: Final = 4
# I-JSON (RFC 7493): integers beyond this lose precision in a JavaScript Number.
MAX_SAFE_INTEGER: Final = 2**53 - 1
_SIG_PATTERN: Final = re.compile(r"[0-9a-f]{64}")
_QUOTE: Final = ord('"')
_BACKSLASH: Final = ord("\\")
_OPENERS: Final = frozenset(b"[{")
_CLOSERS: Final = frozenset(b"]}")


def canonical_json(payload: Mapping[str, object]) -> bytes:
    """The exact bytes that are signed: payload minus ``sig``, sorted keys, no spaces."""
    body = {key: value for key, value in payload.items() if key != SIG_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sign(payload: Mapping[str, object], key: bytes) -> str:
    """Hex HMAC-SHA256 of the canonical JSON of ``payload``."""
    return hmac.new(key, canonical_json(payload), hashlib.sha256).hexdigest()


def signature_valid(payload: Mapping[str, object], key: bytes) -> bool:
    """True when ``payload["sig"]`` matches; constant-time comparison."""
    sig = payload.get(SIG_FIELD)
    # compare_digest raises TypeError on non-ASCII str: check the shape first.
    if not isinstance(sig, str) or _SIG_PATTERN.fullmatch(sig) is None:
        return False
    return hmac.compare_digest(sign(payload, key).encode(), sig.encode())


class JsonRejected(ValueError):
    """Bytes that are not one strict, shallow JSON object; the message never echoes input."""


def load_json_object(payload: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, object]:
    """Parse untrusted bytes as one JSON object; JsonRejected is the only exception.

    Strict: UTF-8; at most ``max_depth`` nested arrays/objects, checked before json runs
    (deep nesting would hit its recursion limit); no NaN/Infinity; numbers a double holds
    (no 1e999, no integer beyond 2**53); no duplicate keys (parsers disagree on which one
    wins). Callers bound the size first: the work here is linear in it.
    """
    if _nested_deeper_than(payload, max_depth):
        raise JsonRejected(f"nested deeper than {max_depth}")
    try:
        value = json.loads(
            payload.decode("utf-8"),
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_safe_int,
            object_pairs_hook=_unique_keys,
        )
    except JsonRejected:
        raise
    except UnicodeDecodeError:
        raise JsonRejected("not UTF-8") from None
    except (ValueError, RecursionError):  # RecursionError: a second line of defence
        raise JsonRejected("not JSON") from None
    if not isinstance(value, dict):
        raise JsonRejected("not a JSON object")
    return value


def _nested_deeper_than(payload: bytes, limit: int) -> bool:
    """True if brackets outside strings nest deeper than ``limit`` (or the JSON is bad).

    A byte scan: in UTF-8 the bytes of quotes, backslashes and brackets never occur inside
    a multi-byte character. It can only over-count on malformed JSON, which is refused
    anyway. (A regular expression for strings goes quadratic on runs of escaped quotes.)
    """
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False  # the usual case, decided in C
    depth = 0
    in_string = escaped = False
    for byte in payload:
        if escaped:
            escaped = False
        elif in_string:
            escaped = byte == _BACKSLASH
            in_string = byte != _QUOTE
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSERS:
            depth -= 1
    return False


def _refuse_constant(name: str) -> object:
    raise JsonRejected(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRejected("number out of range")
    return value


def _safe_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise JsonRejected("number out of range")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    body = dict(pairs)
    if len(body) != len(pairs):
        raise JsonRejected("duplicate key")
    return body


def load_signing_key(path: Path, field: str = "mqtt.signing_key_file") -> bytes:
    """Read a hex key file; BadInputError naming the file and config field if unusable."""
    # A regular file of at most 4 KiB (a key is 64 hex digits): a FIFO or /dev/zero is refused.
    what = "signing key file"
    text = read_regular_text(path, 4 * KIB, field=field, what=what, encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        # Never echo the file content: it is (almost) a secret.
        raise BadInputError(path, "signing key is not hex", field=field) from None
    if len(key) < MIN_KEY_BYTES:
        raise BadInputError(
            path, f"signing key has {len(key)} bytes, need at least {MIN_KEY_BYTES}", field=field
        )
    _warn_if_readable_by_others(path)
    return key


def load_door_keys(sources: Mapping[str, tuple[Path, str]]) -> dict[str, bytes]:
    """door -> key, from door -> (key file, config field naming it); each file read once."""
    loaded: dict[Path, bytes] = {}
    keys: dict[str, bytes] = {}
    for door, (path, field) in sources.items():
        if path not in loaded:
            loaded[path] = load_signing_key(path, field)
        keys[door] = loaded[path]
    return keys


def _warn_if_readable_by_others(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        logger.warning("signing key %s has mode %o; chmod 600 it", path, mode)


class UnlockRejected(FacegateError):
    """An unlock message failed verification; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class VerifiedUnlock:
    """An unlock that passed every check; act on it once."""

    door: str
    person: str
    event_id: str
    seq: int
    ts: float
    expires_at: float


class UnlockVerifier:
    """Reference verifier for one door: signature, door, freshness, replay by seq and event_id.

    Not thread-safe: a controller verifies messages one at a time.
    """

    def __init__(
        self,
        key: bytes,
        door: str,
        *,
        clock: Callable[[], float] = time.time,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
    ) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"key must have at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self._door = door
        self._clock = clock
        self._max_skew_s = max_skew_s
        self._replay_window = replay_window
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._last_seq = -1

    @property
    def last_seq(self) -> int:
        """Highest accepted seq, -1 before the first accepted unlock."""
        return self._last_seq

    def verify(self, payload: bytes) -> VerifiedUnlock:
        """Return the unlock if it may open the door now, else raise UnlockRejected."""
        message = _parse(payload)
        unlock = _fields(message)
        _check_sig_shape(message)
        if not signature_valid(message, self._key):
            raise UnlockRejected("bad_signature")
        if unlock.door != self._door:
            raise UnlockRejected("wrong_door", f"for {unlock.door!r}, this is {self._door!r}")
        self._check_time(unlock)
        self._check_replay(unlock)
        self._remember(unlock)
        return unlock

    def _check_time(self, unlock: VerifiedUnlock) -> None:
        now = self._clock()
        if unlock.expires_at <= now:
            raise UnlockRejected("expired", f"{now - unlock.expires_at:.3f} s ago")
        if unlock.ts > now + self._max_skew_s:
            raise UnlockRejected("future_ts", f"{unlock.ts - now:.3f} s ahead")
        if unlock.expires_at < unlock.ts:
            raise UnlockRejected("bad_field", "expires_at before ts")

    def _check_replay(self, unlock: VerifiedUnlock) -> None:
        if unlock.event_id in self._seen:
            raise UnlockRejected("replayed", f"event_id {unlock.event_id}")
        if unlock.seq <= self._last_seq:
            raise UnlockRejected("stale_seq", f"seq {unlock.seq} <= {self._last_seq}")

    def _remember(self, unlock: VerifiedUnlock) -> None:
        # Bounded: seq monotonicity already rejects anything older than the window.
        self._seen[unlock.event_id] = None
        while len(self._seen) > self._replay_window:
            self._seen.popitem(last=False)
        self._last_seq = unlock.seq


def _parse(payload: bytes) -> dict[str, object]:
    if len(payload) > MAX_UNLOCK_BYTES:
        raise UnlockRejected("too_large", f"{len(payload)} bytes")
    try:
        return load_json_object(payload)
    except JsonRejected as exc:
        raise UnlockRejected("bad_json", str(exc)) from None


def _fields(message: Mapping[str, object]) -> VerifiedUnlock:
    for name in ("door", "person", "event_id", "seq", "ts", "expires_at", SIG_FIELD):
        if name not in message:
            raise UnlockRejected("missing_field", name)
    return VerifiedUnlock(
        door=_text(message, "door"),
        person=_text(message, "person"),
        event_id=_text(message, "event_id"),
        seq=_integer(message, "seq"),
        ts=_number(message, "ts"),
        expires_at=_number(message, "expires_at"),
    )


def _check_sig_shape(message: Mapping[str, object]) -> None:
    sig = message[SIG_FIELD]
    if not isinstance(sig, str) or _SIG_PATTERN.fullmatch(sig) is None:
        raise UnlockRejected("bad_field", "sig must be 64 lowercase hex characters")


def _text(message: Mapping[str, object], name: str) -> str:
    value = message[name]
    if not isinstance(value, str) or not value:
        raise UnlockRejected("bad_field", f"{name} must be a non-empty string")
    return value


def _integer(message: Mapping[str, object], name: str) -> int:
    value = message[name]
    # bool is an int subclass; true/false is never a sequence number.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnlockRejected("bad_field", f"{name} must be a non-negative integer")
    return value


def _number(message: Mapping[str, object], name: str) -> float:
    value = message[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UnlockRejected("bad_field", f"{name} must be a finite number")
    return float(value)
