#!/usr/bin/env python3
"""Benchmark `facegate run` against the issue-5 targets; prints one JSON object.

One daemon subprocess, a private mosquitto, and a camera that is an image folder holding
one file, `frame.jpg`, which the daemon re-reads at 10 fps (`loop: true`). The bench puts
a visitor in front of the camera by atomically replacing that file (os.replace).

- latency: "face appears" is the moment the face file is in place. The daemon's first
  frame with the face is captured at or after it (within one frame period), so the
  measured face-to-unlock time is an upper bound. "Unlock received" is the arrival of the
  unlock at a paho subscriber. confirm_frames 3, window 5, 10 fps, cooldown 0.
- empty-scene CPU: utime+stime of the daemon (all threads) from /proc/<pid>/stat over the
  given seconds, as a share of one core.
- RSS: VmRSS sampled every 10 s while residents and a stranger keep coming and going and
  the broker is stopped and restarted; growth = last sample - first sample after warm-up.
- events lost: every `decision ... event_id=` log line of the daemon against the events a
  persistent-session subscriber received, after broker restarts.
- stranger unlocks: unlocks for the non-enrolled person over the whole run.

Usage: scripts/bench_daemon.py [--rss-minutes 10] [--cpu-seconds 60] [--approaches 12]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from broker import MosquittoBroker, free_port  # noqa: E402
from scenes import (  # noqa: E402
    empty_frame,
    fit,
    photo,
    write_config,
    write_enrollment,
    write_unlock_key,
)

RESIDENTS = ("ben_afflek", "elton_john", "jerry_seinfeld", "mindy_kaling")
STRANGER = "madonna"
DOOR = "front"
FPS = 10
DECISION = re.compile(r"decision door=\S+ kind=(\S+) person=(\S+) .*event_id=([0-9a-f]+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _body(message: MQTTMessage) -> dict[str, Any]:
    """A JSON payload, or an unlock's claims (its JWS payload, read unverified)."""
    payload = bytes(message.payload)
    if message.topic.endswith("/unlock"):
        segment = payload.split(b".")[1] if payload.count(b".") == 2 else b""
        payload = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    body = json.loads(payload)
    if not isinstance(body, dict):
        raise ValueError("not an object")
    return body


class Collector:
    """Persistent-session MQTT v5 subscriber recording (topic, payload, arrival time)."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, dict[str, Any], float]] = []
        self.cond = threading.Condition()
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_connect = lambda c, *a: c.subscribe("facegate/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client: Client, userdata: object, message: MQTTMessage) -> None:
        now = time.time()
        try:
            body = _body(message)
        except ValueError:
            return
        with self.cond:
            self.messages.append((message.topic, body, now))
            self.cond.notify_all()

    def of(self, kind: str) -> list[tuple[dict[str, Any], float]]:
        with self.cond:
            return [(b, t) for topic, b, t in self.messages if topic == f"facegate/{DOOR}/{kind}"]

    def wait_unlock(self, person: str, after: float, timeout: float) -> float | None:
        """Arrival time of the first unlock for `person` issued after `after`."""

        def found() -> float | None:
            for body, at in self.of("unlock"):
                if body.get("sub") == person and body.get("iat", 0) >= after:
                    return at
            return None

        with self.cond:
            self.cond.wait_for(lambda: found() is not None, timeout)
        return found()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Camera:
    """The one-file image folder the daemon watches."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "frame.jpg"
        self.frames = {name: fit(photo(name)) for name in (*RESIDENTS, STRANGER)}
        self.frames["empty"] = empty_frame()
        self.show("empty")

    def show(self, name: str) -> float:
        """Put `name` in front of the camera; returns the time it is there."""
        tmp = self.path.with_suffix(".tmp.jpg")
        cv2.imwrite(str(tmp), self.frames[name])
        os.replace(tmp, self.path)
        return time.time()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait_log(log: Path, pattern: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(errors="replace")):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{pattern!r} not in {log}")


def measure_latency(camera: Camera, sub: Collector, approaches: int) -> dict[str, Any]:
    latencies: list[float] = []
    misses = 0
    for i in range(approaches):
        person = RESIDENTS[i % len(RESIDENTS)]
        camera.show("empty")
        time.sleep(1.5)  # longer than the decision window: the next approach starts fresh
        appeared = camera.show(person)
        arrived = sub.wait_unlock(person, appeared - 0.001, timeout=5.0)
        if arrived is None:
            misses += 1
        else:
            latencies.append(arrived - appeared)
    camera.show("empty")
    ms = sorted(round(x * 1000, 1) for x in latencies)
    return {
        "approaches": approaches,
        "unlocked": len(latencies),
        "missed": misses,
        "median_ms": statistics.median(ms) if ms else None,
        "min_ms": ms[0] if ms else None,
        "max_ms": ms[-1] if ms else None,
        "all_ms": ms,
    }


