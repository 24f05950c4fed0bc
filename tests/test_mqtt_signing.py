"""Signing and the reference unlock verifier: valid accepted, every kind of bad rejected."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from facegate.errors import BadInputError
from facegate.mqtt import (
    UnlockRejected,
    UnlockVerifier,
    build_unlock,
    canonical_json,
    load_signing_key,
    sign,
    signature_valid,
)

KEY = bytes(range(32))
NOW = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def unlock(
    seq: int = 1,
    event_id: str = "e1",
    door: str = "front",
    ttl: float = 5.0,
    now: float = NOW,
    key: bytes = KEY,
) -> dict[str, object]:
    return build_unlock(key, door, "alice", event_id, seq, now, ttl)


def raw(payload: dict[str, object]) -> bytes:
    return json.dumps(payload).encode()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(clock: FakeClock) -> UnlockVerifier:
    return UnlockVerifier(KEY, "front", clock=clock)


def test_canonical_json_sorted_compact_without_sig() -> None:
    assert canonical_json({"b": 1, "a": "x", "sig": "zz"}) == b'{"a":"x","b":1}'


def test_signature_is_hmac_sha256_over_canonical_json() -> None:
    import hashlib
    import hmac

    payload = unlock()
    expected = hmac.new(KEY, canonical_json(payload), hashlib.sha256).hexdigest()
    assert payload["sig"] == expected == sign(payload, KEY)


def test_valid_unlock_accepted(verifier: UnlockVerifier) -> None:
    result = verifier.verify(raw(unlock()))
    assert (result.door, result.person, result.seq, result.event_id) == ("front", "alice", 1, "e1")
    assert result.expires_at == pytest.approx(NOW + 5)
    assert verifier.last_seq == 1


def test_accepts_increasing_sequence(verifier: UnlockVerifier) -> None:
    for seq in (1, 2, 10):
        verifier.verify(raw(unlock(seq=seq, event_id=f"e{seq}")))


def reason_of(verifier: UnlockVerifier, payload: bytes) -> str:
    with pytest.raises(UnlockRejected) as info:
        verifier.verify(payload)
    return info.value.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("person", "mallory"),
        ("door", "back"),
        ("seq", 99),
        ("expires_at", NOW + 3600.0),
        ("event_id", "other"),
    ],
)
def test_tampered_field_rejected(verifier: UnlockVerifier, field: str, value: object) -> None:
    payload = unlock()
    payload[field] = value
    assert reason_of(verifier, raw(payload)) == "bad_signature"


def test_wrong_key_rejected(verifier: UnlockVerifier) -> None:
    assert reason_of(verifier, raw(unlock(key=b"k" * 32))) == "bad_signature"


def test_wrong_door_rejected(verifier: UnlockVerifier) -> None:
    assert reason_of(verifier, raw(unlock(door="back"))) == "wrong_door"


def test_expired_rejected(verifier: UnlockVerifier, clock: FakeClock) -> None:
    payload = raw(unlock(ttl=5))
    clock.now = NOW + 5  # expires_at <= now is expired
    assert reason_of(verifier, payload) == "expired"


def test_future_timestamp_rejected(verifier: UnlockVerifier) -> None:
    assert reason_of(verifier, raw(unlock(now=NOW + 60))) == "future_ts"


def test_small_clock_skew_tolerated(verifier: UnlockVerifier) -> None:
    verifier.verify(raw(unlock(now=NOW + 1)))


def test_replayed_event_id_rejected(verifier: UnlockVerifier) -> None:
    payload = raw(unlock())
    verifier.verify(payload)
    assert reason_of(verifier, payload) == "replayed"
    assert reason_of(verifier, raw(unlock(seq=2, event_id="e1"))) == "replayed"


def test_old_seq_rejected(verifier: UnlockVerifier) -> None:
    verifier.verify(raw(unlock(seq=5, event_id="a")))
    assert reason_of(verifier, raw(unlock(seq=5, event_id="b"))) == "stale_seq"
    assert reason_of(verifier, raw(unlock(seq=4, event_id="c"))) == "stale_seq"


def test_rejection_leaves_state_unchanged(verifier: UnlockVerifier) -> None:
    reason_of(verifier, raw(unlock(seq=7, key=b"k" * 32)))
    verifier.verify(raw(unlock(seq=1)))


def test_replay_memory_is_bounded(clock: FakeClock) -> None:
    verifier = UnlockVerifier(KEY, "front", clock=clock, replay_window=3)
    for seq in range(1, 20):
        verifier.verify(raw(unlock(seq=seq, event_id=f"e{seq}")))
    assert len(verifier._seen) == 3
    # Forgotten ids are still stopped by seq.
    assert reason_of(verifier, raw(unlock(seq=1, event_id="e1"))) == "stale_seq"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"not json", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (b'"text"', "bad_json"),
        (b"{}", "missing_field"),
        (b"x" * 5000, "too_large"),
    ],
)
def test_garbage_rejected(verifier: UnlockVerifier, payload: bytes, reason: str) -> None:
    assert reason_of(verifier, payload) == reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", "1"),
        ("seq", True),
        ("seq", -1),
        ("seq", 1.5),
        ("ts", "now"),
        ("ts", None),
        ("expires_at", False),
        ("person", 3),
        ("person", ""),
        ("door", None),
    ],
)
def test_wrong_types_rejected(verifier: UnlockVerifier, field: str, value: object) -> None:
    payload = unlock()
    payload[field] = value
    payload["sig"] = sign(payload, KEY)  # even correctly signed, the shape is wrong
    assert reason_of(verifier, raw(payload)) == "bad_field"


def test_missing_sig_rejected(verifier: UnlockVerifier) -> None:
    payload = unlock()
    del payload["sig"]
    assert reason_of(verifier, raw(payload)) == "missing_field"


def test_nan_rejected(verifier: UnlockVerifier) -> None:
    text = raw({**unlock(), "ts": "here"}).replace(b'"ts": "here"', b'"ts": NaN')
    assert reason_of(verifier, text) == "bad_json"


def with_extra(text: bytes) -> bytes:
    """The genuine unlock with one more field spliced in as raw JSON text."""
    return raw(unlock())[:-1] + b', "extra": ' + text + b"}"


# Issue 11 finding 3: each of these raised ValueError, TypeError or RecursionError.
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 1000 + b"]" * 1000, "bad_json"),
        (b'{"a":' * 800 + b"1" + b"}" * 800, "too_large"),
        (b'{"a":' * 600 + b"1" + b"}" * 600, "bad_json"),
        (with_extra(b"[[[[[[1]]]]]]"), "bad_json"),
        (with_extra(b"NaN"), "bad_json"),
        (with_extra(b"Infinity"), "bad_json"),
        (with_extra(b"-Infinity"), "bad_json"),
        (with_extra(b"1e999"), "bad_json"),
        (with_extra(b"-1e999"), "bad_json"),
        (with_extra(b"9007199254740993"), "bad_json"),  # beyond 2**53: not exact in JS
        (raw({**unlock(), "sig": "\u00e9"}), "bad_field"),
        (json.dumps({**unlock(), "sig": "\u00e9"}, ensure_ascii=False).encode(), "bad_field"),
        (raw({**unlock(), "sig": str(unlock()["sig"]).upper()}), "bad_field"),
        (raw({**unlock(), "sig": str(unlock()["sig"])[:-1]}), "bad_field"),
        (raw({**unlock(), "sig": 7}), "bad_field"),
        (raw(unlock())[:-1] + b', "person": "mallory"}', "bad_json"),  # duplicate key
        (raw(unlock()).decode().encode("utf-16"), "bad_json"),
        (b'"' + b'\\"' * 2000, "bad_json"),
    ],
)
def test_poison_is_rejected_and_the_genuine_unlock_still_verifies(
    verifier: UnlockVerifier, payload: bytes, reason: str
) -> None:
    assert reason_of(verifier, payload) == reason
    assert verifier.verify(raw(unlock())).person == "alice"


def test_signature_valid_is_false_for_non_hex_signatures() -> None:
    payload = unlock()
    assert signature_valid(payload, KEY)
    for sig in ("\u00e9" * 64, str(payload["sig"]).upper(), "", None, 1):
        assert not signature_valid({**payload, "sig": sig}, KEY)


# A JavaScript controller as the contract describes it: JSON.parse, drop sig, sort the
# keys, JSON.stringify, HMAC-SHA256. Reads one JSON line per unlock, prints ok or BAD.
NODE_VERIFIER = r"""
const crypto = require("crypto");
const key = Buffer.from(process.argv[1], "hex");
let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  for (const line of input.split("\n").filter((l) => l.length > 0)) {
    const message = JSON.parse(line);
    const sig = message.sig;
    delete message.sig;
    const canonical = JSON.stringify(message, Object.keys(message).sort());
    const mac = crypto.createHmac("sha256", key).update(canonical, "utf8").digest("hex");
    console.log(mac === sig ? "ok" : "BAD " + canonical);
  }
});
"""


def unlock_times() -> list[tuple[float, float]]:
    """(now, ttl) pairs: every millisecond of one second, integral results forced, random."""
    base = 1_796_022_114
    pairs = [(base + ms / 1000, ttl) for ms in range(1000) for ttl in (5.0, 2.5)]
    # Each of these rounds to an integral ts (and, with an integral ttl, expires_at).
    pairs += [(float(base), 5.0), (base + 0.0004, 5.0), (base - 0.0004, 1.0), (base, 5)]
    pairs += [(base + 0.5, 0.5), (base + 0.9996, 30.0), (base + 0.25, 0.75)]
    rng = random.Random(11)
    pairs += [(base + rng.uniform(-1e8, 1e8), rng.choice((5.0, 1.5, 0.001))) for _ in range(3000)]
    return pairs


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_every_unlock_verifies_in_javascript() -> None:
    payloads = [
        build_unlock(KEY, "front", "alice", f"e{seq}", seq, now, ttl)
        for seq, (now, ttl) in enumerate(unlock_times(), start=1)
    ]
    for payload in payloads:  # the rule that makes it work: never an integral float
        for name in ("ts", "expires_at"):
            value = payload[name]
            assert isinstance(value, int) or (isinstance(value, float) and not value.is_integer())
    assert {type(p["ts"]) for p in payloads} == {int, float}
    lines = "".join(json.dumps(payload) + "\n" for payload in payloads)
    result = subprocess.run(
        ["node", "-e", NODE_VERIFIER, KEY.hex()],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    verdicts = result.stdout.splitlines()
    assert len(verdicts) == len(payloads)
    assert [v for v in verdicts if v != "ok"] == []


def write_key(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_load_signing_key(tmp_path: Path) -> None:
    path = write_key(tmp_path / "hmac.key", KEY.hex() + "\n")
    assert load_signing_key(path) == KEY


@pytest.mark.parametrize(
    ("text", "message"),
    [("zz" * 32, "not hex"), ("abcd", "at least 16"), ("", "at least 16")],
)
def test_bad_key_file_named(tmp_path: Path, text: str, message: str) -> None:
    path = write_key(tmp_path / "hmac.key", text)
    with pytest.raises(BadInputError, match=message) as info:
        load_signing_key(path)
    assert str(path) in str(info.value)


def test_missing_key_file_named(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found") as info:
        load_signing_key(tmp_path / "nope.key")
    assert "nope.key" in str(info.value)


def test_world_readable_key_warns_without_leaking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_key(tmp_path / "hmac.key", KEY.hex(), mode=0o644)
    assert load_signing_key(path) == KEY
    assert "chmod 600" in caplog.text
    assert KEY.hex() not in caplog.text


def test_verifier_refuses_short_key() -> None:
    with pytest.raises(ValueError):
        UnlockVerifier(b"short", "front")
