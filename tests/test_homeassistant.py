"""Home Assistant MQTT device discovery against a real mosquitto (issue 15, part 1).

The payloads are checked field by field against Home Assistant's documented device-based
discovery schema (required `dev` with identifiers, `o` with a name, `cmps` whose entries
carry `p` and, unless they only remove an entity, a `unique_id`; what each platform needs),
and exactly against the config this project ships. Timings: discovery within 1 s of the
connect and of Home Assistant's birth message."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from broker import MosquittoBroker
from door_site import (
    DOOR,
    RESIDENT,
    STRANGER,
    Daemon,
    Subscriber,
    face,
    hallway,
    make_site,
    topic,
)
from facegate.config import FacegateConfig, load_config
from facegate.config.outputs import AuditConfig, HomeAssistantConfig
from facegate.decisions import Decision, ReasonCode
from facegate.outputs.homeassistant import (
    EVENT_TYPES,
    HomeAssistantOutput,
    Topics,
    discovery_payload,
)
from facegate.pipeline import wants_face_snapshots
from facegate.snapshots import face_jpeg
from scenes import write_config, write_key

DEVICE = "test"
PREFIX = "homeassistant"
CONFIG_TOPIC = f"{PREFIX}/device/{DEVICE}_{DOOR}/config"
VISIBLE_S = 1.0  # the target for both the connect and the birth message
# Home Assistant's discovery topic matcher (components/mqtt/discovery.py, TOPIC_MATCHER).
HA_TOPIC = re.compile(r"^[^/]+/(?P<component>\w+)/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config$")
ENTITY_PLATFORMS = {"event", "sensor", "binary_sensor", "image"}


def check_ha_schema(topic_name: str, payload: dict[str, Any]) -> None:
    """What Home Assistant's DEVICE_DISCOVERY_SCHEMA and the platform schemas require."""
    match = HA_TOPIC.match(topic_name)
    assert match is not None and match.group("component") == "device", topic_name
    assert set(payload) <= {"dev", "o", "cmps", "qos", "availability", "state_topic"}
    dev, origin, components = payload["dev"], payload["o"], payload["cmps"]
    assert dev["ids"] and all(isinstance(i, str) for i in dev["ids"])
    assert isinstance(dev["name"], str) and isinstance(origin["name"], str)
    assert payload["qos"] in (0, 1, 2)
    unique_ids = []
    for key, component in components.items():
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", key), key
        platform = component["p"]
        assert platform in ENTITY_PLATFORMS, platform
        if len(component) == 1:  # only the platform: removes the entity
            continue
        unique_ids.append(component["unique_id"])
        for available in component.get("availability", []):
            assert set(available) <= {"topic", "value_template", "payload_available",
                                      "payload_not_available"} and available["topic"]  # fmt: skip
        if platform == "event":
            assert component["state_topic"] and component["event_types"]
        elif platform in ("sensor", "binary_sensor"):
            assert component["state_topic"]
        elif platform == "image":
            assert ("image_topic" in component) != ("url_topic" in component)
        if component.get("entity_category") is not None:
            assert component["entity_category"] in ("config", "diagnostic")
    assert len(unique_ids) == len(set(unique_ids))


