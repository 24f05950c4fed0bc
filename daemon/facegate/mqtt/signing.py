"""Unlocks as JWS (RFC 7515) and the reference verifier door controllers run.

An unlock on the wire is one JWS compact serialisation, ``HEADER.PAYLOAD.SIGNATURE``
(base64url, ASCII), and nothing else. The signature covers the exact bytes sent: a
controller checks it over the first two segments as they arrived and only then parses
the payload, so no language has to reproduce Python's JSON formatting. Algorithms:

- ``EdDSA`` (Ed25519, RFC 8037), the default: controllers hold only the public key and
  cannot forge an unlock for any door;
- ``HS256`` with a secret per door, for controllers without Ed25519: a leaked controller
  secret can forge unlocks for that door only.

Header: ``{"alg": "EdDSA"|"HS256", "kid": <RFC 7638 thumbprint, Ed25519 only>,
"typ": "facegate-unlock+jwt"}``. The explicit ``typ`` (RFC 8725 section 3.11) keeps an
unlock from being mistaken for any other token signed with a related key. Claims:
``door``, ``sub`` (person), ``jti`` (event id), ``seq``, ``iat``, ``exp`` (epoch seconds,
an int or a float with at most 3 decimals) and ``liveness`` (``{"method", "score"}``;
``{"method": "none", "score": null}`` until a liveness stage runs).

Signing and the signature check are PyJWT's; what is ours is the part no JOSE library
knows: door, freshness and replay (``exp``, ``seq``, ``jti``), and a strict reading of
untrusted bytes (``UnlockVerifier.verify`` raises nothing but ``UnlockRejected``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from jwt.api_jws import PyJWS
from jwt.exceptions import PyJWTError

from facegate.errors import FacegateError
from facegate.keys import KeyType, PrivateKey, PublicKey, load_private_key

logger = logging.getLogger(__name__)

UNLOCK_TYP: Final = "facegate-unlock+jwt"
JWS_ALG: Final = {KeyType.ED25519: "EdDSA", KeyType.HS256: "HS256"}
MAX_UNLOCK_BYTES: Final = 4096
DEFAULT_MAX_SKEW_S: Final = 2.0
DEFAULT_REPLAY_WINDOW: Final = 4096
NO_LIVENESS: Final = "none"
# Our messages are flat objects (depth 1, liveness 2); the rest is room for fields a newer
# sender may add. Far below the recursion limit that json.loads would otherwise run into.
MAX_JSON_DEPTH: Final = 4
# I-JSON (RFC 7493): integers beyond this lose precision in a JavaScript Number.
MAX_SAFE_INTEGER: Final = 2**53 - 1
_HEADER_KEYS: Final = frozenset({"alg", "typ", "kid"})
# Three base64url segments without padding: anything else is refused before decoding.
_COMPACT: Final = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_QUOTE: Final = ord('"')
_BACKSLASH: Final = ord("\\")
_OPENERS: Final = frozenset(b"[{")
_CLOSERS: Final = frozenset(b"]}")
_JWS: Final = PyJWS()


# -- signing -----------------------------------------------------------------------------


def sign_unlock(claims: Mapping[str, object], key: PrivateKey) -> str:
    """The JWS compact serialisation of `claims` (compact JSON, the exact signed bytes)."""
    payload = json.dumps(claims, separators=(",", ":"), allow_nan=False).encode()
    headers: dict[str, object] = {"typ": UNLOCK_TYP}
    public = key.public()
    if public.kid is not None:
        headers["kid"] = public.kid
    signer = key.ed25519() if key.type is KeyType.ED25519 else key.secret
    return _JWS.encode(payload, signer, algorithm=JWS_ALG[key.type], headers=headers)


def load_door_keys(sources: Mapping[str, tuple[Path, str, str]]) -> dict[str, PrivateKey]:
    """door -> signing key, from door -> (key file, config field naming it, algorithm);
    each (file, algorithm) read once; BadInputError names the file and the field."""
    loaded: dict[tuple[Path, KeyType], PrivateKey] = {}
    keys: dict[str, PrivateKey] = {}
    for door, (path, field, algorithm) in sources.items():
        cache_key = (path, KeyType(algorithm))
        if cache_key not in loaded:
            loaded[cache_key] = load_private_key(path, KeyType(algorithm), field)
        keys[door] = loaded[cache_key]
    return keys


# -- strict JSON ---------------------------------------------------------------------------


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


# -- verifying -----------------------------------------------------------------------------


class UnlockRejected(FacegateError):
    """An unlock message failed verification; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Liveness:
    """The ``liveness`` claim: how the daemon judged the face was live, and how sure."""

    method: str  # "none" until a liveness stage runs
    score: float | None  # 0..1, None when the method gives none


@dataclass(frozen=True)
class VerifiedUnlock:
    """An unlock that passed every check; act on it once."""

    door: str
    person: str  # the `sub` claim
    event_id: str  # the `jti` claim
    seq: int
    issued_at: float  # `iat`
    expires_at: float  # `exp`
    liveness: Liveness


