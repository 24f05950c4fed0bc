"""The door bus seam: what the service needs from MQTT, plus an in-memory fake for tests."""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from facegate.keys import KeyType, PrivateKey
from facegate.mqtt.signing import NO_LIVENESS, sign_unlock

MAX_VERIFY_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True)
class SignedUnlock:
    """An unlock as published: ``token`` is the MQTT payload (JWS compact), ``claims`` what
    it says (door, sub, jti, seq, iat, exp, liveness)."""

    token: str
    claims: Mapping[str, object]

    @property
    def expires_at(self) -> float:
        exp = self.claims["exp"]
        assert isinstance(exp, int | float)
        return float(exp)


@dataclass(frozen=True)
class VerifyRequest:
    """A 1:1 claim from a badge or keypad: check the next frames against ``identity``."""

    door: str
    request_id: str
    identity: str
    timeout_s: float | None  # None: the daemon's recognition.verify_timeout_s


VerifyHandler = Callable[[VerifyRequest], object]  # the return value is ignored


class DoorBus(ABC):
    """Publish decisions and unlocks to door controllers; receive 1:1 verify claims.

    Methods are synchronous and thread-safe; the verify handler runs on the bus's own
    thread and must return quickly (hand the request over, do not process it there).
    """

    def start(self) -> None:  # noqa: B027 - optional hook, a no-op for fakes
        """Begin connecting; returns at once (connection happens in the background)."""

    @abstractmethod
    def set_verify_handler(self, handler: VerifyHandler | None) -> None:
        """Route incoming, validated verify requests to ``handler``."""

    @abstractmethod
    def publish_event(self, door: str, event: Mapping[str, object]) -> None:
        """Publish a decision on ``<prefix>/<door>/event``; never lost across outages."""

    @abstractmethod
    def publish_unlock(
        self,
        door: str,
        person: str,
        event_id: str,
        ttl_s: float | None = None,
        liveness: Mapping[str, object] | None = None,
    ) -> SignedUnlock | None:
        """Sign and publish an expiring unlock; return it as sent. `liveness` is its
        `{"method", "score"}` claim (None: `{"method": "none", "score": null}`).

        Returns None when the unlock could not be journaled and so was not sent.
        """

    @abstractmethod
    def publish_verify_result(self, door: str, result: Mapping[str, object]) -> None:
        """Answer a verify request on ``<prefix>/<door>/verify/result``."""

    @abstractmethod
    def close(self, timeout_s: float = 5.0) -> None:
        """Announce offline, wait (bounded) for pending acks, disconnect."""

    def publish_prompt(  # noqa: B027 - optional
        self, door: str, prompt: str | None, action: str | None = None
    ) -> None:
        """Tell the person at the door what to do now (retained on ``<prefix>/<door>/prompt``,
        contract.PROMPT); None clears it; `action` names a liveness challenge for machines.
        Not journaled: a prompt is only for now."""

    def supervise(self) -> None:  # noqa: B027 - optional hook, a no-op for fakes
        """Restart a background part that died; called from the service's watchdog tick."""

    def down_for(self) -> float:
        """Seconds the link to the controllers has been down; 0 while up."""
        return 0.0


def new_event_id() -> str:
    """A fresh, globally unique event id."""
    return uuid.uuid4().hex


@dataclass
class RecordingDoorBus(DoorBus):
    """In-memory DoorBus for service tests: records everything, signs like the real one."""

    key: PrivateKey = field(default_factory=lambda: PrivateKey(KeyType.HS256, b"0" * 32))
    clock: Callable[[], float] = time.time
    default_ttl_s: float = 5.0
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    unlocks: list[SignedUnlock] = field(default_factory=list)
    results: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    prompts: list[tuple[str, str | None]] = field(default_factory=list)
    prompt_actions: list[tuple[str, str | None]] = field(default_factory=list)
    closed: bool = False
    handler: VerifyHandler | None = None
    _seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_verify_handler(self, handler: VerifyHandler | None) -> None:
        self.handler = handler

    def publish_event(self, door: str, event: Mapping[str, object]) -> None:
        with self._lock:
            self.events.append((door, dict(event)))

    def publish_unlock(
        self,
        door: str,
        person: str,
        event_id: str,
        ttl_s: float | None = None,
        liveness: Mapping[str, object] | None = None,
    ) -> SignedUnlock | None:
        with self._lock:
            self._seq += 1
            unlock = build_unlock(
                self.key,
                door,
                person,
                event_id,
                self._seq,
                self.clock(),
                ttl_s or self.default_ttl_s,
                liveness,
            )
            self.unlocks.append(unlock)
            return unlock

    def publish_verify_result(self, door: str, result: Mapping[str, object]) -> None:
        with self._lock:
            self.results.append((door, dict(result)))

    def publish_prompt(self, door: str, prompt: str | None, action: str | None = None) -> None:
        with self._lock:
            self.prompts.append((door, prompt))
            self.prompt_actions.append((door, action))

    def close(self, timeout_s: float = 5.0) -> None:
        self.closed = True

    def inject_verify(self, request: VerifyRequest) -> None:
        """Simulate a verify request arriving from a controller."""
        if self.handler is not None:
            self.handler(request)


def build_unlock(
    key: PrivateKey,
    door: str,
    person: str,
    event_id: str,
    seq: int,
    now: float,
    ttl_s: float,
    liveness: Mapping[str, object] | None = None,
) -> SignedUnlock:
    """The signed unlock of the MQTT contract (claims: see facegate.mqtt.signing)."""
    iat = _seconds(now)
    claims: dict[str, object] = {
        "door": door,
        "sub": person,
        "jti": event_id,
        "seq": seq,
        "iat": iat,
        "exp": _seconds(iat + ttl_s),
        # The liveness stage fills in its method and score ("none"/null without one).
        "liveness": dict(liveness) if liveness else {"method": NO_LIVENESS, "score": None},
    }
    return SignedUnlock(sign_unlock(claims, key), claims)


def _seconds(seconds: float) -> int | float:
    """Epoch seconds with millisecond precision, an int when integral (short, and what a
    JWT library expects of a NumericDate)."""
    rounded = round(float(seconds), 3)  # float(): int.is_integer() needs Python 3.12
    return int(rounded) if rounded.is_integer() else rounded
