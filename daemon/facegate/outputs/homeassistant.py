"""Home Assistant MQTT device discovery: each door appears in Home Assistant by itself.

One device per door, announced retained on `<discovery>/device/<device>_<door>/config`
(Home Assistant's device-based discovery: `dev`, `o`, `cmps`) with:

- `event` "Access": granted / denied / unknown / presentation_attack, one message per
  decision on `<prefix>/<door>/ha/access`, never retained (Home Assistant ignores
  retained events, and a replayed one would re-run automations);
- sensors "Last person" and "Last distance" (diagnostic) from the retained
  `<prefix>/<door>/ha/state`, and "Liveness prompt" from `<prefix>/<door>/prompt`;
- `binary_sensor` "Online" (connectivity) from the door's own status topic, whose MQTT
  will turns it `offline` when the daemon dies; the other entities take their
  availability from the same topic;
- opt-in `image` "Last face": a JPEG (<= 30 KB) of the face of each decision.

The discovery is republished at every connect and whenever Home Assistant announces
itself (`<discovery>/status` = `online`). A door that left facegate.yaml loses its device:
the retained configs of this unit are read back at connect and those of unknown doors are
cleared (an empty retained payload removes a device in Home Assistant).

Its own MQTT connection, built like the door bus's (TLS, credentials, backoff): Home
Assistant's traffic never waits behind the door bus's journal, and a problem here never
touches unlocks.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Final

from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from facegate import __version__
from facegate.config import FacegateConfig
from facegate.decisions import ClaimOutcome, Decision
from facegate.mqtt.client import _base_client as base_client  # the door bus's own builder
from facegate.outputs.base import Output

logger = logging.getLogger(__name__)

ORIGIN: Final = "facegate"
#: The liveness issue adds ReasonCode.PRESENTATION_ATTACK with this value.
PRESENTATION_ATTACK: Final = "presentation_attack"
EVENT_TYPES: Final = ("granted", "denied", "unknown", PRESENTATION_ATTACK)
#: Retained configs read back at connect larger than this are not ours (ours are ~3 KB).
MAX_CONFIG_BYTES: Final = 64 * 1024
_STATE_TEMPLATE: Final = "{{ value_json.state }}"


def object_id(device: str, door: str) -> str:
    """`<device>_<door>` as a discovery object id: Home Assistant allows [a-zA-Z0-9_-]."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in device) + (
        f"_{door}"
    )


def device_identifier(device: str, door: str) -> str:
    """The Home Assistant device identifier; `:` never occurs in a device or door name, so
    it tells exactly which unit and door a retained config belongs to."""
    return f"{ORIGIN}:{device}:{door}"


def event_type(decision: Decision) -> str:
    """The Home Assistant event type of a decision."""
    return PRESENTATION_ATTACK if str(decision.code) == PRESENTATION_ATTACK else decision.kind


class Topics:
    """Where one door's Home Assistant entities read from."""

    def __init__(self, prefix: str, discovery_prefix: str, device: str, door: str) -> None:
        self.config = f"{discovery_prefix}/device/{object_id(device, door)}/config"
        self.status = f"{prefix}/{door}/status"  # the door bus's, with its will
        self.prompt = f"{prefix}/{door}/prompt"
        self.access = f"{prefix}/{door}/ha/access"
        self.state = f"{prefix}/{door}/ha/state"
        self.face = f"{prefix}/{door}/ha/face"


def discovery_payload(
    device: str, door: str, topics: Topics, *, face_image: bool
) -> dict[str, Any]:
    """The device-based discovery config of one door (Home Assistant's documented schema)."""
    uid = f"{object_id(device, door)}_"
    available = [{"topic": topics.status, "value_template": _STATE_TEMPLATE}]
    components: dict[str, dict[str, Any]] = {
        "access": {
            "p": "event",
            "name": "Access",
            "unique_id": uid + "access",
            "state_topic": topics.access,
            "event_types": list(EVENT_TYPES),
            "icon": "mdi:door",
            "availability": available,
        },
        "last_person": {
            "p": "sensor",
            "name": "Last person",
            "unique_id": uid + "last_person",
            "state_topic": topics.state,
            "value_template": "{{ value_json.person }}",
            "icon": "mdi:account",
            "availability": available,
        },
        "last_distance": {
            "p": "sensor",
            "name": "Last distance",
            "unique_id": uid + "last_distance",
            "state_topic": topics.state,
            "value_template": "{{ value_json.distance }}",
            "state_class": "measurement",
            "suggested_display_precision": 3,
            "entity_category": "diagnostic",
            "icon": "mdi:ruler",
            "availability": available,
        },
        "prompt": {
            "p": "sensor",
            "name": "Liveness prompt",
            "unique_id": uid + "prompt",
            "state_topic": topics.prompt,
            "value_template": "{{ value_json.prompt }}",  # null renders None: unknown
            "icon": "mdi:message-text",
            "availability": available,
        },
        # No availability of its own: it shows the link itself, `off` when the daemon died.
        "online": {
            "p": "binary_sensor",
            "name": "Online",
            "unique_id": uid + "online",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": topics.status,
            "value_template": _STATE_TEMPLATE,
            "payload_on": "online",
            "payload_off": "offline",
        },
        # A component with only its platform removes the entity: turning face_image off
        # takes the image away from Home Assistant too.
        "last_face": {"p": "image"},
    }
    if face_image:
        components["last_face"] = {
            "p": "image",
            "name": "Last face",
            "unique_id": uid + "last_face",
            "image_topic": topics.face,
            "content_type": "image/jpeg",
            "availability": available,
        }
    return {
        "dev": {
            "ids": [device_identifier(device, door)],
            "name": f"{device} {door}",
            "mf": ORIGIN,
            "mdl": "face recognition door",
            "sw": __version__,
        },
        "o": {"name": ORIGIN, "sw": __version__},
        "cmps": components,
        "qos": 1,
    }


