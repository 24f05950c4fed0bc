"""Property-based fuzzing of the two MQTT parsers that read untrusted network bytes.

``parse_verify_request`` may only return None (after one printable WARNING line) or a
valid VerifyRequest; ``UnlockVerifier.verify`` (a JWS) may only raise UnlockRejected, and
whatever it accepts has exactly the signed bytes and claims of a genuine unlock.

Issue 11 asks for at least 10,000 generated inputs per parser per run; each test counts
the inputs it checked and asserts the count. Hypothesis' cost per drawn input (1-4 ms)
dwarfs the parsers' (~30 us): each hypothesis example draws a few inputs and a seed, and a
seeded generator makes the rest of its batch (tests/fuzzing.py). Derandomized: CI runs the
same inputs every time, and a failure is reproduced by running the file again.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from hypothesis import strategies as st
from jwt.api_jws import PyJWS

from facegate.keys import KeyType, PrivateKey
from facegate.mqtt import (
    UnlockRejected,
    UnlockVerifier,
    VerifyRequest,
    build_unlock,
    parse_verify_request,
)
from facegate.mqtt.bus import MAX_VERIFY_TIMEOUT_S
from fuzzing import (
    fuzz_batches,
    mutate_bytes,
    mutate_text,
    rand_bytes,
    rand_char,
    rand_json,
    rand_scalar,
    rand_text,
)

KEY: Final = PrivateKey(KeyType.ED25519, bytes(range(32)))
NOW: Final = 1_796_022_114.0
PREFIX: Final = "facegate"
DOORS: Final = ("front", "back")
GOOD_TOPIC: Final = f"{PREFIX}/front/verify"
# Inputs per test. verify requests: 2,000 + 2,000 + 4,000 + 2,000 = 10,000;
# unlocks: 2,000 random bytes + 2,000 random tokens + 2,000 signed hostile payloads
# + 4,000 mutated genuine unlocks = 10,000.
SMALL_RUN: Final = 2_000
LARGE_RUN: Final = 4_000
MUTATED_RUN: Final = 4_000


# -- strategies -----------------------------------------------------------------------------

# Every code point, surrogates and unassigned ones included.
any_char = st.characters(codec=None, exclude_categories=())
any_text = st.text(any_char, max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=8,
)
# Text that looks like JSON: brackets, quotes, escapes, constants and numbers in any order.
json_ish = st.lists(
    st.sampled_from(list('[]{}",:\\ \n0123456789.eE+-') + ["NaN", "Infinity", "1e999", "true"]),
    max_size=300,
).map("".join)
nesting = st.builds(
    lambda depth, opener, closer: opener * depth + closer * depth,
    # Shallow, or around json's recursion limit (~1000) and past it.
    st.integers(min_value=0, max_value=8) | st.integers(min_value=900, max_value=3_000),
    st.sampled_from(["[", '{"a":', '{"a":[']),
    st.sampled_from(["]", "}", "]}", ""]),
)


def dumps(value: object, ascii_only: bool) -> bytes:
    """json.dumps as a sender might: NaN/Infinity written as the bare constants."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


json_texts = st.builds(dumps, json_values, st.booleans()) | json_ish.map(str.encode)
raw_payloads = st.binary(max_size=5_000) | nesting.map(str.encode) | json_texts

JSON_ISH: Final = [*'[]{}",:\\ \n0123456789.eE+-', "NaN", "Infinity", "1e999", "true"]


def rand_nesting(rnd: random.Random) -> str:
    depth = rnd.randint(0, 8) if rnd.random() < 0.5 else rnd.randint(900, 3_000)
    opener = rnd.choice(["[", '{"a":', '{"a":['])
    return opener * depth + rnd.choice(["]", "}", "]}", ""]) * depth


def rand_json_text(rnd: random.Random) -> bytes:
    if rnd.random() < 0.7:
        return dumps(rand_json(rnd), rnd.random() < 0.5)
    return rand_text(rnd, 300, JSON_ISH).encode()


