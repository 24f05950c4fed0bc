"""Unlocks as JWS and the reference verifier: valid accepted, every kind of bad rejected;
key files: made, loaded, and refused with a message that says what the user holds."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.api_jws import PyJWS

from facegate.cli import main as cli_main
from facegate.errors import BadInputError
from facegate.keys import (
    KeyType,
    PrivateKey,
    PublicKey,
    load_private_key,
    load_public_key,
    public_key_path,
    write_new_key,
)
from facegate.mqtt import UnlockRejected, UnlockVerifier, build_unlock, sign_unlock
from facegate.mqtt.signing import UNLOCK_TYP

ED_KEY = PrivateKey(KeyType.ED25519, bytes(range(32)))
HS_KEY = PrivateKey(KeyType.HS256, bytes(range(32, 64)))
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
    key: PrivateKey = ED_KEY,
) -> bytes:
    return build_unlock(key, door, "alice", event_id, seq, now, ttl).token.encode()


def claims_of(token: bytes) -> dict[str, object]:
    segment = token.split(b".")[1]
    body: dict[str, object] = json.loads(base64.urlsafe_b64decode(segment + b"==="))
    return body


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def with_payload(token: bytes, claims: dict[str, object]) -> bytes:
    """`token` with its payload segment replaced, the original signature kept (tampering)."""
    header, _, signature = token.split(b".")
    return b".".join([header, b64(json.dumps(claims).encode()), signature])


def signed(claims: dict[str, object], key: PrivateKey = ED_KEY, **headers: object) -> bytes:
    """Claims signed correctly with extra or other header parameters."""
    payload = json.dumps(claims).encode()
    signer = key.ed25519() if key.type is KeyType.ED25519 else key.secret
    alg = str(headers.pop("alg", "EdDSA" if key.type is KeyType.ED25519 else "HS256"))
    return PyJWS().encode(payload, signer, algorithm=alg, headers=headers).encode()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=list(KeyType))
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return ED_KEY if request.param is KeyType.ED25519 else HS_KEY


@pytest.fixture
def verifier(clock: FakeClock, key: PrivateKey) -> UnlockVerifier:
    return UnlockVerifier(key.public(), "front", clock=clock)


def reason_of(verifier: UnlockVerifier, payload: bytes) -> str:
    with pytest.raises(UnlockRejected) as info:
        verifier.verify(payload)
    return info.value.reason


def test_valid_unlock_accepted(verifier: UnlockVerifier, key: PrivateKey) -> None:
    result = verifier.verify(unlock(key=key))
    assert (result.door, result.person, result.seq, result.event_id) == ("front", "alice", 1, "e1")
    assert result.expires_at == pytest.approx(NOW + 5)
    assert result.issued_at == pytest.approx(NOW)
    assert (result.liveness.method, result.liveness.score) == ("none", None)
    assert verifier.last_seq == 1


def test_token_is_compact_jws_with_explicit_type(key: PrivateKey) -> None:
    token = unlock(key=key)
    header = json.loads(base64.urlsafe_b64decode(token.split(b".")[0] + b"==="))
    assert header["typ"] == UNLOCK_TYP
    assert header["alg"] == ("EdDSA" if key.type is KeyType.ED25519 else "HS256")
    assert ("kid" in header) == (key.type is KeyType.ED25519)
    assert token.count(b".") == 2 and token.isascii()


def test_accepts_increasing_sequence(verifier: UnlockVerifier, key: PrivateKey) -> None:
    for seq in (1, 2, 10):
        verifier.verify(unlock(seq=seq, event_id=f"e{seq}", key=key))


@pytest.mark.parametrize(
    ("claim", "value"),
    [("sub", "mallory"), ("door", "back"), ("seq", 99), ("exp", NOW + 3600), ("jti", "other")],
)
def test_tampered_claim_rejected(
    verifier: UnlockVerifier, key: PrivateKey, claim: str, value: object
) -> None:
    token = unlock(key=key)
    assert reason_of(verifier, with_payload(token, {**claims_of(token), claim: value})) == (
        "bad_signature"
    )


def test_flipped_signature_rejected(verifier: UnlockVerifier, key: PrivateKey) -> None:
    token = unlock(key=key)
    flipped = token[:-3] + (b"A" if token[-3:-2] != b"A" else b"B") + token[-2:]
    assert reason_of(verifier, flipped) == "bad_signature"


def test_wrong_key_rejected(verifier: UnlockVerifier, key: PrivateKey) -> None:
    other = PrivateKey.generate(key.type)
    assert reason_of(verifier, unlock(key=other)) == "bad_signature"


def test_algorithm_confusion_is_refused_before_the_signature() -> None:
    """An HS256 token 'signed' with the Ed25519 public key as secret, and alg none."""
    verifier = UnlockVerifier(ED_KEY.public(), "front", clock=FakeClock())
    claims = claims_of(unlock())
    public = PrivateKey(KeyType.HS256, ED_KEY.public().material)
    assert reason_of(verifier, signed(claims, public, typ=UNLOCK_TYP)) == "bad_header"
    none = b".".join([b64(b'{"alg":"none","typ":"facegate-unlock+jwt"}'), b64(b"{}"), b"x"])
    assert reason_of(verifier, none) == "bad_header"


@pytest.mark.parametrize(
    "headers",
    [
        {},  # typ JWT: some other token
        {"typ": "JWT"},
        {"typ": UNLOCK_TYP, "crit": ["exp"]},
        {"typ": UNLOCK_TYP, "b64": False, "crit": ["b64"]},
        {"typ": UNLOCK_TYP, "jku": "https://example.invalid/keys"},
    ],
)
def test_other_headers_rejected(headers: dict[str, object]) -> None:
    verifier = UnlockVerifier(ED_KEY.public(), "front", clock=FakeClock())
    claims = claims_of(unlock())
    if headers.get("b64") is False:
        token = b".".join([b64(json.dumps({"alg": "EdDSA", **headers}).encode()), b"x", b"y"])
    else:
        token = signed(claims, ED_KEY, **headers)
    assert reason_of(verifier, token) == "bad_header"


def test_wrong_door_rejected(verifier: UnlockVerifier, key: PrivateKey) -> None:
    assert reason_of(verifier, unlock(door="back", key=key)) == "wrong_door"


def test_expired_rejected(verifier: UnlockVerifier, clock: FakeClock, key: PrivateKey) -> None:
    token = unlock(ttl=5, key=key)
    clock.now = NOW + 5  # exp <= now is expired
    assert reason_of(verifier, token) == "expired"


def test_future_iat_rejected(verifier: UnlockVerifier, key: PrivateKey) -> None:
    assert reason_of(verifier, unlock(now=NOW + 60, key=key)) == "future_iat"


def test_small_clock_skew_tolerated(verifier: UnlockVerifier, key: PrivateKey) -> None:
    verifier.verify(unlock(now=NOW + 1, key=key))


def test_replayed_jti_rejected(verifier: UnlockVerifier, key: PrivateKey) -> None:
    token = unlock(key=key)
    verifier.verify(token)
    assert reason_of(verifier, token) == "replayed"
    assert reason_of(verifier, unlock(seq=2, event_id="e1", key=key)) == "replayed"


def test_old_seq_rejected(verifier: UnlockVerifier, key: PrivateKey) -> None:
    verifier.verify(unlock(seq=5, event_id="a", key=key))
    assert reason_of(verifier, unlock(seq=5, event_id="b", key=key)) == "stale_seq"
    assert reason_of(verifier, unlock(seq=4, event_id="c", key=key)) == "stale_seq"


def test_rejection_leaves_state_unchanged(verifier: UnlockVerifier, key: PrivateKey) -> None:
    reason_of(verifier, unlock(seq=7, key=PrivateKey.generate(key.type)))
    verifier.verify(unlock(seq=1, key=key))


def test_replay_memory_is_bounded(clock: FakeClock) -> None:
    verifier = UnlockVerifier(ED_KEY.public(), "front", clock=clock, replay_window=3)
    for seq in range(1, 20):
        verifier.verify(unlock(seq=seq, event_id=f"e{seq}"))
    assert len(verifier._seen) == 3
    # Forgotten ids are still stopped by seq.
    assert reason_of(verifier, unlock(seq=1, event_id="e1")) == "stale_seq"


OLD_CONTRACT = json.dumps(
    {"door": "front", "person": "a", "event_id": "e", "seq": 1, "ts": NOW, "sig": "00" * 32}
).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"not a token", "malformed"),
        (b"a.b", "malformed"),
        (b"a.b.c.d", "malformed"),
        (b"a..c", "malformed"),
        (b"a.b.c=", "malformed"),
        (b"a.b.c\n", "malformed"),
        (b"abcde.b.c", "malformed"),  # 5 base64 characters decode to nothing
        (b"e30.e30.", "malformed"),
        (b"e30.e30.AAAA", "bad_header"),  # {} as header
        (OLD_CONTRACT, "malformed"),  # an unlock of the old contract
        (b"x" * 5000, "too_large"),
    ],
)
def test_garbage_rejected(verifier: UnlockVerifier, payload: bytes, reason: str) -> None:
    assert reason_of(verifier, payload) == reason


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("seq", "1"),
        ("seq", True),
        ("seq", -1),
        ("seq", 1.5),
        ("iat", "now"),
        ("iat", None),
        ("exp", False),
        ("sub", 3),
        ("sub", ""),
        ("door", None),
        ("liveness", "passive"),
        ("liveness", {"score": 0.5}),
        ("liveness", {"method": "blink", "score": 1.5}),
        ("liveness", {"method": "blink", "score": True}),
    ],
)
def test_wrong_types_rejected_even_when_signed(claim: str, value: object) -> None:
    verifier = UnlockVerifier(ED_KEY.public(), "front", clock=FakeClock())
    token = signed({**claims_of(unlock()), claim: value}, typ=UNLOCK_TYP)
    assert reason_of(verifier, token) == "bad_field"


@pytest.mark.parametrize("claim", ["door", "sub", "jti", "seq", "iat", "exp"])
def test_missing_claim_rejected(claim: str) -> None:
    verifier = UnlockVerifier(ED_KEY.public(), "front", clock=FakeClock())
    claims = {k: v for k, v in claims_of(unlock()).items() if k != claim}
    assert reason_of(verifier, signed(claims, typ=UNLOCK_TYP)) == "missing_field"


@pytest.mark.parametrize(
    ("liveness", "expected"),
    [(None, ("none", None)), ({"method": "blink", "score": 0.93}, ("blink", 0.93))],
)
def test_liveness_claim_read(
    liveness: dict[str, object] | None, expected: tuple[str, float | None]
) -> None:
    verifier = UnlockVerifier(ED_KEY.public(), "front", clock=FakeClock())
    claims = {**claims_of(unlock()), "liveness": liveness}
    result = verifier.verify(signed(claims, typ=UNLOCK_TYP))
    assert (result.liveness.method, result.liveness.score) == expected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 1000 + b"]" * 1000, "bad_json"),
        (b"{" * 5, "bad_json"),
        (b'{"door": "front", "door": "back"}', "bad_json"),  # duplicate claim
        (b'{"seq": NaN}', "bad_json"),
        (b'{"seq": 1e999}', "bad_json"),
        (b'{"seq": 9007199254740993}', "bad_json"),  # beyond 2**53: not exact in JS
        ("{}".encode("utf-16"), "bad_json"),
    ],
)
def test_signed_poison_payload_is_rejected(payload: bytes, reason: str) -> None:
    verifier = UnlockVerifier(ED_KEY.public(), "front", clock=FakeClock())
    token = PyJWS().encode(
        payload, ED_KEY.ed25519(), algorithm="EdDSA", headers={"typ": UNLOCK_TYP}
    )
    assert reason_of(verifier, token.encode()) == reason
    assert verifier.verify(unlock()).person == "alice"


def test_sign_unlock_signs_the_exact_payload_bytes() -> None:
    token = sign_unlock({"b": 1, "a": "x"}, HS_KEY).encode()
    assert base64.urlsafe_b64decode(token.split(b".")[1] + b"==") == b'{"b":1,"a":"x"}'


def test_verifier_refuses_short_secret() -> None:
    with pytest.raises(ValueError):
        UnlockVerifier(b"short", "front")


# -- key files ---------------------------------------------------------------------------


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("key_type", list(KeyType))
def test_new_key_files_round_trip(tmp_path: Path, key_type: KeyType) -> None:
    key, written = write_new_key(key_type, tmp_path / "front.key")
    assert os.stat(written[0]).st_mode & 0o777 == 0o600
    assert load_private_key(written[0], key_type) == key
    if key_type is KeyType.ED25519:
        assert written[1] == tmp_path / "front.pub" == public_key_path(written[0])
        assert os.stat(written[1]).st_mode & 0o777 == 0o644
        assert load_public_key(written[1]) == key.public()
    else:
        assert written == [tmp_path / "front.key"]
        assert load_public_key(written[0]) == key.public()
    with pytest.raises(BadInputError, match="already exists"):
        write_new_key(key_type, tmp_path / "front.key")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_reads_our_ed25519_files_and_we_read_its(tmp_path: Path) -> None:
    key, _ = write_new_key(KeyType.ED25519, tmp_path / "ours.key")
    derived = subprocess.run(
        ["openssl", "pkey", "-in", tmp_path / "ours.key", "-pubout"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert derived == (tmp_path / "ours.pub").read_text()
    theirs = tmp_path / "theirs.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", theirs], check=True, timeout=30
    )
    assert load_private_key(theirs, KeyType.ED25519).type is KeyType.ED25519


def test_cli_keys_new(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["keys", "new", "--out", str(tmp_path / "door.key")]) == 0
    out = capsys.readouterr().out
    assert "door.pub" in out and "kid " in out
    assert cli_main(["keys", "new", "--type", "hs256", "--out", str(tmp_path / "h.key")]) == 0
    assert len(bytes.fromhex((tmp_path / "h.key").read_text())) == 32
    assert cli_main(["keys", "new", "--out", str(tmp_path / "door.key")]) == 2
    assert "already exists" in capsys.readouterr().err


def pem_of_other_key() -> str:
    other = ec.generate_private_key(ec.SECP256R1())
    return other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def encrypted_pem() -> str:
    return (
        ED_KEY.ed25519()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        .decode()
    )


@pytest.mark.parametrize(
    ("key_type", "text", "message"),
    [
        (KeyType.ED25519, ED_KEY.public().to_file_text(), "is a public key"),
        (KeyType.ED25519, HS_KEY.to_file_text(), "algorithm hs256"),
        (KeyType.ED25519, "garbage", "not a PEM private key"),
        (KeyType.ED25519, "pem", "is not an Ed25519 key \\(EC\\)"),
        (KeyType.ED25519, "encrypted", "encrypted"),
        (
            KeyType.ED25519,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "not a readable",
        ),
        (KeyType.HS256, ED_KEY.to_file_text(), "not an HS256 hex secret"),
        (KeyType.HS256, "zz" * 32, "not hex"),
        (KeyType.HS256, "ab" * 16, "need at least 32"),
        (KeyType.HS256, "", "need at least 32"),
        (KeyType.HS256, "\u00e9", "not ASCII"),
    ],
)
def test_unusable_signing_key_named(
    tmp_path: Path, key_type: KeyType, text: str, message: str
) -> None:
    text = {"pem": pem_of_other_key(), "encrypted": encrypted_pem()}.get(text, text)
    path = write(tmp_path / "unlock.key", text)
    with pytest.raises(BadInputError, match=message) as info:
        load_private_key(path, key_type, field="mqtt.signing.key_file")
    assert str(path) in str(info.value) and "mqtt.signing.key_file" in str(info.value)


def test_controller_key_must_be_public(tmp_path: Path) -> None:
    path = write(tmp_path / "front.key", ED_KEY.to_file_text())
    with pytest.raises(BadInputError, match="controller holds only the public key"):
        load_public_key(path)
    with pytest.raises(BadInputError, match="is a PEM key"):
        load_public_key(write(tmp_path / "p.pub", ED_KEY.public().to_file_text()), KeyType.HS256)
    assert load_public_key(write(tmp_path / "h.key", HS_KEY.to_file_text())) == HS_KEY.public()


def test_missing_key_file_named(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found") as info:
        load_private_key(tmp_path / "nope.key", KeyType.ED25519)
    assert "nope.key" in str(info.value)


def test_world_readable_key_warns_without_leaking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "hmac.key", HS_KEY.to_file_text(), mode=0o644)
    assert load_private_key(path, KeyType.HS256) == HS_KEY
    assert "chmod 600" in caplog.text
    assert HS_KEY.secret.hex() not in caplog.text
    assert HS_KEY.secret.hex() not in repr(HS_KEY) and "secret" not in repr(HS_KEY.public())


def test_public_key_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
    x = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    assert PublicKey(KeyType.ED25519, x).kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
