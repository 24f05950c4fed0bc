"""The example door controller's relay: pulses extend, every exit path switches it off."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

from broker import MosquittoBroker
from facegate.config.mqtt import MqttConfig
from facegate.mqtt import MqttPublisher, new_event_id

CONTROLLER = Path(__file__).resolve().parent.parent / "scripts" / "door_controller_example.py"
KEY = bytes(range(32))
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


def test_sigterm_during_pulse_releases_relay(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_text(KEY.hex())
    key_file.chmod(0o600)
    config = MqttConfig.model_validate(
        {
            "host": mosquitto.host,
            "port": mosquitto.port,
            "topic_prefix": PREFIX,
            "client_id": "facegate-sigterm-test",
            "signing_key_file": key_file,
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