def spawn_payload(rnd: random.Random, drawn: list[bytes]) -> bytes:
    """Like `raw_payloads`, or a drawn payload mutated (spliced with the others)."""
    kind = rnd.randrange(5)
    if kind == 0:
        return rand_bytes(rnd, 5_000)
    if kind == 1:
        return rand_nesting(rnd).encode()
    if kind == 2:
        return rand_json_text(rnd)
    return mutate_bytes(rnd, rnd.choice(drawn), drawn)


# -- parse_verify_request -------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def request_log() -> Iterator[Records]:
    logger = logging.getLogger("facegate.mqtt.requests")
    handler = Records()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def check_request(log: Records, topic: str, payload: bytes) -> VerifyRequest | None:
    """Parse and assert the contract; return what came back."""
    log.records.clear()
    request = parse_verify_request(topic, payload, PREFIX, DOORS)
    if request is None:
        assert [r.levelno for r in log.records] == [logging.WARNING]
        # %r escapes what is not printable: a refusal can never start a forged log line.
        assert log.records[0].getMessage().isprintable()
        return None
    assert log.records == []
    assert request.door in DOORS and topic == f"{PREFIX}/{request.door}/verify"
    for text in (request.identity, request.request_id):
        assert isinstance(text, str) and 0 < len(text) <= 128 and text.isprintable()
    timeout = request.timeout_s
    if timeout is not None:
        assert type(timeout) is float and math.isfinite(timeout)
        assert 0 < timeout <= MAX_VERIFY_TIMEOUT_S
    return request


def test_verify_request_from_random_bytes() -> None:
    examples = [
        b"[" * 1000 + b"]" * 1000,
        b'{"request_id": "r", "identity": "a", "timeout_s": NaN}',
        b'{"request_id": "r", "identity": "a", "timeout_s": 1e999}',
        b'{"request_id": "r", "identity": "a\\ndecision kind=granted"}',
    ]
    with request_log() as log:
        runs = fuzz_batches(
            raw_payloads,
            SMALL_RUN,
            lambda payload: check_request(log, GOOD_TOPIC, payload),
            spawn_payload,
            examples=examples,
        )
    assert runs >= SMALL_RUN


def test_verify_request_from_random_json() -> None:
    def spawn(rnd: random.Random, drawn: list[tuple[object, bool]]) -> tuple[object, bool]:
        value = rand_json(rnd) if rnd.random() < 0.7 else [v for v, _ in drawn]
        return value, rnd.random() < 0.5

    with request_log() as log:
        runs = fuzz_batches(
            st.tuples(json_values, st.booleans()),
            SMALL_RUN,
            lambda value: check_request(log, GOOD_TOPIC, dumps(*value)),
            spawn,
        )
    assert runs >= SMALL_RUN


ids = (
    st.text(any_char, min_size=0, max_size=140)
    | st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=20)
    | json_scalars
    | st.lists(any_text, max_size=2)
)
timeouts = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-1, max_value=MAX_VERIFY_TIMEOUT_S + 1)
    | st.integers(min_value=-(2**60), max_value=2**60)
    | json_scalars
)
# Cheaper than json_values (the random-JSON tests cover deep structure).
extras = st.dictionaries(
    st.sampled_from(["x", "badge", "v", "identity2"]),
    json_scalars | st.lists(json_scalars, max_size=3),
    max_size=2,
)
ABSENT: Final = "(absent)"
RequestFields = tuple[object, object, object, Mapping[str, object], bool]
request_fields = st.tuples(ids, ids, st.just(ABSENT) | timeouts, extras, st.booleans())


def valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable()


def valid_timeout(value: object) -> bool:
    if value in (ABSENT, None):
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 < value <= MAX_VERIFY_TIMEOUT_S


def check_fields(log: Records, fields: RequestFields) -> None:
    request_id, identity, timeout, extra, ascii_only = fields
    body = {**extra, "request_id": request_id, "identity": identity}
    if timeout != ABSENT:
        body["timeout_s"] = timeout
    request = check_request(log, GOOD_TOPIC, dumps(body, ascii_only))
    if request is not None:
        assert (request.request_id, request.identity) == (request_id, identity)
        assert request.timeout_s == (None if timeout in (ABSENT, None) else timeout)
    elif not extra and valid_id(request_id) and valid_id(identity):
        assert not valid_timeout(timeout)  # a clean request is never refused


