"""Typed, validated, frozen configuration: `facegate.yaml` and `enrollment.yaml`."""

from __future__ import annotations

from pathlib import Path

from facegate.config.app import (
    CameraConfig,
    CameraSource,
    FacegateConfig,
    ModelsConfig,
    RecognitionConfig,
    WatchdogConfig,
)
from facegate.config.enrollment import (
    BlockedPerson,
    Enrollee,
    EnrollmentConfig,
    Person,
    Schedule,
    TimeWindow,
    resolve_images,
)
from facegate.config.loader import ConfigValidationError, load_model
from facegate.config.mqtt import MqttConfig, TlsConfig

__all__ = [
    "BlockedPerson",
    "CameraConfig",
    "CameraSource",
    "ConfigValidationError",
    "Enrollee",
    "EnrollmentConfig",
    "FacegateConfig",
    "ModelsConfig",
    "MqttConfig",
    "Person",
    "RecognitionConfig",
    "Schedule",
    "TimeWindow",
    "TlsConfig",
    "WatchdogConfig",
    "load_config",
    "load_enrollment",
    "resolve_images",
]


def load_config(path: str | Path) -> FacegateConfig:
    """facegate.yaml as a frozen FacegateConfig; paths anchored at the file's folder.

    Raises facegate.errors.ConfigError (FILE:LINE: key.path: message) on any problem.
    """
    config, _ = load_model(FacegateConfig, path)
    return config


def load_enrollment(path: str | Path) -> EnrollmentConfig:
    """enrollment.yaml as a frozen EnrollmentConfig that remembers its file for image errors."""
    enrollment, lines = load_model(EnrollmentConfig, path)
    enrollment.bind_source(Path(path).expanduser(), lines)
    return enrollment
