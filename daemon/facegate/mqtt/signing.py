"""Unlock signing (HMAC-SHA256 over canonical JSON) and the reference verifier for controllers.

Canonical form: the payload without ``sig``, ``json.dumps(sort_keys=True,
separators=(",", ":"))`` with Python's default ASCII escaping, UTF-8 encoded. A
controller in another language must reproduce exactly these bytes, so payloads only
hold strings, integers and floats with at most millisecond precision.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from facegate.errors import BadInputError, FacegateError

logger = logging.getLogger(__name__)

SIG_FIELD: Final = "sig"
MIN_KEY_BYTES: Final = 16
MAX_UNLOCK_BYTES: Final = 4096
DEFAULT_MAX_SKEW_S: Final = 2.0
DEFAULT_REPLAY_WINDOW: Final = 4096


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
    if not isinstance(sig, str):
        return False
    return hmac.compare_digest(sign(payload, key), sig)


def load_signing_key(path: Path, field: str = "mqtt.signing_key_file") -> bytes:
    """Read a hex key file; BadInputError naming the file and config field if unusable."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise BadInputError(path, "signing key file not found", field=field) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(path, f"cannot read signing key: {exc}", field=field) from None
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
        message = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise UnlockRejected("bad_json") from None
    if not isinstance(message, dict):
        raise UnlockRejected("bad_json", "not an object")
    return message


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
