"""Issue 11 end to end: hostile messages, files and signals against the daemon as a process
with a real mosquitto. Each test attacks, then asserts that the resident who keeps coming
back to the door (a looping camera) is still unlocked afterwards.

One daemon serves the module (per pytest run): its camera loops hallway frames, a header-bomb
image and the resident; the broker holds retained poison on the verify topic before the
daemon starts.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker import MosquittoBroker
from door_site import (
    DOOR,
    RESIDENT,
    STRANGER,
    WAIT_S,
    Daemon,
    NotifySocket,
    Subscriber,
    face,
    hallway,
    make_site,
    topic,
)
from facegate.mqtt import UnlockVerifier

# The flood test asserts timing (unlock rhythm under the flood, watchdog gaps): `make test`
# runs it after the parallel part, with one other timing test at most (one per core), with a
# daemon of its own (the module fixture runs once per pytest run). The other tests run with
# the parallel part.

SECRETS: Final = ("s3cr@t", "hunter2", "tok-9f8e")
#: A raw `@` inside the password and secrets in the query: both leaked before (finding 7).
SECRET_URL: Final = (
    "rtsp://admin:s3cr@t@127.0.0.1:{port}/stream?user=admin&pwd=hunter2&token=tok-9f8e"
)
NESTED: Final = b"[" * 1000 + b"]" * 1000
#: The camera loop: 1 s of hallway, the resident for 1 s; at 10 fps one visit every 2 s.
LOOP_S: Final = 2.0
FLOOD: Final = 10_000
FLOOD_S: Final = 10.0


def header_bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 100-byte PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class Collector:
    """sd_notify messages collected on a background thread (with arrival times)."""

    def __init__(self, path: Path) -> None:
        self.socket = NotifySocket(path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.socket.collect(0.2)

    def pings(self, since: float) -> list[float]:
        return [at for at, m in list(self.socket.messages) if m == "WATCHDOG=1" and at >= since]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.socket.close()


@dataclass
class Door:
    broker: MosquittoBroker
    daemon: Daemon
    sub: Subscriber
    notify: Collector
    config: Path
    verifier: UnlockVerifier

    def unlocks_after(self, after: float) -> list[float]:
        """Arrival times (time.time()) of valid resident unlocks after `after`."""
        return [
            m.at for m in self.sub.on("unlock") if m.at >= after and m.claims()["sub"] == RESIDENT
        ]

    def assert_resident_still_unlocked(self, after: float, within_s: float = 3 * LOOP_S) -> None:
        self.sub.wait_for(
            lambda s: bool(self.unlocks_after(after)),
            timeout=within_s + WAIT_S,  # generous bound; the flood test measures latency
            what=f"a resident unlock after t={after:.1f}",
        )
        assert self.daemon.proc.poll() is None, self.daemon.tail()

    def request(self, payload: bytes, retain: bool = False) -> None:
        self.sub.client.publish(topic("verify"), payload, qos=1, retain=retain).wait_for_publish(
            WAIT_S
        )


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    root = tmp_path_factory.mktemp("hardening")
    with MosquittoBroker(root / "mosquitto") as broker:
        site = make_site(
            root / "site",
            broker.port,
            people={RESIDENT: [DOOR]},
            scene=hallway(10) + face(RESIDENT, 10),
        )
        # Sorted between the hallway and the resident: read in every loop.
        (site.camera / "000005b.png").write_bytes(header_bomb_png())
        # A second door whose camera URL carries secrets and answers nothing (finding 7).
        text = site.config.read_text()
        front = next(line for line in text.splitlines() if "door: 'front'" in line)
        back = f"  - {{door: 'back', source: '{SECRET_URL.format(port=closed_port())}'}}"
        site.config.write_text(text.replace(front, front + "\n" + back))
        # Not the verify topic: recording 10,000 flood messages would load the test itself.
        watched = [topic(kind) for kind in ("unlock", "event", "verify/result", "status")]
        sub = Subscriber(broker.host, broker.port, watched)
        # Retained poison and a retained (old) claim, waiting for the daemon's subscription.
        for payload in (NESTED, b'{"request_id": "retained-claim", "identity": "x"}'):
            sub.client.publish(topic("verify"), payload, qos=1, retain=True).wait_for_publish(5)
        notify = Collector(root / "notify.sock")
        daemon = Daemon(site.config, env={"NOTIFY_SOCKET": str(notify.socket.path)})
        try:
            daemon.wait_ready()
            yield Door(broker, daemon, sub, notify, site.config, UnlockVerifier(site.key, DOOR))
            assert daemon.terminate() == 0
        finally:
            daemon.kill()
            sub.close()
            notify.close()


def test_retained_poison_and_old_claims_are_ignored_at_connect(door: Door) -> None:
    door.assert_resident_still_unlocked(after=0.0)
    log = door.daemon.log()
    assert "retained-claim" not in log  # never taken as a fresh claim
    assert "Traceback" not in log


def test_nested_brackets_on_verify_do_not_kill_the_link(door: Door) -> None:
    attacked = time.time()
    for _ in range(3):
        door.request(NESTED)
    door.request(b'{"request_id": "after-poison", "identity": "%s"}' % RESIDENT.encode())
    door.sub.wait_for(
        lambda s: any(m.json()["request_id"] == "after-poison" for m in s.on("verify/result")),
        what="the verify result of a claim sent after the poison",
    )
    door.assert_resident_still_unlocked(after=attacked)
    assert "Traceback" not in door.daemon.log()


def test_an_identity_with_a_newline_forges_no_log_line(door: Door) -> None:
    forged = "x\n2026-01-01 00:00:00 INFO facegate.service: decision door=front kind=granted"
    payload = json.dumps({"request_id": "forge", "identity": forged}).encode()
    attacked = time.time()
    door.request(payload)
    door.assert_resident_still_unlocked(after=attacked)
    lines = door.daemon.log().splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines)


@pytest.mark.serial
def test_a_flood_of_verify_requests_never_delays_the_door(door: Door) -> None:
    """10,000 requests in 10 s: resident unlocks keep their rhythm, watchdog pings keep
    coming, memory stays bounded."""
    # The usual rhythm: two consecutive visits' unlocks just before the flood, one loop
    # apart (in `make test` the door has only just started: this waits about one loop).
    window = 2 * LOOP_S
    door.sub.wait_for(
        lambda s: len(door.unlocks_after(time.time() - window)) >= 2,
        timeout=window + WAIT_S,
        what="steady unlocks before the flood",
    )
    baseline = door.unlocks_after(time.time() - window)
    assert len(baseline) >= 2, "no steady unlocks before the flood"
    rss_before = rss_mb(door.daemon.pid)

    publisher = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    publisher.connect(door.broker.host, door.broker.port)
    publisher.loop_start()
    flood_start, flood_mono = time.time(), time.monotonic()
    try:
        for n in range(FLOOD):
            body = b'{"request_id": "flood-%d", "identity": "%s"}' % (n, RESIDENT.encode())
            publisher.publish(topic("verify"), body, qos=1)
            # Spread evenly over FLOOD_S.
            lag = flood_mono + (n + 1) * FLOOD_S / FLOOD - time.monotonic()
            if lag > 0:
                time.sleep(lag)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    flood_end = time.time()
    # The first visit after the flood closes the last gap (at most one loop away).
    door.sub.wait_for(
        lambda s: bool(door.unlocks_after(flood_end)),
        timeout=LOOP_S + WAIT_S,
        what="an unlock after the flood",
    )

    during = door.unlocks_after(flood_start)
    during = [at for at in during if at <= flood_end + LOOP_S]
    gaps = [b - a for a, b in zip([flood_start, *during], during, strict=False)]
    usual = max(b - a for a, b in zip(baseline, baseline[1:], strict=False))
    # One visit every LOOP_S: an unlock at each visit, no gap more than 1 s over the usual.
    assert len(during) >= (flood_end - flood_start) / LOOP_S - 1, (during, baseline)
    assert max(gaps) <= usual + 1.0, (gaps, usual)

    pings = door.notify.pings(since=flood_mono)
    ping_gaps = [b - a for a, b in zip([flood_mono, *pings], pings, strict=False)]
    assert pings and max(ping_gaps) <= 5.0, ping_gaps
    assert rss_mb(door.daemon.pid) - rss_before < 40, "memory grew under the flood"
    log = door.daemon.log()
    assert "dropped since the last report" in log  # the flood was refused, and said so
    print(
        f"flood: {len(during)} unlocks, max gap {max(gaps):.2f} s (usual {usual:.2f} s), "
        f"max watchdog gap {max(ping_gaps):.2f} s, RSS {rss_before:.0f} -> "
        f"{rss_mb(door.daemon.pid):.0f} MB"
    )


def test_reload_with_hostile_config_keeps_the_door(door: Door) -> None:
    good = door.config.read_text()
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    hostile = {
        "deep nesting": "[" * 5000 + "]" * 5000 + "\n",
        "alias bomb": bomb,
        "reconnect .inf": good.replace("mqtt: {", "mqtt: {reconnect_max_s: .inf, "),
    }
    for name, text in hostile.items():
        start = len(door.daemon.log())
        door.config.write_text(text)
        sent = time.monotonic()
        door.daemon.proc.send_signal(signal.SIGHUP)
        door.daemon.wait_log(r"reload failed", 10.0, start=start)
        took = time.monotonic() - sent
        assert took < 5.0, f"{name}: reload took {took:.1f} s"
        assert door.daemon.proc.poll() is None, f"{name} killed the daemon"
    door.config.write_text(good)
    reloaded = time.time()
    door.daemon.proc.send_signal(signal.SIGHUP)
    door.assert_resident_still_unlocked(after=reloaded)


def test_reload_with_enrollment_on_dev_zero_keeps_the_door(door: Door) -> None:
    enrollment = door.config.parent / "enrollment.yaml"
    kept = enrollment.with_suffix(".kept")
    enrollment.rename(kept)
    try:
        enrollment.symlink_to("/dev/zero")
        start = len(door.daemon.log())
        door.daemon.proc.send_signal(signal.SIGHUP)
        door.daemon.wait_log(r"reload failed", 10.0, start=start)
    finally:
        enrollment.unlink()
        kept.rename(enrollment)
    door.assert_resident_still_unlocked(after=time.time())


def test_a_header_bomb_in_the_camera_folder_is_skipped(door: Door) -> None:
    log = door.daemon.log()
    assert "000005b.png" in log  # named once as skipped
    restarts = [line for line in log.splitlines() if "camera front" in line and "reconnect" in line]
    assert restarts == []  # the source was never restarted because of it
    door.assert_resident_still_unlocked(after=time.time())


def test_camera_url_secrets_never_reach_the_log(door: Door) -> None:
    door.assert_resident_still_unlocked(after=time.time())  # front works beside it
    log = door.daemon.log()
    assert "camera back" in log  # the failing camera was reported...
    for secret in SECRETS:
        assert secret not in log  # ...without its password or token


def test_no_stranger_was_ever_unlocked(door: Door) -> None:
    assert all(m.claims()["sub"] != STRANGER for m in door.sub.on("unlock"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