def rand_id(rnd: random.Random) -> object:
    kind = rnd.randrange(4)
    if kind == 0:
        return rand_text(rnd, 140)
    if kind == 1:
        return rand_text(rnd, 20, "abcXYZ019_-") or "a"
    if kind == 2:
        return rand_scalar(rnd)
    return [rand_text(rnd, 40) for _ in range(rnd.randint(0, 2))]


def rand_timeout(rnd: random.Random) -> object:
    kind = rnd.randrange(5)
    if kind == 0:
        return ABSENT
    if kind == 1:
        return rnd.uniform(-1, MAX_VERIFY_TIMEOUT_S + 1)
    if kind == 2:
        return rnd.randint(-(2**60), 2**60) if rnd.random() < 0.3 else rnd.randint(-2, 400)
    return rand_scalar(rnd)


def spawn_fields(rnd: random.Random, drawn: list[RequestFields]) -> RequestFields:
    """Each field fresh or taken from one of the drawn requests (a crossover)."""
    fresh: RequestFields = (
        rand_id(rnd),
        rand_id(rnd),
        rand_timeout(rnd),
        {
            rnd.choice(["x", "badge", "v", "identity2"]): rand_scalar(rnd)
            for _ in range(rnd.choice((0, 0, 0, 1, 2)))
        },
        rnd.random() < 0.5,
    )

    def pick() -> RequestFields:
        return rnd.choice((fresh, *drawn))

    return (pick()[0], pick()[1], pick()[2], pick()[3], pick()[4])


def test_verify_request_from_random_fields() -> None:
    examples: list[RequestFields] = [
        ("r", "ann\nINFO decision door=front person=ann kind=granted", 3, {}, True),
        ("r", "a\u202eb", ABSENT, {}, False),
        ("r\x00", "ann", 60, {}, True),
    ]
    with request_log() as log:
        runs = fuzz_batches(
            request_fields,
            LARGE_RUN,
            lambda fields: check_fields(log, fields),
            spawn_fields,
            examples=examples,
        )
    assert runs >= LARGE_RUN


topics = any_text | st.builds(
    lambda prefix, door, tail: f"{prefix}/{door}{tail}",
    st.sampled_from([PREFIX, "other", "", "facegate/facegate"]),
    st.sampled_from(DOORS) | any_text,
    st.sampled_from(["/verify", "/verify/result", "/unlock", "", "/verify\n"]),
)


def test_verify_request_on_random_topics() -> None:
    body = b'{"request_id": "r", "identity": "ann"}'
    ours = {f"{PREFIX}/{door}/verify" for door in DOORS}

    def spawn(rnd: random.Random, drawn: list[str]) -> str:
        kind = rnd.randrange(3)
        if kind == 0:
            return rand_text(rnd, 40)
        if kind == 1:
            prefix = rnd.choice([PREFIX, "other", "", "facegate/facegate"])
            door = rnd.choice(DOORS) if rnd.random() < 0.5 else rand_text(rnd, 40)
            tail = rnd.choice(["/verify", "/verify/result", "/unlock", "", "/verify\n"])
            return f"{prefix}/{door}{tail}"
        return mutate_text(rnd, rnd.choice([*drawn, *ours]), ["/", "+", "#", PREFIX])

    def check(topic: str) -> None:
        assert (check_request(log, topic, body) is not None) == (topic in ours)

    with request_log() as log:
        runs = fuzz_batches(topics, SMALL_RUN, check, spawn)
    assert runs >= SMALL_RUN


# -- UnlockVerifier.verify ------------------------------------------------------------------


def genuine() -> bytes:
    return build_unlock(KEY, "front", "alice", "e1", 7, NOW, 5.0).token.encode()


