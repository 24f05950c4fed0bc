"""MQTT layer: signed expiring unlocks, journaled events, 1:1 verify requests.

The service talks to ``DoorBus``; ``MqttPublisher`` is the real one, ``RecordingDoorBus``
a fake for tests. Door controllers use ``UnlockVerifier``.
"""

from facegate.mqtt.bus import (
    DoorBus,
    RecordingDoorBus,
    SignedUnlock,
    VerifyHandler,
    VerifyRequest,
    build_unlock,
    new_event_id,
)
from facegate.mqtt.client import MqttPublisher, topic
from facegate.mqtt.journal import EntryKind, Journal, JournalEntry
from facegate.mqtt.requests import parse_verify_request
from facegate.mqtt.signing import (
    Liveness,
    UnlockRejected,
    UnlockVerifier,
    VerifiedUnlock,
    load_door_keys,
    sign_unlock,
)

__all__ = [
    "DoorBus",
    "EntryKind",
    "Journal",
    "JournalEntry",
    "Liveness",
    "MqttPublisher",
    "RecordingDoorBus",
    "SignedUnlock",
    "UnlockRejected",
    "UnlockVerifier",
    "VerifiedUnlock",
    "VerifyHandler",
    "VerifyRequest",
    "build_unlock",
    "load_door_keys",
    "new_event_id",
    "parse_verify_request",
    "sign_unlock",
    "topic",
]
