"""Fleet end to end: the daemon as a process takes its enrollment from signed bundles
published (in chunks: the broker takes at most 64 KiB per message) on a real mosquitto.

One device serves the module; its camera shows a resident who is not enrolled at first.
In order: a bundle enrolling the resident is applied and acknowledged and the door opens;
six kinds of bad bundle are each refused with one log line while enrollment and gallery
stay byte-identical; a revocation (a new version without the resident) stops the unlocks.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker import MosquittoBroker
from door_site import (
    DOOR,
    FAST,
    OTHER_RESIDENT,
    RESIDENT,
    START_S,
    WAIT_S,
    Daemon,
    Subscriber,
    face,
    granted,
)
from facegate.fleet.bundle import MAGIC, build_bundle
from facegate.fleet.transport import bundle_topic, chunk_topic, split_bundle
from facegate.keys import KeyType, public_key_path, write_new_key
from scenes import write_config, write_enrollment, write_folder, write_unlock_key

SITE: Final = "hq"
MAX_PACKET: Final = 64 * 1024
CHUNK: Final = 60_000
ACKS: Final = f"facegate/site/{SITE}/+/enrollment/ack"


@dataclass
class Device:
    dir: Path
    config: Path
    daemon: Daemon
    sub: Subscriber
    broker: MosquittoBroker
    admin: Path  # the admin's private key
    sources: Path  # where the admin keeps enrollment files

    def acks(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.sub.messages if m.topic.endswith("/enrollment/ack")]

    def files(self) -> tuple[bytes, bytes]:
        return (self.dir / "enrollment.yaml").read_bytes(), (self.dir / "gallery.fgg").read_bytes()

    def bundle(self, people: dict[str, list[str]], version: int, site: str = SITE) -> bytes:
        from facegate.keys import load_private_key

        source = write_enrollment(self.sources / f"v{version}-{site}.yaml", people)
        return build_bundle(source, load_private_key(self.admin, KeyType.ED25519), site, version)

    def publish_raw(self, head: bytes, chunks: list[bytes], sha: str) -> None:
        client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        try:
            for index, chunk in enumerate(chunks):
                client.publish(chunk_topic("facegate", SITE, sha, index), chunk, 1, retain=True)
            info = client.publish(bundle_topic("facegate", SITE), head, 1, retain=True)
            info.wait_for_publish(WAIT_S)
        finally:
            client.disconnect()
            client.loop_stop()


def facegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facegate", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    root = tmp_path_factory.mktemp("fleet")
    broker = MosquittoBroker(root / "mosquitto")
    with broker.conf_file.open("a") as conf:
        conf.write(f"max_packet_size {MAX_PACKET}\n")
    site = root / "device"
    site.mkdir()
    (site / "journal").mkdir()
    (root / "admin").mkdir()
    write_new_key(KeyType.ED25519, root / "admin" / "admin.key")
    (site / "admin.pub").write_bytes(public_key_path(root / "admin" / "admin.key").read_bytes())
    write_unlock_key(site / "unlock.key")
    (site / "enrollment.yaml").write_text("people: []\n")
    write_folder(site / "camera", face(RESIDENT))
    config = write_config(
        site / "facegate.yaml", port=broker.port, recognition=FAST,
        # 5 fps: three frames agree in 0.6 s, inside the 1 s cooldown and unknown interval.
        cameras=[{"door": DOOR, "source": "camera/", "fps": 5, "loop": True}],
        signing={"algorithm": "ed25519", "key_file": "unlock.key"},
    )  # fmt: skip
    with config.open("a") as text:
        text.write(
            f"fleet: {{site: {SITE}, admin_public_key_file: admin.pub,"
            f" max_bundle_bytes: {8 * 1024 * 1024}}}\n"
        )
    with broker:
        sub = Subscriber(broker.host, broker.port, ["facegate/#"])
        daemon = Daemon(config)
        try:
            daemon.wait_ready()
            daemon.wait_log(r"fleet: site hq, running bundle version 0", START_S)
            yield Device(
                site, config, daemon, sub, broker, root / "admin" / "admin.key", root / "admin"
            )
        finally:
            daemon.kill()
            sub.close()


def test_a_bundle_is_applied_acknowledged_and_opens_the_door(device: Device) -> None:
    bundle = device.dir.parent / "v1.bundle"
    bundle.write_bytes(device.bundle({RESIDENT: [DOOR]}, version=1))
    published = facegate("bundle", "publish", str(bundle), "--config", str(device.config))
    assert published.returncode == 0, published.stderr
    assert "chunks of <=" in published.stdout  # larger than the broker takes at once
    device.sub.wait_for(
        lambda s: any(a["status"] == "applied" and a["version"] == 1 for a in device.acks()),
        START_S, "the ack of version 1",
    )  # fmt: skip
    ack = device.acks()[-1]
    assert ack["device"] == "test" and ack["people"] == 1
    # The photos this device's quality gate refused, named as in the bundle, with why.
    assert all(e["image"].startswith(f"photos/{RESIDENT}/") and e["reason"] for e in ack["errors"])
    assert ack["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    device.sub.wait_for(lambda s: granted(s, RESIDENT), WAIT_S, "the resident let in")
    status = facegate("bundle", "status", "--config", str(device.config), "--wait-s", "1")
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if line.startswith("test "))
    assert row.split()[1:5] == ["1", "applied", "1", str(len(ack["errors"]))]


def refusal_cases(device: Device) -> dict[str, tuple[bytes, list[bytes], str]]:
    """reason -> (head, chunks, sha) as published; each must be refused."""
    good = device.bundle({OTHER_RESIDENT: [DOOR]}, version=5)

    def chunked(data: bytes) -> tuple[bytes, list[bytes], str]:
        head, chunks = split_bundle(data, CHUNK)
        return head, chunks, hashlib.sha256(data).hexdigest()

    flipped = bytearray(good)
    flipped[-50] ^= 1
    end = good.index(b"\n", len(MAGIC))
    token = good[len(MAGIC) : end]
    unsigned = MAGIC + token.rsplit(b".", 1)[0] + b"." + good[end:]
    head, chunks, sha = chunked(good)
    truncated = (head, [*chunks[:-1], chunks[-1][:-10]], sha)
    oversize_head = json.dumps({"chunked": 1, "sha256": "ab" * 32, "size": 9 * 1024 * 1024,
                                "chunks": 200}).encode()  # fmt: skip
    return {
        "tampered": chunked(bytes(flipped)),
        "unsigned": chunked(unsigned),
        "other_site": chunked(device.bundle({OTHER_RESIDENT: [DOOR]}, 6, site="branch")),
        "rollback": chunked(device.bundle({OTHER_RESIDENT: [DOOR]}, version=1)),
        "truncated": truncated,
        "oversize": (oversize_head, [], "ab" * 32),
    }


def test_every_bad_bundle_is_refused_with_one_line_and_nothing_changes(device: Device) -> None:
    before = device.files()
    for reason, (head, chunks, sha) in refusal_cases(device).items():
        mark = len(device.daemon.log())
        acks = len(device.acks())
        device.publish_raw(head, chunks, sha)
        device.daemon.wait_log(rf"fleet: bundle refused \({reason}\)", WAIT_S, start=mark)

        def acked(s: Subscriber, n: int = acks) -> bool:
            return len(device.acks()) > n

        device.sub.wait_for(acked, WAIT_S, f"{reason} ack")
        time.sleep(0.3)  # anything else it would do, it does now
        log = device.daemon.log()[mark:]
        assert log.count("fleet: bundle refused") == 1, log
        assert "Traceback" not in log and "reloading" not in log
        assert device.files() == before, f"{reason} changed the enrollment or the gallery"
        ack = device.acks()[-1]
        assert ack["status"] == "refused" and ack["reason"].startswith(reason)
        assert ack["version"] == 1, "the device still runs version 1"


def test_revocation_stops_the_unlocks(device: Device) -> None:
    bundle = device.dir.parent / "v2.bundle"
    bundle.write_bytes(device.bundle({OTHER_RESIDENT: [DOOR]}, version=2))
    published_at = time.time()
    assert (
        facegate("bundle", "publish", str(bundle), "--config", str(device.config)).returncode == 0
    )
    device.sub.wait_for(
        lambda s: any(a["status"] == "applied" and a["version"] == 2 for a in device.acks()),
        START_S, "the ack of version 2",
    )  # fmt: skip
    acked_at = next(m.at for m in device.sub.messages if m.topic.endswith("/ack")
                    and m.json()["version"] == 2)  # fmt: skip
    assert acked_at - published_at < 10, "revocation took effect later than 10 s"
    # The resident keeps standing at the door: unknown now, again after the interval.
    device.sub.wait_for(
        lambda s: sum(e["decision"] == "unknown" and e["ts"] > acked_at for e in s.events()) >= 2,
        WAIT_S,
        "the revoked resident unknown, twice",
    )
    late = [u for u in device.sub.unlocks() if u["sub"] == RESIDENT and u["iat"] > acked_at]
    assert late == [], "an unlock for the revoked resident"
    assert device.daemon.terminate() == 0
