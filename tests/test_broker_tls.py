"""The shipped mosquitto example (TLS, passwords, per-door ACL) against a real broker.

A door controller must never see another door's unlocks, even when it subscribes to the
whole tree or names the other door's topic; clients without the right password, without
TLS, or that do not trust the broker's CA get nothing.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from facegate.config.mqtt import MqttConfig
from facegate.keys import KeyType, PrivateKey
from facegate.mqtt.bus import VerifyRequest
from facegate.mqtt.client import MqttPublisher
from facegate.mqtt.signing import UnlockRejected, UnlockVerifier
from tls_broker import EXAMPLE_DIR, TlsBroker, generate_certs, tls_broker, tools_missing

pytestmark = pytest.mark.skipif(
    bool(tools_missing()),
    reason=f"missing {tools_missing()}: apt-get install mosquitto openssl",
)

WAIT_S: Final = 5.0
QUIET_S: Final = 0.5  # how long a "nothing arrives" check listens after the control arrived
# (mosquitto fans a message out to every subscriber as it takes it in: once the control has
# arrived, a leaked copy has been sent too; the rest is loopback latency)


class Conn:
    """A paho 2.x MQTT v5 client that records CONNACK, SUBACKs and messages."""

    def __init__(self, name: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{name}", protocol=mqtt.MQTTv5
        )
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.disconnected = threading.Event()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connack.put(rc)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        self.disconnected.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any
    ) -> None:
        self.subacks.put(rcs)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)

    def start(self, broker: TlsBroker, *, tls: bool = True, ca_file: Path | None = None) -> None:
        if tls:
            self.client.tls_set(ca_certs=str(ca_file or broker.ca_file))
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def login(self, broker: TlsBroker, user: str) -> Conn:
        self.client.username_pw_set(user, broker.passwords[user])
        self.start(broker)
        rc = self.connack.get(timeout=WAIT_S)
        assert not rc.is_failure, f"{user} refused: {rc}\n{broker.log()}"
        return self

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        self.client.subscribe([(t, 1) for t in topics])
        return self.subacks.get(timeout=WAIT_S)

    def stop(self) -> None:
        self.client.disconnect()  # first, so the network thread wakes up and ends
        self.client.loop_stop()

    def drain(self) -> list[mqtt.MQTTMessage]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def wait_for(self, topic: str) -> list[mqtt.MQTTMessage]:
        """All messages received until one on `topic` arrived (bounded wait)."""
        seen: list[mqtt.MQTTMessage] = []
        deadline = time.monotonic() + WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                break
            seen.append(msg)
            if msg.topic == topic:
                return seen
        raise AssertionError(f"no message on {topic}; got {[m.topic for m in seen]}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with tls_broker(tmp_path_factory.mktemp("tls-broker")) as running:
        yield running


def _unlock(door: str) -> tuple[str, bytes, Properties]:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: untyped
    props.MessageExpiryInterval = 30
    payload = {"door": door, "person": "alice", "event_id": f"ev-{door}", "seq": 1, "sig": "00"}
    return f"facegate/{door}/unlock", json.dumps(payload).encode(), props


def _publish(conn: Conn, topic: str, payload: bytes, props: Properties | None = None) -> None:
    info = conn.client.publish(topic, payload, qos=1, properties=props)
    info.wait_for_publish(timeout=WAIT_S)


def test_door_controller_reads_only_its_own_door(broker: TlsBroker) -> None:
    daemon = Conn("facegate").login(broker, "facegate")
    front = Conn("front").login(broker, "door-front")
    back = Conn("back").login(broker, "door-back")
    try:
        # door-front tries every way to see the back door; door-back is the control that
        # proves back's unlock was really published and deliverable.
        front_acks = front.subscribe(
            "facegate/#", "facegate/back/unlock", "facegate/+/unlock", "facegate/front/#"
        )
        back.subscribe("facegate/back/#")
        assert not front_acks[3].is_failure, front_acks

        for door in ("front", "back"):
            _publish(daemon, *_unlock(door))

        got_front = front.wait_for("facegate/front/unlock")
        got_back = back.wait_for("facegate/back/unlock")
        assert json.loads(got_back[-1].payload)["door"] == "back"
        time.sleep(QUIET_S)
        front_topics = {m.topic for m in got_front + front.drain()}
        assert front_topics == {"facegate/front/unlock"}, (front_topics, front_acks)
        assert not {m.topic for m in back.drain()} - {"facegate/back/unlock"}
    finally:
        for conn in (daemon, front, back):
            conn.stop()


def test_door_controller_cannot_publish_for_other_doors(broker: TlsBroker) -> None:
    daemon = Conn("facegate").login(broker, "facegate")
    front = Conn("front").login(broker, "door-front")
    back = Conn("back").login(broker, "door-back")
    try:
        daemon.subscribe("facegate/+/verify")
        back.subscribe("facegate/back/#")
        claim = json.dumps({"request_id": "r1", "identity": "alice", "timeout_s": 2}).encode()
        _publish(front, "facegate/back/verify", claim)  # not its door: dropped
        _publish(front, "facegate/back/unlock", b"{}")  # forged unlock: dropped
        _publish(front, "facegate/front/unlock", b"{}")  # even for its own door
        _publish(front, "facegate/front/verify", claim)  # allowed: the control
        got = daemon.wait_for("facegate/front/verify")
        time.sleep(QUIET_S)
        assert {m.topic for m in got + daemon.drain()} == {"facegate/front/verify"}
        assert back.drain() == []
    finally:
        for conn in (daemon, front, back):
            conn.stop()


def _refused(conn: Conn) -> bool:
    """True when the broker refused or dropped the client instead of accepting it."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            return bool(conn.connack.get(timeout=0.05).is_failure)
        except queue.Empty:
            if conn.disconnected.is_set():
                return True
    return False