def measure_cpu(camera: Camera, pid: int, seconds: float) -> dict[str, Any]:
    camera.show("empty")
    time.sleep(3.0)
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    used, elapsed = cpu_seconds(pid) - start_cpu, time.monotonic() - start
    return {"seconds": round(elapsed, 1), "share_of_one_core": round(used / elapsed, 4)}


def soak(
    camera: Camera, broker: MosquittoBroker, pid: int, minutes: float, outages: int
) -> dict[str, Any]:
    """Visitors come and go; the broker goes away `outages` times; RSS every 10 s."""
    cycle = [*RESIDENTS, STRANGER]
    end = time.monotonic() + minutes * 60
    outage_at = [time.monotonic() + minutes * 60 * (k + 1) / (outages + 1) for k in range(outages)]
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    next_sample = t0
    i = 0
    while time.monotonic() < end:
        if outage_at and time.monotonic() >= outage_at[0]:
            outage_at.pop(0)
            broker.stop()
            for _ in range(10):  # 20 s outage with visitors
                camera.show(cycle[i % len(cycle)])
                i += 1
                time.sleep(1.0)
                camera.show("empty")
                time.sleep(1.0)
            broker.start()
        camera.show(cycle[i % len(cycle)])
        i += 1
        time.sleep(1.0)
        camera.show("empty")
        time.sleep(1.0)
        if time.monotonic() >= next_sample:
            samples.append((round(time.monotonic() - t0, 1), round(rss_mb(pid), 2)))
            next_sample += 10.0
    samples.append((round(time.monotonic() - t0, 1), round(rss_mb(pid), 2)))
    return {
        "minutes": minutes,
        "broker_outages": outages,
        "rss_first_mb": samples[0][1],
        "rss_last_mb": samples[-1][1],
        "rss_max_mb": max(s[1] for s in samples),
        "rss_growth_mb": round(samples[-1][1] - samples[0][1], 2),
        "rss_samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rss-minutes", type=float, default=10.0)
    parser.add_argument("--cpu-seconds", type=float, default=60.0)
    parser.add_argument("--approaches", type=int, default=12)
    parser.add_argument("--outages", type=int, default=2)
    parser.add_argument(
        "--with-outputs",
        action="store_true",
        help="also run Home Assistant discovery, metrics (free port) and the audit trail",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="facegate-bench-") as tmp:
        root = Path(tmp)
        (root / "journal").mkdir()
        broker = MosquittoBroker(root / "mosquitto")
        broker.start()
        try:
            write_unlock_key(root / "unlock.key")
            write_enrollment(root / "enrollment.yaml", {p: [DOOR] for p in RESIDENTS})
            camera = Camera(root / "camera")
            config = write_config(
                root / "facegate.yaml",
                port=broker.port,
                cameras=[{"door": DOOR, "source": "camera/", "fps": FPS, "loop": True}],
                recognition={"confirm_frames": 3, "window": 5, "cooldown_s": 0,
                             "unknown_event_interval_s": 1},
                mqtt_extra={"reconnect_max_s": 2},
                signing={"algorithm": "ed25519", "key_file": "unlock.key"},
            )  # fmt: skip
            if args.with_outputs:
                with config.open("a") as extra:
                    extra.write(
                        "homeassistant: {enabled: true, face_image: true}\n"
                        f"metrics: {{enabled: true, listen: '127.0.0.1:{free_port()}'}}\n"
                        "audit: {enabled: true, path: audit.db, snapshots: true}\n"
                    )
            sub = Collector(broker.port)
            log = root / "daemon.log"
            with log.open("wb") as out:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "facegate", "run", "--config", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                wait_log(log, "ready: models loaded", 60)
                rss_start = rss_mb(daemon.pid)
                latency = measure_latency(camera, sub, args.approaches)
                cpu = measure_cpu(camera, daemon.pid, args.cpu_seconds)
                soaked = soak(camera, broker, daemon.pid, args.rss_minutes, args.outages)
                camera.show("empty")
                daemon.send_signal(signal.SIGTERM)
                exit_code = daemon.wait(30)
            finally:
                if daemon.poll() is None:
                    daemon.kill()
                    daemon.wait()
            logged = [m.group(3) for m in DECISION.finditer(log.read_text(errors="replace"))]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                received = {body.get("event_id") for body, _ in sub.of("event")}
                if set(logged) <= received:
                    break
                time.sleep(0.2)
            unlocks = sub.of("unlock")
            sub.close()
        finally:
            broker.stop()
        result = {
            "host": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
            "latency_face_to_unlock": latency,
            "empty_scene_cpu": cpu,
            "rss_start_mb": round(rss_start, 2),
            "soak": soaked,
            "events_logged": len(logged),
            "events_lost": len(set(logged) - received),
            "unlocks_received": len(unlocks),
            "expired_unlocks_delivered": sum(1 for b, at in unlocks if at >= b["exp"]),
            "stranger_unlocks": sum(1 for b, _ in unlocks if b["sub"] == STRANGER),
            "daemon_exit": exit_code,
        }
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