def expected_config(face_image: bool) -> dict[str, Any]:
    """The exact discovery config of door `front` of unit `test` (prefix facegate)."""
    status = f"facegate/{DOOR}/status"
    state = f"facegate/{DOOR}/ha/state"
    available = [{"topic": status, "value_template": "{{ value_json.state }}"}]
    uid = f"{DEVICE}_{DOOR}_"
    config: dict[str, Any] = {
        "dev": {
            "ids": [f"facegate:{DEVICE}:{DOOR}"],
            "name": f"{DEVICE} {DOOR}",
            "mf": "facegate",
            "mdl": "face recognition door",
            "sw": "0.1.0",
        },
        "o": {"name": "facegate", "sw": "0.1.0"},
        "qos": 1,
        "cmps": {
            "access": {"p": "event", "name": "Access", "unique_id": uid + "access",
                       "state_topic": f"facegate/{DOOR}/ha/access",
                       "event_types": ["granted", "denied", "unknown", "presentation_attack"],
                       "icon": "mdi:door", "availability": available},
            "last_person": {"p": "sensor", "name": "Last person", "unique_id": uid + "last_person",
                            "state_topic": state, "value_template": "{{ value_json.person }}",
                            "icon": "mdi:account", "availability": available},
            "last_distance": {"p": "sensor", "name": "Last distance",
                              "unique_id": uid + "last_distance", "state_topic": state,
                              "value_template": "{{ value_json.distance }}",
                              "state_class": "measurement", "suggested_display_precision": 3,
                              "entity_category": "diagnostic", "icon": "mdi:ruler",
                              "availability": available},
            "prompt": {"p": "sensor", "name": "Liveness prompt", "unique_id": uid + "prompt",
                       "state_topic": f"facegate/{DOOR}/prompt",
                       "value_template": "{{ value_json.prompt }}", "icon": "mdi:message-text",
                       "availability": available},
            "online": {"p": "binary_sensor", "name": "Online", "unique_id": uid + "online",
                       "device_class": "connectivity", "entity_category": "diagnostic",
                       "state_topic": status, "value_template": "{{ value_json.state }}",
                       "payload_on": "online", "payload_off": "offline"},
            "last_face": {"p": "image"},
        },
    }  # fmt: skip
    if face_image:
        config["cmps"]["last_face"] = {
            "p": "image", "name": "Last face", "unique_id": uid + "last_face",
            "image_topic": f"facegate/{DOOR}/ha/face", "content_type": "image/jpeg",
            "availability": available,
        }  # fmt: skip
    return config


def ha_config(
    root: Path, port: int, doors: tuple[str, ...] = (DOOR,), *, face_image: bool = False
) -> FacegateConfig:
    root.mkdir(parents=True, exist_ok=True)
    write_key(root / "hmac.key")
    path = write_config(
        root / "facegate.yaml",
        port=port,
        cameras=[{"door": door, "source": f"{door}/"} for door in doors],
        device=DEVICE,
    )
    with path.open("a") as file:
        file.write(f"homeassistant: {{enabled: true, face_image: {str(face_image).lower()}}}\n")
    return load_config(path)


def decision(kind: str = "granted", person: str | None = RESIDENT, **extra: Any) -> Decision:
    code = {"granted": ReasonCode.MATCH, "unknown": ReasonCode.UNKNOWN_FACE}.get(
        kind, ReasonCode.OUTSIDE_SCHEDULE
    )
    values: dict[str, Any] = dict(
        kind=kind, door=DOOR, person=person, distance=0.61234, margin=0.3, frames=3, code=code,
        reason="why", event_id="e1", ts=1_750_000_000.5, unlock=kind == "granted",
    )  # fmt: skip
    return Decision(**{**values, **extra})


@pytest.fixture
def outputs() -> Iterator[list[HomeAssistantOutput]]:
    started: list[HomeAssistantOutput] = []
    yield started
    for output in started:
        output.close()


def configs(sub: Subscriber) -> list[Any]:
    return [m for m in sub.messages if m.topic.startswith(f"{PREFIX}/device/")]


def retained(broker: MosquittoBroker, topic_filter: str) -> dict[str, bytes]:
    """The retained messages a client subscribing to `topic_filter` now gets: all of them
    arrive before a message published after the subscription (the barrier)."""
    barrier = f"test/barrier/{time.monotonic_ns()}"
    sub = Subscriber(broker.host, broker.port, [topic_filter, barrier])
    try:
        sub.client.publish(barrier, b"", qos=1)
        sub.wait_for(lambda s: any(m.topic == barrier for m in s.messages), what="the barrier")
        return {m.topic: m.payload for m in sub.messages if m.retain}
    finally:
        sub.close()


def test_discovery_payload_is_home_assistants_device_schema() -> None:
    topics = Topics("facegate", PREFIX, DEVICE, DOOR)
    for face_image in (False, True):
        payload = discovery_payload(DEVICE, DOOR, topics, face_image=face_image)
        check_ha_schema(topics.config, payload)
        assert payload == expected_config(face_image)
    assert topics.config == CONFIG_TOPIC
    # A unit name with a dot still gives a topic Home Assistant accepts.
    check_ha_schema(Topics("facegate", PREFIX, "pi.lan", DOOR).config, payload)


