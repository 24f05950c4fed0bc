"""The JavaScript (node's crypto only) and shell (openssl) unlock verifiers in scripts/,
against unlocks from the real daemon through a real mosquitto.

One daemon serves the module: two doors, `front` signing with the shared Ed25519 key
(mqtt.signing, the default) and `garage` with its own HS256 secret. A resident stands in
front of both cameras until each door has had three unlocks; then the daemon stops and
every captured token goes through both verifiers: each genuine one is accepted, and
tampered, expired, replayed and wrong-door ones are rejected with the contract's reason.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from broker import MosquittoBroker
from door_site import (
    DOOR,
    FAST,
    RESIDENT,
    WAIT_S,
    Daemon,
    Received,
    Subscriber,
    enrolled_gallery,
    face,
)
from facegate.keys import KeyType, PrivateKey, load_public_key
from facegate.mqtt import UnlockVerifier
from scenes import write_config, write_enrollment, write_folder, write_unlock_key

SCRIPTS: Final = Path(__file__).resolve().parent.parent / "scripts"
JS: Final = SCRIPTS / "verify_unlock.js"
SH: Final = SCRIPTS / "verify_unlock.sh"
GARAGE: Final = "garage"
UNLOCKS_PER_DOOR: Final = 3

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("openssl") is None,
    reason="node and openssl are needed (both are on the dev machines and in CI)",
)


@dataclass(frozen=True)
class Captured:
    dir: Path
    tokens: Mapping[str, list[Received]]  # door -> unlock messages, in arrival order
    keys: Mapping[str, Path]  # door -> what its controller verifies with


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    root = tmp_path_factory.mktemp("verifiers")
    with MosquittoBroker(root / "mosquitto") as broker:
        write_unlock_key(root / "unlock.key")
        garage_key = PrivateKey.generate(KeyType.HS256)
        (root / "garage.key").write_text(garage_key.to_file_text())
        (root / "garage.key").chmod(0o600)
        (root / "journal").mkdir()
        people = {RESIDENT: [DOOR, GARAGE]}
        write_enrollment(root / "enrollment.yaml", people)
        shutil.copy(enrolled_gallery(people), root / "gallery.fgg")  # an installed door's
        write_folder(root / "camera", face(RESIDENT))
        # 5 fps: three frames agree in 0.6 s; the unlocks come one cooldown (1 s) apart.
        camera = {"source": "camera/", "fps": 5, "loop": True}
        config = write_config(
            root / "facegate.yaml", port=broker.port, recognition=FAST,
            cameras=[{"door": DOOR, **camera},
                     {"door": GARAGE, **camera, "signing_key_file": "garage.key",
                      "signing_algorithm": "hs256"}],
            signing={"algorithm": "ed25519", "key_file": "unlock.key"},
            mqtt_extra={"unlock_ttl_s": 60},  # still valid while the verifiers run
        )  # fmt: skip
        sub = Subscriber(broker.host, broker.port)
        daemon = Daemon(config)
        try:
            daemon.wait_ready()
            sub.wait_for(
                lambda s: all(len(s.on("unlock", d)) >= UNLOCKS_PER_DOOR for d in (DOOR, GARAGE)),
                WAIT_S * 2,
                f"{UNLOCKS_PER_DOOR} unlocks at each door",
            )
            assert daemon.terminate() == 0
            tokens = {door: sub.on("unlock", door) for door in (DOOR, GARAGE)}
        finally:
            daemon.kill()
            sub.close()
    keys = {DOOR: root / "unlock.pub", GARAGE: root / "garage.key"}
    yield Captured(root, tokens, keys)


def claims(token: bytes) -> dict[str, object]:
    segment = token.split(b".")[1]
    body: dict[str, object] = json.loads(base64.urlsafe_b64decode(segment + b"==="))
    return body


def tampered(token: bytes, **changes: object) -> bytes:
    """Another payload under the original signature."""
    header, _, signature = token.split(b".")
    body = json.dumps({**claims(token), **changes}, separators=(",", ":")).encode()
    return b".".join([header, base64.urlsafe_b64encode(body).rstrip(b"="), signature])


def flipped(token: bytes) -> bytes:
    return token[:-3] + (b"A" if token[-3:-2] != b"A" else b"B") + token[-2:]


def run_js(door: str, key: Path, tokens: list[bytes], now: float | None = None) -> list[str]:
    args = ["node", str(JS), "--door", door, "--key", str(key)]
    if now is not None:
        args += ["--now", repr(now)]
    lines = b"".join(t + b"\n" for t in tokens)
    result = subprocess.run(args, input=lines, capture_output=True, timeout=30, check=True)
    return result.stdout.decode().splitlines()


def run_sh(
    door: str, key: Path, tokens: list[bytes], state: Path, now: float | None = None
) -> list[str]:
    """One invocation per token (as a controller's loop runs it), sharing the state dir."""
    verdicts = []
    for token in tokens:
        args = ["sh", str(SH), "--door", door, "--key", str(key), "--state", str(state)]
        if now is not None:
            args += ["--now", repr(now)]
        result = subprocess.run([*args, token.decode()], capture_output=True, timeout=30)
        line = result.stdout.decode().strip()
        assert result.returncode == (0 if line.startswith("OK ") else 1), (line, result.stderr)
        verdicts.append(line)
    return verdicts


def expected_ok(token: bytes) -> str:
    c = claims(token)
    return f"OK door={c['door']} sub={c['sub']} seq={c['seq']} jti={c['jti']}"


Runner = str  # "js" or "sh"


def verify(
    runner: Runner, door: str, key: Path, tokens: list[bytes], tmp: Path, now: float | None = None
) -> list[str]:
    if runner == "js":
        return run_js(door, key, tokens, now)
    return run_sh(door, key, tokens, tmp / f"state-{door}-{len(list(tmp.iterdir()))}", now)


@pytest.mark.parametrize("runner", ["js", "sh"])
@pytest.mark.parametrize("door", [DOOR, GARAGE])
def test_every_daemon_unlock_is_accepted_and_a_replay_rejected(
    captured: Captured, tmp_path: Path, runner: Runner, door: str
) -> None:
    messages = captured.tokens[door]
    tokens = [m.payload for m in messages]
    # The Python reference verifier agrees (at arrival time).
    reference = UnlockVerifier(load_public_key(captured.keys[door]), door)
    for message in messages:
        assert reference.verify(message.payload).door == door
    assert len(tokens) >= UNLOCKS_PER_DOOR
    verdicts = verify(runner, door, captured.keys[door], [*tokens, tokens[0], tokens[-1]], tmp_path)
    assert verdicts == [expected_ok(t) for t in tokens] + ["REJECTED replayed"] * 2


@pytest.mark.parametrize("runner", ["js", "sh"])
@pytest.mark.parametrize("door", [DOOR, GARAGE])
def test_tampered_expired_and_wrong_door_unlocks_are_rejected(
    captured: Captured, tmp_path: Path, runner: Runner, door: str
) -> None:
    token = captured.tokens[door][0].payload
    key = captured.keys[door]
    exp = claims(token)["exp"]
    assert isinstance(exp, int | float)
    bad = [
        tampered(token, sub="madonna"),
        tampered(token, exp=exp + 3600),
        tampered(token, door="back"),
        tampered(token, seq=10**6),
        flipped(token),
        token.rsplit(b".", 1)[0],  # signature removed
        token[:-1] + b".x",  # a fourth segment
    ]
    reasons = ["bad_signature"] * 5 + ["malformed"] * 2
    assert verify(runner, door, key, bad, tmp_path) == [f"REJECTED {r}" for r in reasons]
    # Expired: the same bytes at exp and a moment later.
    assert verify(runner, door, key, [token], tmp_path, now=exp) == ["REJECTED expired"]
    assert verify(runner, door, key, [token], tmp_path, now=exp + 0.5) == ["REJECTED expired"]
    # Wrong door: a genuine unlock of this door, at a controller of another door holding
    # the same key.
    assert verify(runner, "back", key, [token], tmp_path) == ["REJECTED wrong_door"]
    # The other door's key: front's Ed25519 key never accepts garage's HS256 unlocks.
    other = GARAGE if door == DOOR else DOOR
    assert verify(runner, door, captured.keys[other], [token], tmp_path) == ["REJECTED bad_header"]


def test_a_controller_refuses_to_run_with_the_private_key(captured: Captured) -> None:
    private = captured.dir / "unlock.key"
    js = subprocess.run(
        ["node", str(JS), "--door", DOOR, "--key", str(private)],
        input=b"", capture_output=True, timeout=30,
    )  # fmt: skip
    assert js.returncode == 2 and b"private key" in js.stderr
    token = captured.tokens[DOOR][0].payload.decode()
    sh = subprocess.run(
        ["sh", str(SH), "--door", DOOR, "--key", str(private), "--state", "/nonexistent/x", token],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert sh.returncode == 2 and b"private key" in sh.stderr
