"""The device side of the fleet: take bundles from the broker, apply them, acknowledge.

Runs on its own paho connection (same broker, credentials and TLS as the door bus). On
each complete bundle: verify (signature, site, sha256 of every file), refuse a version
not newer than the running one, unpack atomically (EnrollmentStore), then ask the service
for its reload, which re-embeds the new photos with this device's models. The ack on
`<prefix>/site/<site>/<device>/enrollment/ack` (retained, QoS 1) follows the reload and
says what the device runs: version, sha256, people, and the photos it could not use.

Every refusal is one log line, and nothing on disk has changed (the checks all happen
before the first write). The paho thread never sees an exception from here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from facegate.config import FacegateConfig
from facegate.enroll import EnrollReport
from facegate.fleet.bundle import Bundle, BundleRejected, read_bundle
from facegate.fleet.store import EnrollmentStore, Installed
from facegate.fleet.transport import CHUNK_KEY_CHARS, Reassembler, ack_topic, bundle_topic
from facegate.keys import KeyType, load_public_key
from facegate.mqtt.client import _base_client

logger = logging.getLogger(__name__)

PhotoError = dict[str, str]  # {"image": "photos/<id>/<name>", "reason": "..."}
ACK_QOS: Final = 1
LAST_ACK_NAME: Final = "last-ack.json"


def fleet_dir(config: FacegateConfig) -> Path:
    """Where bundles unpack: fleet.dir, else a `fleet` folder beside the enrollment file."""
    assert config.fleet is not None
    return config.fleet.dir or config.enrollment.parent / "fleet"


class FleetAgent:
    """Subscribes to the site's bundle topic; see the module doc. Thread-safe."""

    def __init__(self, config: FacegateConfig, request_reload: Callable[[], None]) -> None:
        fleet = config.fleet
        assert fleet is not None
        self._site = fleet.site
        self._device = config.device
        self._prefix = config.mqtt.topic_prefix
        self._max_bytes = fleet.max_bundle_bytes
        self._key = load_public_key(
            fleet.admin_public_key_file, KeyType.ED25519, "fleet.admin_public_key_file"
        )
        self._store = EnrollmentStore(config.enrollment, fleet_dir(config))
        self._request_reload = request_reload
        self._reassembler = Reassembler(self._max_bytes)
        self._lock = threading.Lock()
        self._pending: Bundle | None = None  # applied, waiting for the reload's report
        client_id = f"{config.mqtt.client_id or f'facegate-{config.device}'}-fleet"
        self._client = _base_client(config.mqtt, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._target = (config.mqtt.host, config.mqtt.port, config.mqtt.keepalive_s)
        self._started = False

    @property
    def installed(self) -> Installed:
        return self._store.installed()

    def start(self) -> None:
        host, port, keepalive = self._target
        self._client.connect_async(host, port, keepalive=keepalive)
        self._client.loop_start()
        self._started = True
        installed = self.installed
        logger.info(
            "fleet: site %s, running bundle version %d; listening on %s",
            self._site, installed.version, bundle_topic(self._prefix, self._site),
        )  # fmt: skip

    def close(self) -> None:
        if self._started:
            self._started = False
            self._client.disconnect()
            self._client.loop_stop()

    # -- the service's reload reports back -------------------------------------------------

    def reloaded(self, report: EnrollReport) -> None:
        """The reload after an applied bundle finished: acknowledge what now runs."""
        with self._lock:
            bundle, self._pending = self._pending, None
        if bundle is None:
            return  # a SIGHUP reload, not ours
        errors = photo_errors(report)
        logger.info(
            "fleet: bundle version %d active: %d people, %d photo(s) unusable",
            bundle.manifest.version, report.enrolled, len(errors),
        )  # fmt: skip
        self._ack("applied", people=report.enrolled, errors=errors)

    def reload_failed(self, message: str) -> None:
        with self._lock:
            bundle, self._pending = self._pending, None
        if bundle is not None:
            self._ack("failed", reason=f"reload failed: {message}"[:500])

    # -- MQTT --------------------------------------------------------------------------------

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            logger.warning("fleet: broker refused the connection: %s", reason_code)
            return
        topic = bundle_topic(self._prefix, self._site)
        client.subscribe([(topic, 1), (f"{topic}/+/+", 1)])
        self._republish_ack()

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        try:
            self._take(message.topic, bytes(message.payload))
        except Exception:
            logger.exception("fleet: message on %r dropped", message.topic[:200])

    def _take(self, topic: str, payload: bytes) -> None:
        base = bundle_topic(self._prefix, self._site)
        if not payload:
            return  # a cleared retained message (an old bundle's chunk)
        try:
            if topic == base:
                data = self._reassembler.head(payload)
            else:
                key, _, index = topic[len(base) + 1 :].partition("/")
                if len(key) != CHUNK_KEY_CHARS or not index.isdigit() or len(index) > 6:
                    return
                data = self._reassembler.chunk(key, int(index), payload)
            if data is not None:
                self._consider(data)
        except BundleRejected as exc:
            self._refuse(exc)

    def _consider(self, data: bytes) -> None:
        bundle = read_bundle(data, self._key, self._site, self._max_bytes)
        installed = self.installed
        if bundle.sha256 == installed.sha256:
            logger.debug("fleet: bundle version %d already running", installed.version)
            return
        version = bundle.manifest.version
        if version <= installed.version:
            raise BundleRejected("rollback", f"version {version} <= running {installed.version}")
        try:
            self._store.apply(bundle)
        except OSError as exc:
            logger.error(
                "fleet: bundle version %d NOT applied, cannot unpack: %s; enrollment unchanged",
                version, exc,
            )  # fmt: skip
            self._ack("failed", reason=f"unpack: {exc}", offered=version)
            return
        logger.info(
            "fleet: bundle version %d (%s) unpacked; reloading", version, bundle.sha256[:12]
        )
        with self._lock:
            self._pending = bundle
        self._request_reload()

    def _refuse(self, exc: BundleRejected) -> None:
        installed = self.installed
        logger.warning(
            "fleet: bundle refused (%s): %s; still running version %d, enrollment unchanged",
            exc.reason, exc.detail, installed.version,
        )  # fmt: skip
        self._ack("refused", reason=f"{exc.reason}: {exc.detail}"[:500])

    def _ack(
        self,
        status: str,
        *,
        reason: str | None = None,
        people: int | None = None,
        errors: list[PhotoError] | None = None,
        offered: int | None = None,
    ) -> None:
        installed = self.installed
        payload: dict[str, object] = {
            "device": self._device,
            "site": self._site,
            "status": status,
            "version": installed.version,
            "sha256": installed.sha256,
            "ts": round(time.time(), 3),
        }
        if people is not None:
            payload["people"] = people
        if errors is not None:
            payload["errors"] = errors
        if reason is not None:
            payload["reason"] = reason
        if offered is not None:
            payload["offered_version"] = offered
        self._publish_ack(payload)

    def _publish_ack(self, payload: dict[str, object]) -> None:
        text = json.dumps(payload)
        topic = ack_topic(self._prefix, self._site, self._device)
        self._client.publish(topic, text, qos=ACK_QOS, retain=True)
        try:  # kept, so a restarted daemon re-announces the same (the broker may have lost it)
            (self._store.dir / LAST_ACK_NAME).write_text(text)
        except OSError as exc:
            logger.debug("fleet: last ack not kept: %s", exc)

    def _republish_ack(self) -> None:
        """At each connect: the last ack, or (none yet, or it predates a crash) what runs."""
        installed = self.installed
        try:
            last = json.loads((self._store.dir / LAST_ACK_NAME).read_text())
        except (OSError, ValueError):
            last = None
        if isinstance(last, dict) and last.get("sha256") == installed.sha256:
            self._client.publish(
                ack_topic(self._prefix, self._site, self._device), json.dumps(last),
                qos=ACK_QOS, retain=True,
            )  # fmt: skip
        else:
            self._ack("running")


def photo_errors(report: EnrollReport) -> list[PhotoError]:
    """Each photo the enrollment could not use, named as in the bundle (photos/<id>/<n>)."""
    errors = []
    for person in report.people:
        for rejection in person.rejected:
            image = rejection.image
            at = image.rfind("/photos/")
            errors.append(
                {"image": image[at + 1 :] if at >= 0 else image, "reason": rejection.reason}
            )
    return errors


def start_fleet(config: FacegateConfig, request_reload: Callable[[], None]) -> FleetAgent | None:
    """The fleet agent of a device with `fleet:` in its config, started; else None."""
    if config.fleet is None:
        return None
    agent = FleetAgent(config, request_reload)
    agent.start()
    return agent