@pytest.mark.serial  # asserts timing (1 s): run after the parallel part (one timing test per core)
def test_announced_within_a_second_of_connecting_and_of_the_birth_message(
    tmp_path: Path, mosquitto: MosquittoBroker, outputs: list[HomeAssistantOutput]
) -> None:
    config = ha_config(tmp_path, mosquitto.port)
    sub = Subscriber(mosquitto.host, mosquitto.port, [f"{PREFIX}/#"])
    try:
        started = time.time()
        outputs.append(HomeAssistantOutput(config))
        sub.wait_for(lambda s: bool(configs(s)), what="discovery config")
        first = configs(sub)[0]
        assert first.topic == CONFIG_TOPIC
        assert json.loads(first.payload) == expected_config(face_image=False)
        connect_s = first.at - started  # includes the TCP connect itself
        assert connect_s <= VISIBLE_S, connect_s

        birth = time.time()
        sub.client.publish(f"{PREFIX}/status", "online", qos=1)
        sub.wait_for(lambda s: len(configs(s)) >= 2, what="discovery after the birth message")
        birth_s = configs(sub)[1].at - birth
        assert birth_s <= VISIBLE_S, birth_s
        # Anything but "online" (Home Assistant's will says "offline") is no reason.
        sub.client.publish(f"{PREFIX}/status", "offline", qos=1).wait_for_publish(5)
        sub.client.publish(f"{PREFIX}/status", "online", qos=1)
        sub.wait_for(lambda s: len(configs(s)) >= 3, what="discovery after a second birth")
        assert len(configs(sub)) == 3
        print(f"discovery visible {connect_s * 1000:.0f} ms after connect start, "
              f"{birth_s * 1000:.0f} ms after the birth message")  # fmt: skip
    finally:
        sub.close()
    kept = retained(mosquitto, f"{PREFIX}/#")
    assert json.loads(kept[CONFIG_TOPIC]) == expected_config(face_image=False)


def test_decisions_feed_the_entities_and_events_are_never_retained(
    tmp_path: Path, mosquitto: MosquittoBroker, outputs: list[HomeAssistantOutput]
) -> None:
    output = HomeAssistantOutput(ha_config(tmp_path, mosquitto.port, face_image=True))
    outputs.append(output)
    sub = Subscriber(mosquitto.host, mosquitto.port, ["facegate/#", f"{PREFIX}/#"])
    try:
        sub.wait_for(lambda s: bool(configs(s)), what="discovery config")
        jpeg = cv2.imencode(".jpg", np.full((160, 160, 3), 128, np.uint8))[1].tobytes()
        output.decision(decision(snapshot=jpeg))
        output.decision(decision("unknown", None, event_id="e2", distance=1.3))
        sub.wait_for(lambda s: len(s.on("ha/access")) == 2, what="two access events")
        events = [m for m in sub.on("ha/access")]
        assert [m.retain for m in events] == [False, False]
        assert [e.json()["event_type"] for e in events] == ["granted", "unknown"]
        assert events[0].json() == {
            "event_type": "granted", "person": RESIDENT, "distance": 0.6123, "code": "match",
            "reason": "why", "event_id": "e1", "ts": 1_750_000_000.5,
        }  # fmt: skip
        assert all(e.json()["event_type"] in EVENT_TYPES for e in events)
        sub.wait_for(lambda s: len(s.on("ha/face")) == 1, what="the face image")
        assert sub.on("ha/face")[0].payload == jpeg  # only the granted one had a snapshot
    finally:
        sub.close()
    kept = retained(mosquitto, "facegate/#")
    assert topic("ha/access") not in kept and topic("ha/face") not in kept
    assert json.loads(kept[topic("ha/state")]) == {
        "person": "unknown", "distance": 1.3, "decision": "unknown", "ts": 1_750_000_000.5,
    }  # fmt: skip