def state_payload(decision: Decision) -> dict[str, object]:
    """The retained last-decision state the sensors read; a stranger reads `unknown`."""
    return {
        "person": decision.person if decision.person is not None else "unknown",
        "distance": round(decision.distance, 4),
        "decision": decision.kind,
        "ts": decision.ts,
    }


def access_payload(decision: Decision) -> dict[str, object]:
    """One `event` entity message; every field but `event_type` becomes an attribute."""
    return {
        "event_type": event_type(decision),
        "person": decision.person,
        "distance": round(decision.distance, 4),
        "code": str(decision.code),
        "reason": decision.reason,
        "event_id": decision.event_id,
        "ts": decision.ts,
    }


def _dumps(payload: Mapping[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


class HomeAssistantOutput(Output):
    """Announces the doors to Home Assistant and feeds their entities."""

    name = "homeassistant"

    def __init__(self, config: FacegateConfig) -> None:
        ha = config.homeassistant
        self._device = config.device
        self._prefixes = (config.mqtt.topic_prefix, ha.discovery_prefix)
        self._face_image = ha.face_image
        self._status_topic = f"{ha.discovery_prefix}/status"
        self._config_filter = f"{ha.discovery_prefix}/device/+/config"
        self._topics = {door: self._topics_of(door) for door in config.door_ids}
        self._lock = threading.Lock()
        self._last_state: dict[str, bytes] = {}  # door -> retained state, resent at connect
        self._closed = False
        client_id = f"{config.mqtt.client_id or f'facegate-{config.device}'}-homeassistant"
        self._client = base_client(config.mqtt, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        mqtt = config.mqtt
        self._client.connect_async(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
        self._client.loop_start()

    def _topics_of(self, door: str) -> Topics:
        return Topics(*self._prefixes, self._device, door)

    # -- Output ----------------------------------------------------------------------------

    def decision(self, decision: Decision) -> None:
        topics = self._topics.get(decision.door)
        if topics is None:
            return
        state = _dumps(state_payload(decision))
        with self._lock:
            self._last_state[decision.door] = state
        if not self._client.is_connected():
            # Events are not queued: a late one would fire Home Assistant automations for a
            # visitor long gone. The state is sent at the next connect.
            logger.debug("Home Assistant link down: %s event not sent", decision.kind)
            return
        self._client.publish(topics.access, _dumps(access_payload(decision)), qos=1)
        self._client.publish(topics.state, state, qos=1, retain=True)
        if self._face_image and decision.snapshot is not None:
            self._client.publish(topics.face, decision.snapshot, qos=1)

    def claim_outcome(self, door: str, outcome: ClaimOutcome) -> None:
        """Claims have no entity: their decision (granted or denied) is the event."""

    def close(self) -> None:
        self._closed = True
        self._client.disconnect()
        self._client.loop_stop()

    # -- announcing ------------------------------------------------------------------------

    def announce(self) -> None:
        """Publish every door's discovery config (retained), then its last state."""
        for door, topics in self._topics.items():
            payload = discovery_payload(self._device, door, topics, face_image=self._face_image)
            self._client.publish(topics.config, _dumps(payload), qos=1, retain=True)
        with self._lock:
            states = dict(self._last_state)
        for door, state in states.items():
            self._client.publish(self._topics[door].state, state, qos=1, retain=True)

    def _on_connect(
        self,
        client: Client,
        userdata: object,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            logger.warning("Home Assistant link: broker refused the connection: %s", reason_code)
            return
        # noLocal: our own configs are not echoed back; the retained ones of this unit arrive
        # once, right after the subscription, and tell which doors were announced before.
        client.subscribe(
            [
                (self._status_topic, SubscribeOptions(qos=1)),
                (self._config_filter, SubscribeOptions(qos=1, noLocal=True)),
            ]
        )
        self.announce()
        logger.info("Home Assistant: announced %d door(s)", len(self._topics))

    def _on_message(self, client: Client, userdata: object, message: MQTTMessage) -> None:
        # paho's network thread: nothing may escape (it would end the thread).
        try:
            if message.topic == self._status_topic:
                self._on_birth(bytes(message.payload))
            elif message.retain:
                self._remove_if_stale(message.topic, bytes(message.payload))
        except Exception:
            logger.exception("Home Assistant: message on %r dropped", message.topic[:200])

    def _on_birth(self, payload: bytes) -> None:
        if payload.strip() == b"online":
            logger.info("Home Assistant is online: announcing the doors again")
            self.announce()

    def _remove_if_stale(self, topic: str, payload: bytes) -> None:
        """Clear a retained config of this unit for a door no longer configured."""
        door = self._announced_door(payload) if len(payload) <= MAX_CONFIG_BYTES else None
        if door is None or door in self._topics:
            return
        logger.info("Home Assistant: removing door %s (no longer in the config)", door)
        self._client.publish(topic, b"", qos=1, retain=True)
        self._client.publish(self._topics_of(door).state, b"", qos=1, retain=True)

    def _announced_door(self, payload: bytes) -> str | None:
        """The door a retained config announced for this unit, or None if it is not ours."""
        try:
            config = json.loads(payload)
            ids = config["dev"]["ids"]
            origin_name = config["o"]["name"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        if origin_name != ORIGIN or not isinstance(ids, list) or len(ids) != 1:
            return None
        origin, _, rest = str(ids[0]).partition(":")
        device, _, door = rest.partition(":")
        return door if origin == ORIGIN and device == self._device and door else None
