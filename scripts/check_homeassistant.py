#!/usr/bin/env python3
"""Check facegate's discovery configs with Home Assistant's own code (`make ha-check`).

Two halves, because Home Assistant needs its own venv (Python 3.13, ~1 GB, ~4.5 min to
install) and facegate its own:

    .venv/bin/python scripts/check_homeassistant.py --emit \\
      | ~/.cache/facegate/ha-venv/bin/python scripts/check_homeassistant.py --check

--emit prints facegate's discovery configs (one door, with and without the face image)
as JSON; --check runs them through what Home Assistant's MQTT integration does with a
device discovery message: its topic matcher, its abbreviation expansion, its
DEVICE_DISCOVERY_SCHEMA, the shared options merged into each component, and each
platform's DISCOVERY_SCHEMA (event, sensor, binary_sensor, image). Exit 1 on any refusal.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def emit() -> None:
    from facegate.outputs.homeassistant import Topics, discovery_payload

    topics = Topics("facegate", "homeassistant", "frontdoor-pi", "front")
    configs = [
        [topics.config, discovery_payload("frontdoor-pi", "front", topics, face_image=face)]
        for face in (False, True)
    ]
    json.dump(configs, sys.stdout)


def check() -> int:
    import asyncio
    import tempfile

    from homeassistant.core import HomeAssistant
    from homeassistant.helpers import frame

    async def validate() -> int:
        # Template validators look for a running Home Assistant: give them a bare one.
        with tempfile.TemporaryDirectory() as config_dir:
            hass = HomeAssistant(config_dir)
            frame.async_setup(hass)
            return check_payloads()

    return asyncio.run(validate())


def check_payloads() -> int:
    import importlib

    from homeassistant.components.mqtt import discovery
    from homeassistant.components.mqtt.schemas import DEVICE_DISCOVERY_SCHEMA, SHARED_OPTIONS
    from homeassistant.const import __version__ as ha_version

    failures = 0
    for topic, payload in json.load(sys.stdin):
        trimmed = topic.removeprefix("homeassistant/")
        match = discovery.TOPIC_MATCHER.match(trimmed)
        if match is None or match.group("component") != "device":
            print(f"FAIL {topic}: Home Assistant's topic matcher refuses it")
            failures += 1
            continue
        config: dict[str, Any] = json.loads(json.dumps(payload))
        discovery._replace_all_abbreviations(config)  # noqa: SLF001 - what HA does first
        try:
            DEVICE_DISCOVERY_SCHEMA(config)
        except Exception as exc:  # noqa: BLE001 - report any refusal
            print(f"FAIL {topic}: DEVICE_DISCOVERY_SCHEMA: {exc}")
            failures += 1
            continue
        for name, component in config["components"].items():
            platform = component.pop("platform")
            if not component:
                print(f"ok   {topic} {name}: {platform} removal (platform only)")
                continue
            for option in SHARED_OPTIONS:
                if option in config and option not in component:
                    component[option] = config[option]
            component.update(device=config["device"], origin=config["origin"])
            module = importlib.import_module(f"homeassistant.components.mqtt.{platform}")
            try:
                module.DISCOVERY_SCHEMA(component)
            except Exception as exc:  # noqa: BLE001 - report any refusal
                print(f"FAIL {topic} {name}: {platform} DISCOVERY_SCHEMA: {exc}")
                failures += 1
                continue
            print(f"ok   {topic} {name}: {platform}")
    print(f"Home Assistant {ha_version}: {failures} refusal(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--emit"]:
        emit()
    elif sys.argv[1:] == ["--check"]:
        sys.exit(check())
    else:
        sys.exit(__doc__)
