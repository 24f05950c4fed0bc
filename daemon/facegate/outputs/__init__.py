"""Outputs: where decisions go. Each runs on its own worker thread (base.OutputWorker);
the service builds the list from config with `build_outputs`. Adding an output is one
class (an `Output`) and one line in `build_outputs`."""

from __future__ import annotations

from facegate.config import FacegateConfig
from facegate.mqtt.bus import DoorBus
from facegate.outputs.base import Output, OutputWorker
from facegate.outputs.homeassistant import HomeAssistantOutput
from facegate.outputs.mqtt import MqttOutput

__all__ = ["HomeAssistantOutput", "MqttOutput", "Output", "OutputWorker", "build_outputs"]


def build_outputs(config: FacegateConfig, bus: DoorBus) -> list[Output]:
    """Every output the config asks for; the MQTT door bus (the door's lock) comes first."""
    outputs: list[Output] = [MqttOutput(bus, config.device)]
    if config.homeassistant.enabled:
        outputs.append(HomeAssistantOutput(config))
    return outputs
