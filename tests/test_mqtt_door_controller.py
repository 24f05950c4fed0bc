"""The example door controller: relay pulses extend, every exit path switches it off, and
no message (poison or a failing relay) stops it from acting on the next genuine unlock."""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker import MosquittoBroker
from facegate.config.mqtt import MqttConfig
from facegate.keys import KeyType, PrivateKey
from facegate.mqtt import MqttPublisher, UnlockVerifier, build_unlock, new_event_id

CONTROLLER = Path(__file__).resolve().parent.parent / "scripts" / "door_controller_example.py"
KEY = PrivateKey(KeyType.ED25519, bytes(range(32)))
WAIT_S = 10.0
PREFIX = "fgtest"

# Runs the real main() with a fake GPIO device injected through main(relay=...).
WRAPPER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("door_controller", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)

class Device:
    def on(self): print("RELAY on", flush=True)
    def off(self): print("RELAY off", flush=True)
    def close(self): print("RELAY closed", flush=True)

sys.exit(mod.main(sys.argv[2:], relay=mod.Relay(None, 60.0, device=Device())))
"""


def load_controller() -> ModuleType:
    spec = importlib.util.spec_from_file_location("door_controller", CONTROLLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeDevice:
    def __init__(self) -> None:
        self.is_on = False
        self.offs = 0
        self.closed = False
        self.lock = threading.Lock()

    def on(self) -> None:
        with self.lock:
            self.is_on = True

    def off(self) -> None:
        with self.lock:
            self.is_on = False
            self.offs += 1

    def close(self) -> None:
        self.closed = True


def test_overlapping_unlocks_extend_the_pulse() -> None:
    device = FakeDevice()
    relay = load_controller().Relay(None, 0.4, device=device)
    relay.pulse()
    time.sleep(0.25)
    second = time.monotonic()
    relay.pulse()
    time.sleep(0.3)  # past the first pulse's end: the first timer must not cut this one
    assert device.is_on and device.offs == 0
    deadline = time.monotonic() + WAIT_S
    while device.is_on and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not device.is_on and device.offs == 1
    assert time.monotonic() - second >= 0.4
    relay.close()


def test_close_during_pulse_switches_off_and_stays_off() -> None:
    device = FakeDevice()
    relay = load_controller().Relay(None, 60.0, device=device)
    relay.pulse()
    relay.close()
    assert not device.is_on and device.closed
    relay.pulse()
    assert not device.is_on


def write_keys(folder: Path) -> tuple[Path, Path]:
    """The daemon's private key (0600) and the controller's public key."""
    private, public = folder / "unlock.key", folder / "unlock.pub"
    private.write_text(KEY.to_file_text())
    private.chmod(0o600)
    public.write_text(KEY.public().to_file_text())
    return private, public


def test_sigterm_during_pulse_releases_relay(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    private, key_file = write_keys(tmp_path)
    config = MqttConfig.model_validate(
        {
            "host": mosquitto.host,
            "port": mosquitto.port,
            "topic_prefix": PREFIX,
            "client_id": "facegate-sigterm-test",
            "signing": {"algorithm": "ed25519", "key_file": private},
            "reconnect_min_s": 1,
            "reconnect_max_s": 1,
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(CONTROLLER)]
        + ["--port", str(mosquitto.port), "--prefix", PREFIX, "--door", "front"]
        + ["--key-file", str(key_file), "--count", "5", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pub = MqttPublisher(config, device="pi", doors=["front"], journal_dir=tmp_path / "journal")
    try:
        assert proc.stdout is not None
        pub.start()
        assert pub.wait_connected(WAIT_S)
        assert proc.stdout.readline().startswith("STATUS ")  # subscribed
        pub.publish_unlock("front", "alice", new_event_id())
        assert proc.stdout.readline().startswith("UNLOCK door=front person=alice")
        assert proc.stdout.readline() == "RELAY on\n"  # a 60 s pulse is running
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        pub.close(timeout_s=1)
        proc.kill()
        proc.wait(WAIT_S)
    assert proc.returncode == 0
    assert out.splitlines() == ["RELAY off", "RELAY closed"]
    assert "stopped by SIGTERM" in err and "relay released" in err


def genuine_unlock(seq: int = 1, door: str = "front") -> bytes:
    return build_unlock(KEY, door, "alice", new_event_id(), seq, time.time(), 30.0).token.encode()


def tampered(token: bytes, **claims: object) -> bytes:
    """The token with claims changed in its payload, its signature kept."""
    header, payload, signature = token.split(b".")
    body = json.loads(base64.urlsafe_b64decode(payload + b"==="))
    new = base64.urlsafe_b64encode(json.dumps({**body, **claims}).encode()).rstrip(b"=")
    return b".".join([header, new, signature])


def start_controller(broker: MosquittoBroker, key_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(CONTROLLER)]
        + ["--port", str(broker.port), "--prefix", PREFIX, "--door", "front"]
        + ["--key-file", str(key_file), "--count", "1", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def raw_publisher(broker: MosquittoBroker) -> Client:
    client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def test_poison_unlocks_do_not_stop_the_genuine_one(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    _, key_file = write_keys(tmp_path)
    genuine = genuine_unlock()
    poison: list[tuple[bytes, str | None]] = [  # payload, REJECTED reason (None: not delivered)
        (b"[" * 1000 + b"]" * 1000, "malformed"),
        (tampered(genuine_unlock(seq=2), sub="mallory"), "bad_signature"),
        (tampered(genuine_unlock(seq=3), door="back"), "bad_signature"),
        (genuine_unlock(seq=4, door="back"), "wrong_door"),
        (genuine_unlock(seq=5)[:-2] + "é".encode(), "malformed"),
        (b"\xff\xfe\x00{}", "malformed"),
        (b"x" * 1_000_000, None),  # above the controller's Maximum Packet Size: never sent
        (b"x" * 5000, "too_large"),
    ]
    proc = start_controller(mosquitto, key_file)
    publisher = raw_publisher(mosquitto)
    try:
        assert proc.stdout is not None
        # A retained status tells us the controller subscribed; its newline must not forge
        # an UNLOCK line.
        forged = b'{"state": "online"}\nUNLOCK door=front person=mallory seq=9'
        publisher.publish(f"{PREFIX}/front/status", forged, qos=1, retain=True)
        assert proc.stdout.readline() == (
            'STATUS {"state": "online"}\\nUNLOCK door=front person=mallory seq=9\n'
        )
        for payload, _ in poison:
            publisher.publish(f"{PREFIX}/front/unlock", payload, qos=1).wait_for_publish(WAIT_S)
        publisher.publish(f"{PREFIX}/front/unlock", genuine, qos=1).wait_for_publish(WAIT_S)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        publisher.publish(f"{PREFIX}/front/status", b"", qos=1, retain=True).wait_for_publish(1)
        publisher.disconnect()
        publisher.loop_stop()
        proc.kill()
        proc.wait(WAIT_S)
    expected = [f"REJECTED reason={reason}" for _, reason in poison if reason is not None]
    assert out.splitlines() == expected + [
        "UNLOCK door=front person=alice seq=1",
        "RELAY on",
        "RELAY off",
        "RELAY closed",
    ], err
    assert proc.returncode == 0 and "Traceback" not in err and "not handled" not in err


def controller(relay_device: object) -> Any:
    """The example's Controller with a real verifier, fed messages in-process."""
    module = load_controller()
    args = argparse.Namespace(prefix=PREFIX, door="front", count=None)
    relay = module.Relay(None, 60.0, device=relay_device)
    return module.Controller(args, UnlockVerifier(KEY.public(), "front"), relay)