def verify(payload: bytes) -> dict[str, object] | None:
    """The verified claims, or None if rejected; any other exception fails the test."""
    verifier = UnlockVerifier(KEY.public(), "front", clock=lambda: NOW + 1.0)
    try:
        unlock = verifier.verify(payload)
    except UnlockRejected:
        return None
    claims = claims_of(payload)
    assert (unlock.door, unlock.person, unlock.seq) == (
        claims["door"],
        claims["sub"],
        claims["seq"],
    )
    return claims


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def claims_of(token: bytes) -> dict[str, object]:
    segment = token.split(b".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(segment + b"==="))
    return claims


def test_unlock_verifier_on_random_bytes() -> None:
    def check(payload: bytes) -> None:
        assert verify(payload) is None  # without the key nothing verifies

    examples = [b"[" * 1000 + b"]" * 1000]
    runs = fuzz_batches(raw_payloads, SMALL_RUN, check, spawn_payload, examples=examples)
    assert runs >= SMALL_RUN


# Three base64url segments from hostile JSON (or bytes): the header parser and PyJWT see them.
segments = json_texts | raw_payloads | st.just(b'{"alg":"EdDSA","typ":"facegate-unlock+jwt"}')
tokens = st.builds(
    lambda h, p, s: b".".join([b64(h), b64(p), b64(s)]), segments, segments, st.binary(max_size=100)
)


HEADER_JSON: Final = b'{"alg":"EdDSA","typ":"facegate-unlock+jwt"}'


def spawn_token(rnd: random.Random, drawn: list[bytes]) -> bytes:
    """Three base64url segments of hostile JSON or bytes, or a drawn token mutated."""
    if rnd.random() < 0.3:
        return mutate_bytes(rnd, rnd.choice(drawn), [b".", b"=", b"-_", *drawn])

    def segment() -> bytes:
        kind = rnd.randrange(3)
        return (
            rand_json_text(rnd) if kind == 0 else HEADER_JSON if kind == 1 else rand_bytes(rnd, 300)
        )

    return b".".join([b64(segment()), b64(segment()), b64(rand_bytes(rnd, 100))])


def test_unlock_verifier_on_random_tokens() -> None:
    def check(payload: bytes) -> None:
        assert verify(payload) is None

    assert fuzz_batches(tokens, SMALL_RUN, check, spawn_token) >= SMALL_RUN


def test_unlock_verifier_on_hostile_signed_payloads() -> None:
    """Whatever the key holder signs, the claims parser only ever raises UnlockRejected."""
    claims = claims_of(genuine())
    payloads = (
        json_texts
        | nesting.map(str.encode)
        | st.builds(
            lambda name, value: json.dumps({**claims, name: "@"}).replace('"@"', value).encode(),
            st.sampled_from([*claims, "x"]),
            poison_values | st.just('{"method": 1}') | st.just('{"method": "m", "score": 2}'),
        )
    )

    def spawn(rnd: random.Random, drawn: list[bytes]) -> bytes:
        kind = rnd.randrange(4)
        if kind == 0:
            return rand_json_text(rnd)
        if kind == 1:
            return rand_nesting(rnd).encode()
        if kind == 2:
            name = rnd.choice([*claims, "x"])
            value = rand_poison(rnd)
            return json.dumps({**claims, name: "@"}).replace('"@"', value).encode()
        return mutate_bytes(rnd, rnd.choice(drawn), drawn)

    def check(payload: bytes) -> None:
        token = PyJWS().encode(payload, KEY.ed25519(), algorithm="EdDSA", headers=HEADER)
        body = verify(token.encode())
        if body is not None:  # a valid unlock after all: its claims were read right
            assert body["door"] == "front" and isinstance(body["seq"], int)

    assert fuzz_batches(payloads, SMALL_RUN, check, spawn) >= SMALL_RUN


POISON: Final = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "9007199254740993",
    "1e-07",
    "-0",
]
poison_values = (
    st.sampled_from(POISON)
    | nesting.filter(bool)
    | (json_scalars | st.lists(json_scalars, max_size=3)).map(json.dumps)
)


