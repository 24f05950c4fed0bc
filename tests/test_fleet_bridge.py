"""Many sites: a site broker bridged to a central one with systemd/mosquitto/bridge-site.conf
(two real mosquitto processes on loopback), a real daemon on the site broker.

A bundle published centrally reaches the device and its ack comes back; the device's
events reach the central broker; restarting the central broker, then the site broker,
loses no event, and a bundle published centrally while the site broker is down is applied
when it is back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

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
)
from facegate.config.mqtt import MqttConfig
from facegate.fleet.bundle import build_bundle
from facegate.fleet.publish import publish_bundle
from facegate.keys import KeyType, PrivateKey
from scenes import write_config, write_enrollment, write_folder, write_unlock_key

BRIDGE: Final = (
    Path(__file__).resolve().parent.parent / "systemd" / "mosquitto" / "bridge-site.conf"
)
SITE: Final = "hq"
OUTAGE_S: Final = 2.0  # longer than the bridge's restart_timeout (1 s), so it notices and retries


def bridge_config(central_port: int) -> str:
    """The shipped bridge file, pointed at the test's central broker (no TLS, no users)."""
    text = BRIDGE.read_text()
    text = re.sub(r"(?m)^address .*$", f"address 127.0.0.1:{central_port}", text)
    text = re.sub(r"(?m)^(remote_username|remote_password|bridge_cafile) .*\n", "", text)
    return re.sub(r"(?m)^restart_timeout .*$", "restart_timeout 1 2", text)


def applied(sub: Subscriber, version: int) -> bool:
    return any(
        m.topic.endswith("/enrollment/ack")
        and m.json().get("status") == "applied"
        and m.json().get("version") == version
        for m in sub.messages
    )


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, MosquittoBroker]]:
    central = MosquittoBroker(tmp_path / "central")
    site = MosquittoBroker(tmp_path / "site")
    with site.conf_file.open("a") as conf:
        conf.write(bridge_config(central.port))
    central.start()
    site.start()
    try:
        yield central, site
    finally:
        site.stop()
        central.stop()


def test_bundles_in_events_and_acks_out_across_broker_restarts(
    brokers: tuple[MosquittoBroker, MosquittoBroker], tmp_path: Path
) -> None:
    central, site_broker = brokers
    admin = PrivateKey.generate(KeyType.ED25519)
    device = tmp_path / "device"
    (device / "journal").mkdir(parents=True)
    write_unlock_key(device / "unlock.key")
    (device / "admin.pub").write_text(admin.public().to_file_text())
    (device / "enrollment.yaml").write_text("people: []\n")
    write_folder(device / "camera", face(RESIDENT))
    config = write_config(
        device / "facegate.yaml", port=site_broker.port, recognition=FAST,
        cameras=[{"door": DOOR, "source": "camera/", "fps": 5, "loop": True}],
        signing={"algorithm": "ed25519", "key_file": "unlock.key"},
        mqtt_extra={"reconnect_max_s": 1},
    )  # fmt: skip
    with config.open("a") as text:
        text.write(f"fleet: {{site: {SITE}, admin_public_key_file: admin.pub}}\n")
    at_central = Subscriber(central.host, central.port, ["facegate/#"], persistent=True)
    daemon = Daemon(config)
    mqtt = MqttConfig(host=central.host, port=central.port, signing_key_file=Path("-"))
    try:
        daemon.wait_ready()
        # In: a bundle published centrally reaches the device; out: its ack and events.
        v1 = write_enrollment(tmp_path / "v1.yaml", {RESIDENT: [DOOR]})
        publish_bundle(mqtt, build_bundle(v1, admin, SITE, 1))
        at_central.wait_for(lambda s: applied(s, 1), START_S, "the ack of version 1 at central")
        at_central.wait_for(
            lambda s: any(e["decision"] == "granted" for e in s.events()), WAIT_S, "a grant"
        )
        # Central restarts: the site queues what goes out meanwhile.
        central.stop()
        time.sleep(OUTAGE_S)
        central.start()
        # The site broker restarts, and version 2 is published centrally while it is down.
        site_broker.stop()
        v2 = write_enrollment(tmp_path / "v2.yaml", {OTHER_RESIDENT: [DOOR]})
        publish_bundle(mqtt, build_bundle(v2, admin, SITE, 2))
        time.sleep(OUTAGE_S)
        site_broker.start()
        at_central.wait_for(lambda s: applied(s, 2), START_S, "the ack of version 2 at central")
        assert daemon.terminate() == 0  # flushes its journal to the site broker
        logged = {d["event_id"] for d in daemon.decisions()}

        def received(s: Subscriber) -> set[str]:
            return {e["event_id"] for e in s.events()}

        at_central.wait_for(lambda s: logged <= received(s), WAIT_S * 2, "every event at central")
        kinds = {e["decision"] for e in at_central.events()}
        assert {"granted", "unknown"} <= kinds  # before and after the revocation
    finally:
        daemon.kill()
        at_central.close()
