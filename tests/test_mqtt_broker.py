"""MqttPublisher against a real mosquitto: status/LWT, signed expiring unlocks, outages."""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker import MosquittoBroker
from facegate.config.mqtt import MqttConfig
from facegate.errors import BadInputError
from facegate.keys import KeyType, PrivateKey
from facegate.mqtt import (
    MqttPublisher,
    UnlockRejected,
    UnlockVerifier,
    VerifyRequest,
    new_event_id,
)
from facegate.mqtt import client as mqtt_client
from facegate.mqtt.journal import Journal, JournalEntry

KEY = PrivateKey(KeyType.ED25519, bytes(range(32)))
WAIT_S = 10.0
PREFIX = "fgtest"


class Subscriber:
    """A plain paho v5 client that records what it receives."""

    def __init__(
        self,
        broker: MosquittoBroker,
        topics: list[str],
        *,
        client_id: str = "",
        persistent: bool = False,
    ) -> None:
        self.messages: list[MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._topics = topics
        self.client = Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            props.SessionExpiryInterval = 600
        self.client.connect(broker.host, broker.port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_S), "subscriber did not subscribe"

    def _on_connect(self, client: Client, *args: object) -> None:
        client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, client: Client, userdata: object, message: MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[MQTTMessage]], bool], timeout: float = WAIT_S
    ) -> list[MQTTMessage]:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.messages), timeout)
            assert ok, f"timed out; got {[(m.topic, m.payload) for m in self.messages]}"
            return list(self.messages)

    def on(self, topic: str) -> list[MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def payloads(messages: list[MQTTMessage], topic: str) -> list[dict[str, object]]:
    """JSON bodies; for an unlock (a JWS) its claims, read unverified."""
    return [body_of(m) for m in messages if m.topic == topic]


def body_of(message: MQTTMessage) -> dict[str, object]:
    if not message.topic.endswith("/unlock"):
        body: dict[str, object] = json.loads(message.payload)
        return body
    segment = bytes(message.payload).split(b".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(segment + b"==="))
    return claims


def last_state(messages: list[MQTTMessage], door: str) -> object:
    mine = payloads(messages, f"{PREFIX}/{door}/status")
    return mine[-1]["state"] if mine else None


def expiry_of(message: MQTTMessage) -> int:
    """The MQTT v5 message-expiry property as delivered (0 if absent)."""
    value = getattr(message.properties, "MessageExpiryInterval", 0)
    assert isinstance(value, int)
    return value


def make_config(broker: MosquittoBroker, tmp_path: Path, **overrides: object) -> MqttConfig:
    key_file = tmp_path / "unlock.key"
    key_file.write_text(KEY.to_file_text())
    key_file.chmod(0o600)
    (tmp_path / "unlock.pub").write_text(KEY.public().to_file_text())
    fields: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "topic_prefix": PREFIX,
        "client_id": f"facegate-test-{os.getpid()}-{id(tmp_path)}",
        "keepalive_s": 5,
        "signing": {"algorithm": "ed25519", "key_file": key_file},
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
    }
    fields.update(overrides)
    return MqttConfig.model_validate(fields)


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for sub in made:
        sub.close()


@pytest.fixture
def publishers() -> Iterator[list[MqttPublisher]]:
    made: list[MqttPublisher] = []
    yield made
    for pub in made:
        pub.close(timeout_s=1)


def start_publisher(
    config: MqttConfig,
    tmp_path: Path,
    publishers: list[MqttPublisher],
    doors: tuple[str, ...] = ("front",),
    connect: bool = True,
) -> MqttPublisher:
    pub = MqttPublisher(config, device="pi", doors=doors, journal_dir=tmp_path / "journal")
    publishers.append(pub)
    pub.start()
    if connect:
        assert pub.wait_connected(WAIT_S)
    return pub


def stop_broker(broker: MosquittoBroker, pub: MqttPublisher) -> None:
    """Stop the broker and wait (up to WAIT_S) until the publisher has noticed."""
    broker.stop()
    deadline = time.monotonic() + WAIT_S
    while pub.is_connected and time.monotonic() < deadline:
        time.sleep(0.02)


def test_retained_online_then_offline(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    publishers: list[MqttPublisher],
    subscribers: list[Subscriber],
) -> None:
    config = make_config(mosquitto, tmp_path)
    pub = start_publisher(config, tmp_path, publishers, doors=("front", "back"))
    status = [f"{PREFIX}/front/status", f"{PREFIX}/back/status"]
    watcher = Subscriber(mosquitto, status)
    subscribers.append(watcher)
    watcher.wait_for(
        lambda ms: last_state(ms, "front") == "online" and last_state(ms, "back") == "online"
    )
    late = Subscriber(mosquitto, status)  # joins after: sees the retained messages
    subscribers.append(late)
    got = late.wait_for(lambda ms: len(ms) >= 2)
    assert all(m.retain for m in got)
    assert {(p["door"], p["state"], p["device"]) for t in status for p in payloads(got, t)} == {
        ("front", "online", "pi"),
        ("back", "online", "pi"),
    }
    pub.close()
    late.wait_for(
        lambda ms: last_state(ms, "front") == "offline" and last_state(ms, "back") == "offline"
    )
    after = Subscriber(mosquitto, status)
    subscribers.append(after)
    retained = after.wait_for(lambda ms: len(ms) >= 2)
    assert [json.loads(m.payload)["state"] for m in retained] == ["offline", "offline"]


def test_online_republished_after_broker_restart(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    publishers: list[MqttPublisher],
    subscribers: list[Subscriber],
) -> None:
    pub = start_publisher(make_config(mosquitto, tmp_path), tmp_path, publishers)
    stop_broker(mosquitto, pub)
    mosquitto.start()
    assert pub.wait_connected(WAIT_S)
    sub = Subscriber(mosquitto, [f"{PREFIX}/front/status"])
    subscribers.append(sub)
    got = sub.wait_for(lambda ms: len(ms) >= 1)
    assert json.loads(got[0].payload)["state"] == "online"


LWT_SCRIPT = """
import sys, time
from pathlib import Path
from facegate.config.mqtt import MqttConfig
from facegate.errors import BadInputError
from facegate.mqtt import MqttPublisher
pub = MqttPublisher(MqttConfig.model_validate_json(sys.argv[1]), device="pi",
                    doors=["front", "back"], journal_dir=Path(sys.argv[2]))
pub.start()
time.sleep(60)
"""


def test_lwt_offline_for_every_door_when_killed(
    mosquitto: MosquittoBroker, tmp_path: Path, subscribers: list[Subscriber]
) -> None:
    config = make_config(mosquitto, tmp_path)
    status = [f"{PREFIX}/front/status", f"{PREFIX}/back/status"]
    sub = Subscriber(mosquitto, status)
    subscribers.append(sub)
    proc = subprocess.Popen(
        [sys.executable, "-c", LWT_SCRIPT, config.model_dump_json(), str(tmp_path / "j")]
    )
    try:
        sub.wait_for(
            lambda ms: last_state(ms, "front") == "online" and last_state(ms, "back") == "online"
        )
        proc.send_signal(signal.SIGKILL)
        got = sub.wait_for(
            lambda ms: last_state(ms, "front") == "offline" and last_state(ms, "back") == "offline"
        )
    finally:
        proc.kill()
        proc.wait(WAIT_S)
    for door, topic in zip(("front", "back"), status, strict=True):
        assert payloads(got, topic)[-1] == {
            "state": "offline",
            "device": "pi",
            "door": door,
            "reason": "connection lost",
        }
    fresh = Subscriber(mosquitto, status)
    subscribers.append(fresh)
    retained = fresh.wait_for(lambda ms: len(ms) >= 2)
    assert all(m.retain and json.loads(m.payload)["state"] == "offline" for m in retained)


def test_unlock_signed_with_message_expiry(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    publishers: list[MqttPublisher],
    subscribers: list[Subscriber],
) -> None:
    config = make_config(mosquitto, tmp_path, unlock_ttl_s=5.0)
    topic = f"{PREFIX}/front/unlock"
    sub = Subscriber(mosquitto, [topic])
    subscribers.append(sub)
    pub = start_publisher(config, tmp_path, publishers)
    sent = [pub.publish_unlock("front", "alice", new_event_id()) for _ in range(2)]
    got = sub.wait_for(lambda ms: len(ms) >= 2)
    verifier = UnlockVerifier(KEY.public(), "front")
    for message, unlock in zip(got, sent, strict=True):
        assert unlock is not None
        assert message.qos == 1 and not message.retain
        assert 1 <= expiry_of(message) <= 5
        assert getattr(message.properties, "ContentType", None) == "application/jose"
        assert bytes(message.payload) == unlock.token.encode()
        verified = verifier.verify(bytes(message.payload))
        assert verified.person == "alice" and verified.seq == unlock.claims["seq"]
    assert sent[0] is not None and sent[1] is not None
    assert set(sent[0].claims) == {"door", "sub", "jti", "seq", "iat", "exp", "liveness"}
    assert sent[1].claims["seq"] > sent[0].claims["seq"]  # type: ignore[operator]
    assert pub.wait_all_acked(WAIT_S) and len(pub.journal) == 0
    # Nothing retained on the unlock topic.
    fresh = Subscriber(mosquitto, [topic])
    subscribers.append(fresh)
    time.sleep(0.3)
    assert fresh.messages == []


def test_each_door_signs_with_its_own_key(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    publishers: list[MqttPublisher],
    subscribers: list[Subscriber],
) -> None:
    """With per-door keys, a controller holding the garage key cannot accept (or forge) an
    unlock of the front door."""
    front_key = PrivateKey(KeyType.ED25519, bytes(range(50, 82)))
    garage_key = PrivateKey(KeyType.HS256, bytes(range(100, 132)))
    assert KEY not in (front_key, garage_key)
    config = make_config(mosquitto, tmp_path)
    sub = Subscriber(mosquitto, [f"{PREFIX}/front/unlock", f"{PREFIX}/garage/unlock"])
    subscribers.append(sub)
    pub = MqttPublisher(
        config, device="pi", doors=("front", "garage"), journal_dir=tmp_path / "journal",
        signing_keys={"front": front_key, "garage": garage_key},
    )  # fmt: skip
    publishers.append(pub)
    pub.start()
    assert pub.wait_connected(WAIT_S)
    pub.publish_unlock("front", "alice", new_event_id())
    pub.publish_unlock("garage", "alice", new_event_id())
    got = {m.topic.split("/")[1]: bytes(m.payload) for m in sub.wait_for(lambda ms: len(ms) >= 2)}
    assert UnlockVerifier(front_key.public(), "front").verify(got["front"]).person == "alice"
    assert UnlockVerifier(garage_key.public(), "garage").verify(got["garage"]).person == "alice"
    for key, reason in ((KEY, "bad_signature"), (garage_key, "bad_header")):
        # The shared key; the other door's key (another algorithm: refused before the
        # signature is even tried).
        with pytest.raises(UnlockRejected) as rejected:
            UnlockVerifier(key.public(), "front").verify(got["front"])
        assert rejected.value.reason == reason


def test_a_door_without_a_key_is_refused(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    keys = {"front": KEY}
    with pytest.raises(ValueError, match="garage"):
        MqttPublisher(
            make_config(mosquitto, tmp_path), device="pi", doors=("front", "garage"),
            journal_dir=tmp_path / "journal", signing_keys=keys,
        )  # fmt: skip


def test_unlock_seq_increases_across_restart(
    mosquitto: MosquittoBroker, tmp_path: Path, publishers: list[MqttPublisher]
) -> None:
    config = make_config(mosquitto, tmp_path)
    first = start_publisher(config, tmp_path, publishers)
    a = first.publish_unlock("front", "alice", new_event_id())
    first.close()
    second = start_publisher(config, tmp_path, publishers)
    b = second.publish_unlock("front", "alice", new_event_id())
    assert a is not None and b is not None
    assert b.claims["seq"] > a.claims["seq"]  # type: ignore[operator]


def test_outage_loses_no_event_and_drops_expired_unlock(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    publishers: list[MqttPublisher],
    subscribers: list[Subscriber],
) -> None:
    events, unlocks = f"{PREFIX}/front/event", f"{PREFIX}/front/unlock"
    # A persistent session: the broker keeps what arrives while the subscriber reconnects.
    sub = Subscriber(mosquitto, [events, unlocks], client_id="outage-sub", persistent=True)
    subscribers.append(sub)
    pub = start_publisher(make_config(mosquitto, tmp_path), tmp_path, publishers)
    before = [new_event_id() for _ in range(5)]
    for event_id in before:
        pub.publish_event("front", {"event_id": event_id, "decision": "unknown"})
    sub.wait_for(lambda ms: len(ms) >= 5)
    assert pub.wait_all_acked(WAIT_S)

    stop_broker(mosquitto, pub)
    assert not pub.is_connected
    during = [new_event_id() for _ in range(40)]
    for i, event_id in enumerate(during):
        pub.publish_event("front", {"event_id": event_id, "decision": "denied", "i": i})
    stale = pub.publish_unlock("front", "alice", "stale-unlock", ttl_s=0.5)
    assert stale is not None
    time.sleep(max(0.0, stale.expires_at - time.time()) + 0.05)
    assert len(pub.journal) == 41
    mosquitto.start()

    assert pub.wait_connected(WAIT_S)
    fresh = pub.publish_unlock("front", "bob", "fresh-unlock")
    got = sub.wait_for(
        lambda ms: (
            any(body_of(m).get("jti") == "fresh-unlock" for m in ms)
            and set(during) <= {body_of(m).get("event_id") for m in ms}
        )
    )
    ids = [p["event_id"] for p in payloads(got, events)]
    assert set(ids) == set(before + during)
    # Every outage event exactly once, in journal order. (mosquitto 2.0 may re-deliver
    # pre-outage messages from its restored session: QoS1 broker-side, not ours.)
    assert [i for i in ids if i in set(during)] == during
    assert [p["jti"] for p in payloads(got, unlocks)] == ["fresh-unlock"]
    assert fresh is not None
    assert fresh.claims["seq"] > stale.claims["seq"]  # type: ignore[operator]
    assert pub.wait_all_acked(WAIT_S)
    assert len(pub.journal) == 0


def test_daemon_restart_resends_journal(
    tmp_path: Path, publishers: list[MqttPublisher], subscribers: list[Subscriber]
) -> None:
    broker = MosquittoBroker(tmp_path / "broker")  # not started yet: the daemon is offline
    try:
        config = make_config(broker, tmp_path)
        offline = start_publisher(config, tmp_path, publishers, connect=False)
        ids = [new_event_id() for _ in range(5)]
        for event_id in ids:
            offline.publish_event("front", {"event_id": event_id})
        offline.close(timeout_s=0.2)
        assert len(offline.journal) == 5
        broker.start()
        sub = Subscriber(broker, [f"{PREFIX}/front/event"])
        subscribers.append(sub)
        start_publisher(config, tmp_path, publishers)
        got = sub.wait_for(lambda ms: len(ms) >= 5)
        assert [json.loads(m.payload)["event_id"] for m in got] == ids
    finally:
        for sub in subscribers:
            sub.close()
        subscribers.clear()
        broker.stop()


def test_verify_requests_malformed_ignored_valid_delivered(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    publishers: list[MqttPublisher],
    subscribers: list[Subscriber],
) -> None:
    received: queue.Queue[VerifyRequest] = queue.Queue()
    pub = MqttPublisher(
        make_config(mosquitto, tmp_path),
        device="pi",
        doors=["front"],
        journal_dir=tmp_path / "journal",
    )
    publishers.append(pub)
    pub.set_verify_handler(received.put)
    pub.start()
    assert pub.wait_connected(WAIT_S)
    results = Subscriber(mosquitto, [f"{PREFIX}/front/verify/result"])
    subscribers.append(results)
    sender = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    try:
        bad: list[tuple[str, bytes]] = [
            ("front", b"not json"),
            ("front", b"\xff\xfe\x00"),
            ("front", b"[1,2,3]"),
            ("front", b'{"request_id": 5, "identity": "younes"}'),
            ("front", b'{"request_id": "r", "identity": ""}'),
            ("front", b'{"request_id": "r", "identity": "younes", "timeout_s": "soon"}'),
            ("front", b'{"request_id": "r", "identity": "younes", "timeout_s": 1e9}'),
            ("front", json.dumps({"request_id": "r", "identity": "x" * 5000}).encode()),
            ("garage", b'{"request_id": "r", "identity": "younes"}'),
        ]
        for door, body in bad:
            sender.publish(f"{PREFIX}/{door}/verify", body, qos=1).wait_for_publish(WAIT_S)
        good = b'{"request_id": "r-1", "identity": "younes", "timeout_s": 3}'
        sender.publish(f"{PREFIX}/front/verify", good, qos=1).wait_for_publish(WAIT_S)
        request = received.get(timeout=WAIT_S)
    finally:
        sender.disconnect()
        sender.loop_stop()
    assert request == VerifyRequest("front", "r-1", "younes", 3.0)
    assert received.empty()
    assert pub.is_connected
    pub.publish_verify_result(
        "front", {"request_id": "r-1", "identity": "younes", "match": True, "distance": 0.5}
    )
    got = results.wait_for(lambda ms: len(ms) >= 1)
    assert json.loads(got[0].payload)["request_id"] == "r-1"
    assert expiry_of(got[0]) > 0


def test_handler_exception_does_not_kill_client(
    mosquitto: MosquittoBroker, tmp_path: Path, publishers: list[MqttPublisher]
) -> None:
    calls: queue.Queue[VerifyRequest] = queue.Queue()

    def handler(request: VerifyRequest) -> None:
        calls.put(request)
        raise RuntimeError("boom")

    pub = MqttPublisher(
        make_config(mosquitto, tmp_path),
        device="pi",
        doors=["front"],
        journal_dir=tmp_path / "journal",
    )
    publishers.append(pub)
    pub.set_verify_handler(handler)
    pub.start()
    assert pub.wait_connected(WAIT_S)
    sender = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    try:
        for i in range(2):
            body = json.dumps({"request_id": f"r{i}", "identity": "a"}).encode()
            sender.publish(f"{PREFIX}/front/verify", body, qos=1)
        assert calls.get(timeout=WAIT_S).request_id == "r0"
        assert calls.get(timeout=WAIT_S).request_id == "r1"
    finally:
        sender.disconnect()
        sender.loop_stop()
    assert pub.is_connected


CONTROLLER = Path(__file__).resolve().parent.parent / "scripts" / "door_controller_example.py"


def test_example_door_controller_accepts_valid_rejects_forged(
    mosquitto: MosquittoBroker, tmp_path: Path, publishers: list[MqttPublisher]
) -> None:
    config = make_config(mosquitto, tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(CONTROLLER),
            "--host",
            mosquitto.host,
            "--port",
            str(mosquitto.port),
            "--prefix",
            PREFIX,
            "--door",
            "front",
            "--key-file",
            str(tmp_path / "unlock.pub"),
            "--count",
            "2",
            "--timeout",
            str(WAIT_S),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pub = start_publisher(config, tmp_path, publishers)
        # The controller prints the retained status once it is subscribed.
        assert proc.stdout.readline().startswith("STATUS ")
        first_unlock = pub.publish_unlock("front", "alice", new_event_id())
        assert first_unlock is not None
        first = first_unlock.claims
        assert pub.wait_all_acked(WAIT_S)  # reaches the broker before the forgeries
        header, _, signature = first_unlock.token.split(".")
        claims = json.dumps({**first, "sub": "mallory"}).encode()
        forged_claims = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
        forged = ".".join([header, forged_claims, signature])
        sender = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        sender.connect(mosquitto.host, mosquitto.port)
        sender.loop_start()
        try:
            for body in (forged, first_unlock.token):  # forged, then a replay of a valid one
                info = sender.publish(f"{PREFIX}/front/unlock", body, qos=1)
                info.wait_for_publish(WAIT_S)
        finally:
            sender.disconnect()
            sender.loop_stop()
        pub.publish_unlock("front", "bob", new_event_id())
        out, _ = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
        proc.wait(WAIT_S)
    assert proc.returncode == 0
    lines = [line for line in out.splitlines() if not line.startswith("STATUS")]
    assert lines == [
        f"UNLOCK door=front person=alice seq={first['seq']}",
        "REJECTED reason=bad_signature",
        "REJECTED reason=replayed",
        f"UNLOCK door=front person=bob seq={int(first['seq']) + 1}",  # type: ignore[call-overload]
    ]


def test_example_door_controller_times_out(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    make_config(mosquitto, tmp_path)  # writes unlock.pub
    result = subprocess.run(
        [
            sys.executable,
            str(CONTROLLER),
            "--port",
            str(mosquitto.port),
            "--door",
            "front",
            "--key-file",
            str(tmp_path / "unlock.pub"),
            "--count",
            "1",
            "--timeout",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert result.returncode == 1 and "TIMEOUT" in result.stdout
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("nothex")
    result = subprocess.run(
        [sys.executable, str(CONTROLLER), "--door", "front", "--key-file", str(bad_key)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert result.returncode == 2 and "bad.key" in result.stderr


def test_connection_options_reach_the_broker(
    mosquitto: MosquittoBroker, tmp_path: Path, publishers: list[MqttPublisher]
) -> None:
    password_file = tmp_path / "mqtt.pass"
    password_file.write_text("s3cret\n")
    config = make_config(
        mosquitto,
        tmp_path,
        client_id="gate-42",
        keepalive_s=7,
        username="facegate-user",
        password_file=password_file,
    )
    start_publisher(config, tmp_path, publishers)
    # mosquitto logs: "New client connected from ... as gate-42 (p5, c1, k7, u'facegate-user')."
    deadline = time.monotonic() + WAIT_S
    while "as gate-42 (" not in mosquitto.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in mosquitto.logs().splitlines() if "as gate-42 (" in x)
    assert "p5" in line and "k7" in line and "u'facegate-user'" in line
    assert "s3cret" not in mosquitto.logs()


def test_unusable_credential_files_named(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path, username="u", password_file=tmp_path / "missing.pass")
    with pytest.raises(BadInputError, match="missing.pass"):
        MqttPublisher(config, device="pi", doors=["front"], journal_dir=tmp_path / "j")
    config = make_config(mosquitto, tmp_path, tls={"ca_file": tmp_path / "missing-ca.pem"})
    with pytest.raises(BadInputError, match="missing-ca.pem"):
        MqttPublisher(config, device="pi", doors=["front"], journal_dir=tmp_path / "j")
    with pytest.raises(BadInputError, match="nokey"):
        MqttPublisher(
            make_config(
                mosquitto,
                tmp_path,
                signing={"algorithm": "ed25519", "key_file": tmp_path / "nokey"},
            ),
            device="pi",
            doors=["front"],
            journal_dir=tmp_path / "j",
        )


class FailingJournal(Journal):
    """Fault injection: appends raise like a full disk or read-only filesystem."""

    fail = False

    def append(self, *args: Any, **kwargs: Any) -> JournalEntry:
        if self.fail:
            raise OSError(errno.EROFS, "Read-only file system")
        return super().append(*args, **kwargs)


def test_journal_failure_fails_closed_for_unlock_publishes_event(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    publishers: list[MqttPublisher],
    subscribers: list[Subscriber],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, unlocks = f"{PREFIX}/front/event", f"{PREFIX}/front/unlock"
    sub = Subscriber(mosquitto, [events, unlocks])
    subscribers.append(sub)
    monkeypatch.setattr(mqtt_client, "Journal", FailingJournal)
    pub = start_publisher(make_config(mosquitto, tmp_path), tmp_path, publishers)
    journal = pub.journal
    assert isinstance(journal, FailingJournal)
    journal.fail = True
    with caplog.at_level(logging.ERROR, logger="facegate.mqtt.client"):
        pub.publish_event("front", {"event_id": "no-journal", "decision": "granted"})
        assert pub.publish_unlock("front", "alice", "unjournaled-unlock") is None
    sub.wait_for(lambda ms: any(m.topic == events for m in ms))  # best effort, direct
    assert str(tmp_path / "journal") in caplog.text
    assert "unlock NOT sent" in caplog.text and "event published without the journal" in caplog.text
    journal.fail = False  # the publisher survived: the next unlock goes out
    good = pub.publish_unlock("front", "bob", new_event_id())
    sub.wait_for(lambda ms: any(m.topic == unlocks for m in ms))
    assert pub.wait_all_acked(WAIT_S)
    assert good is not None
    assert [p["seq"] for p in payloads(sub.messages, unlocks)] == [good.claims["seq"]]
    assert [p["event_id"] for p in payloads(sub.messages, events)] == ["no-journal"]


def test_reconnect_sends_unlock_before_event_backlog(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    publishers: list[MqttPublisher],
    subscribers: list[Subscriber],
) -> None:
    events, unlocks = f"{PREFIX}/front/event", f"{PREFIX}/front/unlock"
    sub = Subscriber(mosquitto, [events, unlocks], client_id="order-sub", persistent=True)
    subscribers.append(sub)
    pub = start_publisher(make_config(mosquitto, tmp_path), tmp_path, publishers)
    stop_broker(mosquitto, pub)
    assert not pub.is_connected
    backlog = 300
    for i in range(backlog):
        pub.publish_event("front", {"event_id": f"e{i}", "decision": "denied"})
    unlock = pub.publish_unlock("front", "alice", "late-unlock", ttl_s=30)
    mosquitto.start()
    assert pub.wait_connected(WAIT_S)
    got = sub.wait_for(lambda ms: len(ms) >= backlog + 1, timeout=3 * WAIT_S)
    assert unlock is not None
    assert got[0].topic == unlocks and body_of(got[0])["seq"] == unlock.claims["seq"]
    assert [p["event_id"] for p in payloads(got, events)] == [f"e{i}" for i in range(backlog)]