class UnlockVerifier:
    """Reference verifier for one door: signature, door, freshness, replay by seq and jti.

    ``key``: the door's Ed25519 public key, or its HS256 secret (a ``PublicKey`` of type
    hs256, or the raw bytes). Only that key's algorithm is accepted: a token whose header
    names another is refused before any signature check (no algorithm confusion).
    Not thread-safe: a controller verifies messages one at a time.
    """

    def __init__(
        self,
        key: PublicKey | bytes,
        door: str,
        *,
        clock: Callable[[], float] = time.time,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
    ) -> None:
        self._key = key if isinstance(key, PublicKey) else PublicKey(KeyType.HS256, key)
        if self._key.type is KeyType.HS256:
            PrivateKey(KeyType.HS256, self._key.material)  # ValueError when too short
        self._alg = JWS_ALG[self._key.type]
        self._verifier = (
            self._key.ed25519() if self._key.type is KeyType.ED25519 else self._key.material
        )
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
        token = _compact(payload)
        self._check_header(token)
        claims = _claims(self._signed_payload(token))
        unlock = _fields(claims)
        if unlock.door != self._door:
            raise UnlockRejected("wrong_door", f"for {unlock.door!r}, this is {self._door!r}")
        self._check_time(unlock)
        self._check_replay(unlock)
        self._remember(unlock)
        return unlock

    def _check_header(self, token: bytes) -> None:
        header = _json(_b64decode(token.split(b".", 1)[0]), "bad_header")
        if not header.keys() <= _HEADER_KEYS:
            raise UnlockRejected("bad_header", "unexpected header parameter")
        if header.get("alg") != self._alg:
            raise UnlockRejected("bad_header", f"alg must be {self._alg}")
        if header.get("typ") != UNLOCK_TYP:
            raise UnlockRejected("bad_header", f"typ must be {UNLOCK_TYP}")

    def _signed_payload(self, token: bytes) -> bytes:
        try:
            decoded = _JWS.decode_complete(token, self._verifier, algorithms=[self._alg])
        except PyJWTError:
            raise UnlockRejected("bad_signature") from None
        payload = decoded["payload"]
        assert isinstance(payload, bytes)
        return payload

    def _check_time(self, unlock: VerifiedUnlock) -> None:
        now = self._clock()
        if unlock.expires_at <= now:
            raise UnlockRejected("expired", f"{now - unlock.expires_at:.3f} s ago")
        if unlock.issued_at > now + self._max_skew_s:
            raise UnlockRejected("future_iat", f"{unlock.issued_at - now:.3f} s ahead")
        if unlock.expires_at < unlock.issued_at:
            raise UnlockRejected("bad_field", "exp before iat")

    def _check_replay(self, unlock: VerifiedUnlock) -> None:
        if unlock.event_id in self._seen:
            raise UnlockRejected("replayed", f"jti {unlock.event_id}")
        if unlock.seq <= self._last_seq:
            raise UnlockRejected("stale_seq", f"seq {unlock.seq} <= {self._last_seq}")

    def _remember(self, unlock: VerifiedUnlock) -> None:
        # Bounded: seq monotonicity already rejects anything older than the window.
        self._seen[unlock.event_id] = None
        while len(self._seen) > self._replay_window:
            self._seen.popitem(last=False)
        self._last_seq = unlock.seq


def _compact(payload: bytes) -> bytes:
    if len(payload) > MAX_UNLOCK_BYTES:
        raise UnlockRejected("too_large", f"{len(payload)} bytes")
    if _COMPACT.fullmatch(payload) is None:
        raise UnlockRejected("malformed", "not a JWS compact serialisation")
    return payload


def _b64decode(segment: bytes) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise UnlockRejected("malformed", "bad base64url") from None


def _json(data: bytes, reason: str) -> dict[str, object]:
    try:
        return load_json_object(data)
    except JsonRejected as exc:
        raise UnlockRejected(reason, str(exc)) from None


def _claims(payload: bytes) -> dict[str, object]:
    return _json(payload, "bad_json")


def _fields(claims: Mapping[str, object]) -> VerifiedUnlock:
    for name in ("door", "sub", "jti", "seq", "iat", "exp"):
        if name not in claims:
            raise UnlockRejected("missing_field", name)
    return VerifiedUnlock(
        door=_text(claims, "door"),
        person=_text(claims, "sub"),
        event_id=_text(claims, "jti"),
        seq=_integer(claims, "seq"),
        issued_at=_number(claims, "iat"),
        expires_at=_number(claims, "exp"),
        liveness=_liveness(claims.get("liveness")),
    )


def _liveness(value: object) -> Liveness:
    if value is None:
        return Liveness(NO_LIVENESS, None)
    if not isinstance(value, dict):
        raise UnlockRejected("bad_field", "liveness must be an object or null")
    method = value.get("method")
    if not isinstance(method, str) or not method:
        raise UnlockRejected("bad_field", "liveness.method must be a non-empty string")
    score = value.get("score")
    if score is None:
        return Liveness(method, None)
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise UnlockRejected("bad_field", "liveness.score must be a number in [0, 1] or null")
    return Liveness(method, float(score))


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
