"""MQTT layer: signed expiring unlocks, journaled events, 1:1 verify requests.

The service talks to ``DoorBus``; ``MqttPublisher`` is the real one, ``RecordingDoorBus``
a fake for tests. Door controllers use ``UnlockVerifier``.
"""

from facegate.mqtt.bus import (
    DoorBus,
    RecordingDoorBus,
    VerifyHandler,
    VerifyRequest,
    build_unlock,
    new_event_id,
)
from facegate.mqtt.client import MqttPublisher, topic
from facegate.mqtt.journal import EntryKind, Journal, JournalEntry
from facegate.mqtt.requests import parse_verify_request
from facegate.mqtt.signing import (
    UnlockRejected,
    UnlockVerifier,
    VerifiedUnlock,
    canonical_json,
    load_door_keys,
    load_signing_key,
    sign,
    signature_valid,
)

__all__ = [
    "DoorBus",
    "EntryKind",
    "Journal",
    "JournalEntry",
    "MqttPublisher",
    "RecordingDoorBus",
    "UnlockRejected",
    "UnlockVerifier",
    "VerifiedUnlock",
    "VerifyHandler",
    "VerifyRequest",
    "build_unlock",
    "canonical_json",
    "load_door_keys",
    "load_signing_key",
    "new_event_id",
    "parse_verify_request",
    "sign",
    "signature_valid",
    "topic",
]