class FailingOnceDevice(FakeDevice):
    """A relay whose first switch-on fails, as a GPIO line held by another process does."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def on(self) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(16, "GPIO busy\nUNLOCK forged")
        super().on()


def message(topic: str, payload: bytes) -> MQTTMessage:
    msg = MQTTMessage(topic=topic.encode())
    msg.payload = payload
    return msg


def test_a_failing_relay_costs_one_log_line_and_the_next_unlock_opens(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    device = FailingOnceDevice()
    ctl = controller(device)
    client = Client(CallbackAPIVersion.VERSION2)
    with caplog.at_level(logging.ERROR, logger="door_controller"):
        ctl.on_message(client, None, message(f"{PREFIX}/front/unlock", genuine_unlock(1)))
        ctl.on_message(client, None, message(f"{PREFIX}/front/unlock", genuine_unlock(2)))
    assert [r.getMessage() for r in caplog.records] == [
        f"message on '{PREFIX}/front/unlock' not handled: OSError(16, 'GPIO busy\\nUNLOCK forged')"
    ]
    assert device.is_on
    assert capsys.readouterr().out.splitlines() == [
        "UNLOCK door=front person=alice seq=1",
        "UNLOCK door=front person=alice seq=2",
    ]
    ctl.relay.close()


def test_an_oversized_unlock_is_rejected_before_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    ctl = controller(FakeDevice())
    client = Client(CallbackAPIVersion.VERSION2)
    ctl.on_message(client, None, message(f"{PREFIX}/front/unlock", b"[" * 1_000_000))
    ctl.on_message(client, None, message(f"{PREFIX}/front/unlock", genuine_unlock()))
    assert capsys.readouterr().out.splitlines() == [
        "REJECTED reason=too_large",
        "UNLOCK door=front person=alice seq=1",
    ]
    ctl.relay.close()