def test_a_door_removed_from_the_config_loses_its_device(
    tmp_path: Path, mosquitto: MosquittoBroker, outputs: list[HomeAssistantOutput]
) -> None:
    back_config = f"{PREFIX}/device/{DEVICE}_back/config"
    both = HomeAssistantOutput(ha_config(tmp_path / "both", mosquitto.port, (DOOR, "back")))
    both.decision(dataclasses.replace(decision(), door="back"))  # not connected yet: kept
    sub = Subscriber(mosquitto.host, mosquitto.port, [f"{PREFIX}/#", "facegate/back/#"])
    try:
        sub.wait_for(lambda s: len(configs(s)) >= 2 and bool(s.on("ha/state", "back")),
                     what="both doors announced, back's state sent at connect")  # fmt: skip
        both.close()
        # Another unit's device and a foreign device with our object id are left alone.
        foreign = {"dev": {"ids": ["other"], "name": "x"}, "o": {"name": "other"}, "cmps": {}}
        sub.client.publish(f"{PREFIX}/device/{DEVICE}_porch/config", json.dumps(foreign),
                           qos=1, retain=True).wait_for_publish(5)  # fmt: skip
        outputs.append(HomeAssistantOutput(ha_config(tmp_path / "front", mosquitto.port)))
        sub.wait_for(lambda s: any(m.topic == back_config and not m.payload for m in s.messages),
                     what="back's config cleared")  # fmt: skip
    finally:
        sub.close()
    kept = retained(mosquitto, f"{PREFIX}/#")
    assert back_config not in kept
    assert f"{PREFIX}/device/{DEVICE}_porch/config" in kept
    check_ha_schema(CONFIG_TOPIC, json.loads(kept[CONFIG_TOPIC]))
    assert "facegate/back/ha/state" not in retained(mosquitto, "facegate/#")


def test_daemon_announces_its_door_and_home_assistant_sees_it_die(
    tmp_path: Path, mosquitto: MosquittoBroker, daemons: list[Daemon]
) -> None:
    """End to end: the daemon as a process; a resident's visit is a `granted` event; a
    SIGKILL turns every entity unavailable through the door status will."""
    site = make_site(
        tmp_path, mosquitto.port, people={RESIDENT: [DOOR]},
        scene=face(RESIDENT, 6) + hallway(4) + face(STRANGER, 6) + hallway(4),
    )  # fmt: skip
    with site.config.open("a") as file:
        file.write("homeassistant: {enabled: true, face_image: true}\n")
    sub = Subscriber(mosquitto.host, mosquitto.port, ["facegate/#", f"{PREFIX}/#"])
    try:
        daemon = Daemon(site.config)
        daemons.append(daemon)
        daemon.wait_ready()
        sub.wait_for(lambda s: bool(configs(s)), what="discovery config")
        payload = json.loads(configs(sub)[0].payload)
        check_ha_schema(configs(sub)[0].topic, payload)
        assert payload == expected_config(face_image=True)
        sub.wait_for(
            lambda s: (
                any(m.json()["event_type"] == "granted" for m in s.on("ha/access"))
                and any(m.json()["event_type"] == "unknown" for m in s.on("ha/access"))
                and bool(s.on("ha/face"))
            ),
            what="granted and unknown events, and a face",
        )
        face_jpeg = sub.on("ha/face")[0].payload
        assert len(face_jpeg) <= 30 * 1024 and face_jpeg[:2] == b"\xff\xd8"
        decoded = cv2.imdecode(np.frombuffer(face_jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None and decoded.shape == (160, 160, 3)
        daemon.kill()  # SIGKILL: no goodbye, only the broker's will
        sub.wait_for(lambda s: bool(s.on("status")) and s.on("status")[-1].json()["state"]
                     == "offline", what="the will on the status topic")  # fmt: skip
    finally:
        sub.close()
    assert all(not m.retain for m in sub.on("ha/access"))
    kept = retained(mosquitto, "facegate/#")
    assert topic("ha/access") not in kept
    # What Home Assistant's availability template reads: {{ value_json.state }} == offline.
    assert json.loads(kept[topic("status")])["state"] == "offline"


def test_face_jpeg_fits_its_bound() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    for limit in (30 * 1024, 4 * 1024, 1024):
        jpeg = face_jpeg(noise, limit)
        assert jpeg is not None and len(jpeg) <= limit and jpeg[:2] == b"\xff\xd8"
    assert face_jpeg(noise, 100) is None


def test_faces_are_encoded_only_when_an_output_asks(tmp_path: Path) -> None:
    config = ha_config(tmp_path, 1883)  # Home Assistant on, face_image off
    assert not wants_face_snapshots(config)
    for update, wanted in (
        ({"homeassistant": HomeAssistantConfig(enabled=True, face_image=True)}, True),
        ({"homeassistant": HomeAssistantConfig(enabled=False, face_image=True)}, False),
        ({"audit": AuditConfig(enabled=True, snapshots=True)}, True),
        ({"audit": AuditConfig(enabled=True, snapshots=False)}, False),
    ):
        assert wants_face_snapshots(config.model_copy(update=update)) is wanted, update
