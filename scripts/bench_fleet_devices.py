#!/usr/bin/env python3
"""Issue 16 target: N simulated light devices ack one bundle through one mosquitto.

Each light device is a paho MQTT v5 client doing what a real device does with a bundle,
short of embedding: subscribe to the site's retained bundle topic (and its chunks),
reassemble, verify (admin's Ed25519 signature, site, sha256 of every file: read_bundle),
and publish a retained QoS 1 ack. The devices run in WORKERS processes (paho threads each),
all connected and subscribed before the bundle is published; the clock runs from the
start of `facegate bundle publish`'s work (publish_bundle) to the last ack received by a
collector. A private mosquitto on 127.0.0.1; the bundle is the 5-celebrity training set.

    .venv/bin/python scripts/bench_fleet_devices.py --devices 500 > bench/out/fleet.json

Prints one JSON object. The machine is shared: numbers are noisy, run it more than once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from broker import MosquittoBroker  # noqa: E402
from facegate.config.mqtt import MqttConfig  # noqa: E402
from facegate.fleet.bundle import BundleRejected, build_bundle, read_bundle  # noqa: E402
from facegate.fleet.publish import publish_bundle  # noqa: E402
from facegate.fleet.transport import Reassembler, ack_topic, bundle_topic  # noqa: E402
from facegate.keys import KeyType, PrivateKey, PublicKey  # noqa: E402
from scenes import write_enrollment  # noqa: E402

SITE = "bench"
PREFIX = "facegate"
PEOPLE = ["ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling"]


class LightDevice:
    """One simulated device: reassemble, verify, ack."""

    def __init__(self, name: str, port: int, key: PublicKey, ready: threading.Semaphore) -> None:
        self.name = name
        self.key = key
        self.reassembler = Reassembler(256 * 1024 * 1024)
        self.client = Client(
            CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.ready = ready
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: ready.release()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()

    def _on_connect(self, client: Client, *args: object) -> None:
        topic = bundle_topic(PREFIX, SITE)
        client.subscribe([(topic, 1), (f"{topic}/+/+", 1)])

    def _on_message(self, client: Client, userdata: object, message: MQTTMessage) -> None:
        base = bundle_topic(PREFIX, SITE)
        try:
            if message.topic == base:
                data = self.reassembler.head(bytes(message.payload))
            else:
                key, _, index = message.topic[len(base) + 1 :].partition("/")
                data = self.reassembler.chunk(key, int(index), bytes(message.payload))
            if data is None:
                return
            bundle = read_bundle(data, self.key, SITE)
            ack = {"device": self.name, "status": "applied", "version": bundle.manifest.version,
                   "sha256": bundle.sha256, "people": len(PEOPLE), "errors": []}  # fmt: skip
        except BundleRejected as exc:
            ack = {"device": self.name, "status": "refused", "reason": exc.reason}
        client.publish(ack_topic(PREFIX, SITE, self.name), json.dumps(ack), qos=1, retain=True)


def worker(names: list[str], port: int, key_bytes: bytes, conn: Any) -> None:
    key = PublicKey(KeyType.ED25519, key_bytes)
    ready = threading.Semaphore(0)
    devices = [LightDevice(name, port, key, ready) for name in names]
    for _ in devices:
        ready.acquire(timeout=60)
    conn.send("ready")
    conn.recv()  # "stop"
    for device in devices:
        device.client.disconnect()
        device.client.loop_stop()


class Collector:
    def __init__(self, port: int) -> None:
        self.acks: dict[str, float] = {}
        self.refused = 0
        self.cond = threading.Condition()
        self.client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(
            f"{PREFIX}/site/{SITE}/+/enrollment/ack", 1
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.wait(30)

    def _on_message(self, client: Client, userdata: object, message: MQTTMessage) -> None:
        now = time.time()
        ack = json.loads(message.payload)
        with self.cond:
            if ack.get("status") == "applied":
                self.acks.setdefault(ack["device"], now)
            else:
                self.refused += 1
            self.cond.notify_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=120)
    args = parser.parse_args()
    admin = PrivateKey.generate(KeyType.ED25519)
    with tempfile.TemporaryDirectory(prefix="facegate-fleet-bench-") as tmp:
        root = Path(tmp)
        enrollment = write_enrollment(root / "enrollment.yaml", {p: ["front"] for p in PEOPLE})
        data = build_bundle(enrollment, admin, SITE, version=1)
        with MosquittoBroker(root / "mosquitto") as broker:
            names = [f"dev{i:04d}" for i in range(args.devices)]
            pipes, procs = [], []
            ctx = mp.get_context("spawn")
            started = time.monotonic()
            for w in range(args.workers):
                parent, child = ctx.Pipe()
                share = names[w :: args.workers]
                proc = ctx.Process(
                    target=worker, args=(share, broker.port, admin.public().material, child)
                )
                proc.start()
                pipes.append(parent)
                procs.append(proc)
            for pipe in pipes:
                assert pipe.poll(args.timeout_s) and pipe.recv() == "ready"
            connect_s = time.monotonic() - started
            collector = Collector(broker.port)
            t0 = time.time()
            mqtt = MqttConfig(host="127.0.0.1", port=broker.port, signing_key_file=Path("-"))
            published = publish_bundle(mqtt, data)
            publish_s = time.time() - t0
            with collector.cond:
                collector.cond.wait_for(
                    lambda: len(collector.acks) + collector.refused >= args.devices, args.timeout_s
                )
                acks = dict(collector.acks)
            for pipe in pipes:
                pipe.send("stop")
            for proc in procs:
                proc.join(30)
            collector.client.disconnect()
            collector.client.loop_stop()
    latencies = sorted(at - t0 for at in acks.values())
    result = {
        "devices": args.devices,
        "workers": args.workers,
        "bundle_bytes": len(data),
        "bundle_chunks": published.chunks,
        "connect_and_subscribe_s": round(connect_s, 2),
        "publish_s": round(publish_s, 3),
        "acked": len(acks),
        "refused": collector.refused,
        "all_acked_s": round(latencies[-1], 2) if len(acks) == args.devices else None,
        "ack_median_s": round(statistics.median(latencies), 2) if latencies else None,
        "ack_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else None,
        "target_s": 30,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["all_acked_s"] is not None and result["all_acked_s"] <= 30 else 1


if __name__ == "__main__":
    raise SystemExit(main())
