"""Outputs: where decisions go. Each runs on its own worker thread (base.OutputWorker);
the service builds the list from config with `build_outputs`. Adding an output is one
class (an `Output`) and one line in `build_outputs`."""

from __future__ import annotations

from facegate.config import FacegateConfig
from facegate.mqtt.bus import DoorBus
from facegate.outputs.audit import AuditOutput
from facegate.outputs.base import Output, OutputWorker
from facegate.outputs.homeassistant import HomeAssistantOutput
from facegate.outputs.metrics import DecisionCounter, MetricsOutput
from facegate.outputs.mqtt import MqttOutput

__all__ = [
    "AuditOutput",
    "HomeAssistantOutput",
    "MetricsOutput",
    "MqttOutput",
    "Output",
    "OutputWorker",
    "build_outputs",
]


def build_outputs(
    config: FacegateConfig, bus: DoorBus, metrics: DecisionCounter | None = None
) -> list[Output]:
    """Every output the config asks for; the MQTT door bus (the door's lock) comes first.
    `metrics` is the daemon's DaemonMetrics when `metrics:` is enabled."""
    outputs: list[Output] = [MqttOutput(bus, config.device)]
    if config.homeassistant.enabled:
        outputs.append(HomeAssistantOutput(config))
    if metrics is not None:
        outputs.append(MetricsOutput(metrics))
    if config.audit.enabled:
        outputs.append(AuditOutput(config.audit))
    return outputs
