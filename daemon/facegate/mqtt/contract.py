"""The MQTT contract with door controllers: topics, their payload fields, and the builders.

This module is the one definition: the event and verify-result payloads are built here,
the unlock's fields are checked against it, and the README's contract section is generated
from `render_markdown()` (a test keeps them equal). Change a payload here, nowhere else.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Final

from facegate.decisions import ClaimOutcome, Decision, Liveness, ReasonCode


@dataclass(frozen=True)
class PayloadField:
    name: str
    type: str
    meaning: str
    optional: bool = False


@dataclass(frozen=True)
class TopicSpec:
    suffix: str  # after <prefix>/<door>/
    direction: str  # "out" (facegate publishes) or "in" (facegate subscribes)
    delivery: str
    summary: str
    fields: tuple[PayloadField, ...]
    payload: str = "JSON object"  # what the message body is; `fields` are its members

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    @property
    def required(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if not f.optional)


_CODES: Final = " \\| ".join(f"`{code}`" for code in ReasonCode)

STATUS: Final = TopicSpec(
    "status",
    "out",
    "QoS 1, retained, will `offline`",
    "the door's availability",
    (
        PayloadField("state", "string", "`online` or `offline`"),
        PayloadField("device", "string", "the facegate unit (config `device`)"),
        PayloadField("door", "string", "the door id"),
        PayloadField("ts", "number", "epoch seconds", optional=True),
        PayloadField("reason", "string", "why offline: `shutdown`, `connection lost`", True),
    ),
)
EVENT: Final = TopicSpec(
    "event",
    "out",
    "QoS 1, journaled until acknowledged",
    "every decision",
    (
        PayloadField("event_id", "string", "unique id (the unlock carries the same)"),
        PayloadField("device", "string", "the facegate unit"),
        PayloadField("door", "string", "the door id"),
        PayloadField("decision", "string", "`granted`, `denied` or `unknown`"),
        PayloadField("person", "string or null", "who (null for `unknown`)"),
        PayloadField("distance", "number", "L2 distance to the person's template (0..2)"),
        PayloadField("margin", "number", "distance of the second-best person minus this one"),
        PayloadField("frames", "integer", "frames that agreed"),
        PayloadField("code", "string", f"machine-readable reason: {_CODES}"),
        PayloadField("reason", "string", "human-readable reason (wording may change)"),
        PayloadField("ts", "number", "epoch seconds"),
        PayloadField("request_id", "string", "the verify request it answers", optional=True),
        PayloadField(
            "liveness",
            "object",
            "how the face was judged live: `method` (`off`, `passive` or `challenge`),"
            " `verdict` (`live`, `attack`, `undecided` or `off`), `score` (0..1, 0.5 and"
            " above: live; null when off), `evidence` (named numbers), `action` (the"
            " challenge prompted, or null)",
            optional=True,
        ),
    ),
)
UNLOCK: Final = TopicSpec(
    "unlock",
    "out",
    "QoS 1, never retained, MQTT v5 message expiry, content type `application/jose`",
    "open the door now; accept only if the JWS signature holds, `exp` is ahead, `jti` is"
    " unseen and `seq` is new",
    (
        PayloadField("door", "string", "the door id: refuse an unlock for another door"),
        PayloadField("sub", "string", "the person let in"),
        PayloadField("jti", "string", "the event id of this decision (unique)"),
        PayloadField("seq", "integer", "increases with every unlock of this device"),
        PayloadField("iat", "number", "issued, epoch seconds (integer or 3 decimals)"),
        PayloadField("exp", "number", "refuse from this moment on, epoch seconds"),
        PayloadField(
            "liveness",
            "object or null",
            '`{"method": string, "score": number 0..1 or null}`: how the face was judged'
            " live, method `passive` or `challenge` (score 0.5 and above), `off` when the door"
            " checks no liveness (`none` from a daemon without it)",
            optional=True,
        ),
    ),
    payload="JWS compact serialisation, RFC 7515: `alg` EdDSA (Ed25519) or HS256, `typ`"
    " `facegate-unlock+jwt`; these are its claims",
)
VERIFY: Final = TopicSpec(
    "verify",
    "in",
    "QoS 1; retained requests are ignored",
    "a badge or keypad claims an identity (1:1)",
    (
        PayloadField("request_id", "string", "1..128 printable characters, echoed back"),
        PayloadField("identity", "string", "the claimed person id, 1..128 printable characters"),
        PayloadField("timeout_s", "number", "how long to wait for the face", optional=True),
    ),
)
VERIFY_RESULT: Final = TopicSpec(
    "verify/result",
    "out",
    "QoS 1",
    "the answer to one verify request",
    (
        PayloadField("request_id", "string", "the request answered"),
        PayloadField("identity", "string", "the claimed identity"),
        PayloadField("match", "boolean", "the face matched the claim"),
        PayloadField("distance", "number or null", "best L2 distance seen, if any"),
        PayloadField("code", "string", "`match`, `timeout`, `superseded` or `claim_mismatch`"),
        PayloadField("reason", "string", "human-readable reason"),
        PayloadField("ts", "number", "epoch seconds"),
    ),
)
PROMPT: Final = TopicSpec(
    "prompt",
    "out",
    "QoS 1, retained",
    "what the person at the door is asked to do now (liveness, walk-up enrollment); Home"
    " Assistant shows it",
    (
        PayloadField("prompt", "string or null", "the instruction, e.g. `turn your head left`;"
                     " null when nothing is asked"),
        PayloadField("door", "string", "the door id"),
        PayloadField("ts", "number", "epoch seconds"),
        PayloadField("action", "string", "a liveness challenge, machine-readable: `turn_left`,"
                     " `turn_right` (the subject's own left and right) or `blink`", True),
    ),
)  # fmt: skip
TOPICS: Final = (STATUS, EVENT, UNLOCK, VERIFY, VERIFY_RESULT, PROMPT)


def event_payload(decision: Decision, device: str) -> dict[str, object]:
    """The `<prefix>/<door>/event` payload of a decision."""
    event: dict[str, object] = {
        "event_id": decision.event_id,
        "device": device,
        "door": decision.door,
        "decision": decision.kind,
        "person": decision.person,
        "distance": round(decision.distance, 4),
        "margin": round(decision.margin, 4),
        "frames": decision.frames,
        "code": str(decision.code),
        "reason": decision.reason,
        "ts": decision.ts,
    }
    if decision.request_id is not None:
        event["request_id"] = decision.request_id
    if decision.liveness is not None:
        event["liveness"] = liveness_payload(decision.liveness)
    return event


def liveness_payload(liveness: Liveness) -> dict[str, object]:
    """The event's `liveness` object (the unlock's claim is its method and score)."""
    return {
        "method": liveness.method,
        "verdict": liveness.verdict,
        "score": liveness_score(liveness),
        "evidence": {name: _finite(value) for name, value in liveness.evidence},
        "action": liveness.action,
    }


def liveness_score(liveness: Liveness) -> float | None:
    """The score in [0, 1] with 3 decimals, None when there is none (off, or NaN)."""
    score = liveness.score
    if score is None or not math.isfinite(score):
        return None
    return round(min(1.0, max(0.0, score)), 3)


def _finite(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def verify_result_payload(outcome: ClaimOutcome, now: float | None = None) -> dict[str, object]:
    """The `<prefix>/<door>/verify/result` payload of a claim outcome."""
    return {
        "request_id": outcome.request_id,
        "identity": outcome.identity,
        "match": outcome.match,
        "distance": None if outcome.distance is None else round(outcome.distance, 4),
        "code": str(outcome.code),
        "reason": outcome.reason,
        "ts": time.time() if now is None else now,
    }


def prompt_payload(
    door: str, prompt: str | None, now: float | None = None, action: str | None = None
) -> dict[str, object]:
    """The retained `<prefix>/<door>/prompt` payload (DoorBus.publish_prompt: the liveness
    stage and walk-up enrollment publish it); `action` only for a liveness challenge."""
    payload: dict[str, object] = {
        "prompt": prompt,
        "door": door,
        "ts": time.time() if now is None else now,
    }
    if action is not None:
        payload["action"] = action
    return payload


def render_markdown(prefix: str = "facegate") -> str:
    """The README's contract section: one table of topics, one of fields per topic."""
    lines = [
        "| topic | dir | delivery | what |",
        "|---|---|---|---|",
        *(
            f"| `{prefix}/<door>/{t.suffix}` | {t.direction} | {t.delivery} | {t.summary} |"
            for t in TOPICS
        ),
    ]
    for spec in TOPICS:
        lines += ["", f"`{spec.suffix}` payload ({spec.payload}):", ""]
        lines += ["| field | type | meaning |", "|---|---|---|"]
        lines += [
            f"| `{f.name}` | {f.type}{' (optional)' if f.optional else ''} | {f.meaning} |"
            for f in spec.fields
        ]
    return "\n".join(lines)