def rand_poison(rnd: random.Random) -> str:
    kind = rnd.randrange(4)
    if kind == 0:
        return rnd.choice(POISON)
    if kind == 1:
        return rand_nesting(rnd) or "["
    if kind == 2:
        return '{"method": 1}' if rnd.random() < 0.5 else '{"method": "m", "score": 2}'
    scalars = [rand_scalar(rnd) for _ in range(rnd.randint(0, 3))]
    return json.dumps(rand_scalar(rnd) if rnd.random() < 0.5 else scalars)


HEADER: Final = {"typ": "facegate-unlock+jwt", "kid": KEY.public().kid}
Change = tuple[str, Any, Any]
# (kind, where, what), applied in order to the token (ASCII text).
changes = st.lists(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), any_char)
    | st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.just(""))
    | st.tuples(st.just("insert"), st.floats(0, 1), any_char | st.sampled_from(list(".=-_+/ ")))
    | st.tuples(st.just("segment"), st.integers(0, 2), segments.map(b64))
    | st.tuples(
        st.just("claim"), st.sampled_from(["x", "iat", "exp", "seq", "door", "sub"]), poison_values
    ),
    min_size=1,
    max_size=3,
)


def mutate(token: str, change: Change) -> str:
    kind, where, what = change
    if kind in ("flip", "delete", "insert"):
        at = int(where * len(token))
        inserted: str = what  # a character, or "" for a deletion
        return token[:at] + inserted + token[at + (kind != "insert") :]
    parts = token.split(".")
    if len(parts) != 3:
        return token
    if kind == "segment":
        parts[where] = what.decode()
    else:  # a claim re-written in the payload, the signature kept: tampering
        try:
            body = base64.urlsafe_b64decode(parts[1] + "===").decode()
        except ValueError:
            return token
        end = body.rfind("}")
        body = body[:end] + f", {json.dumps(where)}: {what}" + body[end:]
        parts[1] = b64(body.encode("utf-8", "surrogatepass")).decode()
    return ".".join(parts)


def rand_change(rnd: random.Random) -> Change:
    kind = rnd.randrange(5)
    if kind == 0:
        return ("flip", rnd.random(), rand_char(rnd))
    if kind == 1:
        return ("delete", rnd.random(), "")
    if kind == 2:
        return (
            "insert",
            rnd.random(),
            rand_char(rnd) if rnd.random() < 0.5 else rnd.choice(".=-_+/ "),
        )
    if kind == 3:
        segment = spawn_payload(rnd, [HEADER_JSON]) if rnd.random() < 0.7 else HEADER_JSON
        return ("segment", rnd.randrange(3), b64(segment))
    where = rnd.choice(["x", "iat", "exp", "seq", "door", "sub"])
    return ("claim", where, rand_poison(rnd))


def test_unlock_verifier_on_mutated_genuine_unlocks() -> None:
    original = genuine()

    def spawn(rnd: random.Random, drawn: list[list[Change]]) -> list[Change]:
        fresh = [rand_change(rnd) for _ in range(rnd.randint(1, 3))]
        return rnd.choice(drawn)[:2] + fresh[:1] if rnd.random() < 0.2 else fresh

    def check(mutation: list[Change]) -> None:
        text = original.decode()
        for change in mutation:
            text = mutate(text, change)
        body = verify(text.encode("utf-8", "surrogatepass"))
        if body is not None:
            # Only a change that leaves the signed bytes alone may pass (e.g. unused bits
            # of the signature's last base64 character): what verifies is the genuine one.
            assert text.rsplit(".", 1)[0] == original.decode().rsplit(".", 1)[0]
            assert body == claims_of(original)

    examples: list[list[Change]] = [
        [("claim", "x", "NaN")],
        [("claim", "x", "[" * 1000 + "]" * 1000)],
        [("claim", "sub", '"mallory"')],
        [("segment", 0, b64(b'{"alg":"none","typ":"facegate-unlock+jwt"}'))],
        [("segment", 2, b"")],
    ]
    runs = fuzz_batches(changes, MUTATED_RUN, check, spawn, examples=examples)
    assert runs >= MUTATED_RUN


def test_genuine_unlock_verifies() -> None:
    assert verify(genuine()) == claims_of(genuine())