def test_anonymous_client_is_refused(broker: TlsBroker) -> None:
    conn = Conn("anon")
    conn.start(broker)
    try:
        assert _refused(conn)
    finally:
        conn.stop()


def test_wrong_password_is_refused(broker: TlsBroker) -> None:
    conn = Conn("wrong")
    conn.client.username_pw_set("door-front", "not-the-password")
    conn.start(broker)
    try:
        assert _refused(conn)
    finally:
        conn.stop()


def test_plain_tcp_is_refused(broker: TlsBroker) -> None:
    conn = Conn("plain")
    conn.client.username_pw_set("facegate", broker.passwords["facegate"])
    conn.start(broker, tls=False)
    try:
        assert _refused(conn)
    finally:
        conn.stop()


def test_client_rejects_broker_with_untrusted_ca(broker: TlsBroker, tmp_path: Path) -> None:
    other_ca = generate_certs(tmp_path / "other") / "ca.crt"
    conn = Conn("mitm")
    conn.client.username_pw_set("facegate", broker.passwords["facegate"])
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError is an OSError
        conn.start(broker, ca_file=other_ca)
    conn.client.loop_stop()


def test_broker_runs_the_shipped_example(broker: TlsBroker) -> None:
    """Only paths and the port differ from systemd/mosquitto/facegate.conf."""
    rewritten = {"listener", "cafile", "certfile", "keyfile", "password_file", "acl_file"}
    example = (EXAMPLE_DIR / "facegate.conf").read_text().splitlines()
    kept = [ln for ln in example if ln.strip() and not ln.startswith("#")]
    running = broker.conf_file.read_text().splitlines()
    for line in kept:
        if line.split()[0] not in rewritten:
            assert line in running, line
    assert "allow_anonymous false" in kept and "require_certificate false" in kept


def test_facegate_publisher_over_tls_through_the_acl(broker: TlsBroker, tmp_path: Path) -> None:
    """facegate's own MQTT client, configured as in facegate.yaml (TLS, username,
    password_file, client cert): its unlocks verify at the right door only, and the ACL
    lets through what it needs (status, verify requests)."""
    signing_key = PrivateKey.generate(KeyType.ED25519)
    key = tmp_path / "unlock.key"
    key.write_text(signing_key.to_file_text())
    key.chmod(0o600)
    password = tmp_path / "mqtt.password"
    password.write_text(broker.passwords["facegate"] + "\n")
    cert, cert_key = broker.client_cert("facegate")
    config = MqttConfig.model_validate(
        {
            "host": broker.host,
            "port": broker.port,
            "username": "facegate",
            "password_file": password,
            "signing": {"key_file": key},  # ed25519, the default
            "tls": {"ca_file": broker.ca_file, "cert_file": cert, "key_file": cert_key},
        }
    )
    publisher = MqttPublisher(
        config, device="test", doors=["front", "back"], journal_dir=tmp_path / "journal"
    )
    requests: queue.Queue[VerifyRequest] = queue.Queue()
    publisher.set_verify_handler(requests.put)
    front = Conn("front").login(broker, "door-front")
    back = Conn("back").login(broker, "door-back")
    try:
        front.subscribe("facegate/#", "facegate/front/#")
        back.subscribe("facegate/back/#")
        publisher.start()
        assert publisher.wait_connected(WAIT_S), broker.log()
        publisher.publish_unlock("front", "alice", "ev-front-1")
        publisher.publish_unlock("back", "bob", "ev-back-1")
        assert publisher.wait_all_acked(WAIT_S)

        secret = signing_key.public()  # what both controllers hold
        got_front = front.wait_for("facegate/front/unlock")
        unlock = UnlockVerifier(secret, "front").verify(bytes(got_front[-1].payload))
        assert unlock.person == "alice"
        got_back = back.wait_for("facegate/back/unlock")
        assert UnlockVerifier(secret, "back").verify(bytes(got_back[-1].payload)).person == "bob"
        with pytest.raises(UnlockRejected):  # back's unlock is no good at the front door
            UnlockVerifier(secret, "front").verify(bytes(got_back[-1].payload))

        claim = {"request_id": "r-1", "identity": "alice", "timeout_s": 2}
        _publish(front, "facegate/front/verify", json.dumps(claim).encode())
        request = requests.get(timeout=WAIT_S)
        assert (request.door, request.identity) == ("front", "alice")

        time.sleep(QUIET_S)
        front_topics = {m.topic for m in got_front + front.drain()}
        assert not any(t.startswith("facegate/back/") for t in front_topics), front_topics
        assert "facegate/front/status" in front_topics
    finally:
        publisher.close(timeout_s=2)
        for conn in (front, back):
            conn.stop()
