"""The admin's side: publish a bundle for a site, and see which device runs which version."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from facegate.config.mqtt import MqttConfig
from facegate.errors import FacegateError
from facegate.fleet.bundle import Manifest, peek_manifest
from facegate.fleet.transport import (
    CHUNK_KEY_CHARS,
    bundle_topic,
    chunk_topic,
    split_bundle,
)
from facegate.mqtt.client import _base_client
from facegate.mqtt.signing import JsonRejected, load_json_object

logger = logging.getLogger(__name__)

#: Room for the topic, properties and fixed header inside the broker's Maximum Packet Size.
PACKET_OVERHEAD_BYTES: Final = 1024
#: MQTT's own limit on a packet (the remaining length field), when the broker names none.
MQTT_MAX_PACKET_BYTES: Final = 268_435_455


class PublishError(FacegateError):
    """The broker could not be reached, or did not take the bundle in time."""


@dataclass(frozen=True)
class Published:
    site: str
    version: int
    sha256: str
    size: int
    chunks: int  # 0: sent whole
    max_message_bytes: int


class _Session:
    """A paho v5 connection that reports its CONNACK and collects retained messages."""

    def __init__(self, config: MqttConfig, role: str) -> None:
        self.client = _base_client(config, f"facegate-{role}-{os.getpid()}")
        self.connected = threading.Event()
        self.max_packet: int | None = None
        self.refused: str | None = None
        self.messages: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect_async(config.host, config.port, keepalive=config.keepalive_s)
        self.client.loop_start()

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
        else:
            self.max_packet = getattr(properties, "MaximumPacketSize", None)
        self.connected.set()

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        with self._lock:
            self.messages[message.topic] = bytes(message.payload)

    def wait_connected(self, timeout_s: float) -> None:
        if not self.connected.wait(timeout_s):
            raise PublishError("cannot reach the MQTT broker (mqtt: host, port, TLS?)")
        if self.refused is not None:
            raise PublishError(f"the broker refused the connection: {self.refused}")

    def retained(self, topics: list[str], wait_s: float) -> dict[str, bytes]:
        """What the broker holds retained on `topics` (filters), collected for `wait_s`."""
        self.client.subscribe([(t, 1) for t in topics])
        time.sleep(wait_s)
        with self._lock:
            return dict(self.messages)

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise PublishError(f"the broker did not acknowledge {topic} in {timeout_s:g} s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_bundle(
    config: MqttConfig,
    data: bytes,
    *,
    max_message_bytes: int | None = None,
    timeout_s: float = 30.0,
) -> Published:
    """Publish `data` retained (QoS 1) for its manifest's site, in chunks if the broker's
    Maximum Packet Size (or `max_message_bytes`) is smaller; old chunks are cleared."""
    manifest: Manifest = peek_manifest(data)
    site = manifest.site
    session = _Session(config, "bundle-publisher")
    try:
        session.wait_connected(timeout_s)
        broker_limit = (session.max_packet or MQTT_MAX_PACKET_BYTES) - PACKET_OVERHEAD_BYTES
        limit = min(broker_limit, max_message_bytes or broker_limit)
        prefix = config.topic_prefix
        topic = bundle_topic(prefix, site)
        stale = session.retained([f"{topic}/+/+"], 0.5)
        head, chunks = split_bundle(data, limit)
        sha = hashlib.sha256(data).hexdigest()
        for index, chunk in enumerate(chunks):
            session.publish(chunk_topic(prefix, site, sha, index), chunk, timeout_s)
        session.publish(topic, head, timeout_s)  # the head last: its chunks are all there
        mine = f"{topic}/{sha[:CHUNK_KEY_CHARS]}/"
        for old in stale:
            if not old.startswith(mine):
                session.publish(old, b"", timeout_s)  # an empty retained message clears it
    finally:
        session.close()
    return Published(site, manifest.version, sha, len(data), len(chunks), limit)


@dataclass(frozen=True)
class DeviceStatus:
    device: str
    status: str
    version: int
    people: int | None
    errors: int
    reason: str
    ts: float


def collect_status(config: MqttConfig, site: str, wait_s: float = 2.0) -> list[DeviceStatus]:
    """Every device's retained ack for `site` (which version it runs, and the last result)."""
    session = _Session(config, "bundle-status")
    try:
        session.wait_connected(wait_s + 10)
        pattern = f"{config.topic_prefix}/site/{site}/+/enrollment/ack"
        found = session.retained([pattern], wait_s)
    finally:
        session.close()
    devices = [_device_status(payload) for payload in found.values() if payload]
    return sorted((d for d in devices if d is not None), key=lambda d: d.device)


def _device_status(payload: bytes) -> DeviceStatus | None:
    try:
        ack = load_json_object(payload)
    except JsonRejected:
        return None
    get: Callable[[str, object], object] = ack.get
    errors = get("errors", [])
    version, people, ts = get("version", 0), get("people", None), get("ts", 0)
    return DeviceStatus(
        device=str(get("device", "?"))[:64],
        status=str(get("status", "?"))[:16],
        version=version if isinstance(version, int) else 0,
        people=people if isinstance(people, int) else None,
        errors=len(errors) if isinstance(errors, list) else 0,
        reason=str(get("reason", ""))[:120],
        ts=float(ts) if isinstance(ts, int | float) else 0.0,
    )


def status_json(devices: list[DeviceStatus]) -> list[dict[str, object]]:
    return [dict(d.__dict__) for d in devices]
