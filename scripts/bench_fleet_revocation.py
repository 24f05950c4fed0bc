#!/usr/bin/env python3
"""Issue 16 target: a revocation published centrally takes effect on 5 real daemons <= 10 s.

Five `facegate run` processes (devices d1..d5, one door each, same site), one mosquitto on
127.0.0.1, each camera a looping image folder showing the same resident (2 fps, to share
the 2 cores). Bundle version 1 enrolls the resident: every daemon applies it, acks, and
lets the resident in. Then version 2, without the resident, is published (the clock
starts when publish_bundle starts). "Takes effect" on a device = its ack of version 2, sent
after its reload finished (the new gallery is in use from that moment); afterwards the
script watches 3 s more and counts unlocks for the resident issued after each device's ack
(must be 0).

    .venv/bin/python scripts/bench_fleet_revocation.py > bench/out/revocation.json

Heavy on a 2-core machine (5 daemons with their models): a benchmark, not a test. The
numbers are noisy.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from broker import MosquittoBroker  # noqa: E402
from door_site import OTHER_RESIDENT, RESIDENT, Daemon, Subscriber, face  # noqa: E402
from facegate.config.mqtt import MqttConfig  # noqa: E402
from facegate.fleet.bundle import build_bundle  # noqa: E402
from facegate.fleet.publish import publish_bundle  # noqa: E402
from facegate.keys import KeyType, PrivateKey  # noqa: E402
from scenes import write_config, write_enrollment, write_folder, write_unlock_key  # noqa: E402

SITE = "hq"
DEVICES = 5
TARGET_S = 10.0


def make_device(root: Path, index: int, port: int, admin: PrivateKey) -> Path:
    site = root / f"d{index}"
    (site / "journal").mkdir(parents=True)
    write_unlock_key(site / "unlock.key")
    (site / "admin.pub").write_text(admin.public().to_file_text())
    (site / "enrollment.yaml").write_text("people: []\n")
    write_folder(site / "camera", face(RESIDENT))
    config = write_config(
        site / "facegate.yaml", port=port, device=f"d{index}",
        cameras=[{"door": f"door{index}", "source": "camera/", "fps": 2, "loop": True}],
        recognition={"cooldown_s": 1.0, "unknown_event_interval_s": 1.0},
        signing={"algorithm": "ed25519", "key_file": "unlock.key"},
        mqtt_extra={"client_id": f"bench-d{index}"},
    )  # fmt: skip
    with config.open("a") as text:
        text.write(f"fleet: {{site: {SITE}, admin_public_key_file: admin.pub}}\n")
    return config


def acks(sub: Subscriber, version: int) -> dict[str, float]:
    """device -> arrival time of its `applied` ack of `version`."""
    found: dict[str, float] = {}
    for message in list(sub.messages):
        if message.topic.endswith("/enrollment/ack"):
            ack = message.json()
            if ack.get("status") == "applied" and ack.get("version") == version:
                found.setdefault(ack["device"], message.at)
    return found


def main() -> int:
    admin = PrivateKey.generate(KeyType.ED25519)
    with tempfile.TemporaryDirectory(prefix="facegate-revocation-") as tmp:
        root = Path(tmp)
        with MosquittoBroker(root / "mosquitto") as broker:
            mqtt = MqttConfig(host="127.0.0.1", port=broker.port, signing_key_file=Path("-"))
            sub = Subscriber(broker.host, broker.port, ["facegate/#"])
            configs = [make_device(root, i, broker.port, admin) for i in range(1, DEVICES + 1)]
            daemons = [Daemon(config) for config in configs]
            try:
                started = time.monotonic()
                for daemon in daemons:
                    daemon.wait_ready()
                ready_s = time.monotonic() - started
                v1 = write_enrollment(root / "v1.yaml", {RESIDENT: ["door1", "door2", "door3",
                                                                   "door4", "door5"]})  # fmt: skip
                publish_bundle(mqtt, build_bundle(v1, admin, SITE, 1))
                sub.wait_for(lambda s: len(acks(s, 1)) == DEVICES, 120, "acks of version 1")
                doors = [f"door{i}" for i in range(1, DEVICES + 1)]
                sub.wait_for(
                    lambda s: all(any(u["sub"] == RESIDENT for u in s.unlocks(d)) for d in doors),
                    60, "an unlock at every door",
                )  # fmt: skip
                v2 = write_enrollment(root / "v2.yaml", {OTHER_RESIDENT: doors})
                data = build_bundle(v2, admin, SITE, 2)
                t0 = time.time()
                publish_bundle(mqtt, data)
                sub.wait_for(lambda s: len(acks(s, 2)) == DEVICES, 120, "acks of version 2")
                effect = acks(sub, 2)
                time.sleep(3.0)
                late = {
                    device: [u for u in sub.unlocks(f"door{device[1:]}")
                             if u["sub"] == RESIDENT and u["iat"] > at]
                    for device, at in effect.items()
                }  # fmt: skip
            finally:
                for daemon in daemons:
                    daemon.terminate()
                sub.close()
    seconds = {device: round(at - t0, 2) for device, at in sorted(effect.items())}
    max_s = max(seconds.values())
    unlocks_after = sum(len(v) for v in late.values())
    result = {
        "devices": DEVICES,
        "startup_all_ready_s": round(ready_s, 1),
        "revocation_effect_s": seconds,
        "max_s": max_s,
        "unlocks_for_revoked_after_effect": unlocks_after,
        "target_s": TARGET_S,
    }
    print(json.dumps(result, indent=2))
    ok = max_s <= TARGET_S and unlocks_after == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
