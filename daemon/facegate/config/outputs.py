"""Sections of facegate.yaml for the optional outputs: Home Assistant, metrics, audit trail.

All three are off by default: a door that does not ask for them publishes nothing more,
opens no port and writes nothing more to disk.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facegate.config.mqtt import topic_prefix_problem

_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
# host:port, host a name, an IPv4 address or a bracketed IPv6 address ([::1]:9464).
_LISTEN = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]{1,253})):(?P<port>\d{1,5})$"
)
AUDIT_FILE_NAME: Final = "audit.db"
DEFAULT_AUDIT_PATH: Final = Path("/var/lib/facegate") / AUDIT_FILE_NAME


class HomeAssistantConfig(BaseModel):
    """Home Assistant MQTT device discovery: one device per door, on the facegate broker."""

    model_config = _FROZEN

    enabled: bool = Field(default=False, description="announce every door to Home Assistant")
    discovery_prefix: str = Field(
        default="homeassistant",
        description="Home Assistant's MQTT discovery prefix (its birth message comes on"
        " <prefix>/status); 1..64 bytes, no + # or control characters, not starting with $",
    )
    face_image: bool = Field(
        default=False,
        description="also publish a JPEG (<= 30 KB) of the face of each decision as an `image`"
        " entity; off for privacy: faces then leave the door unit",
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        problem = topic_prefix_problem(prefix)
        if problem is not None:
            raise ValueError(problem)
        return prefix


class MetricsConfig(BaseModel):
    """Prometheus metrics over HTTP (GET /metrics). Unauthenticated: keep it on loopback or a
    trusted network."""

    model_config = _FROZEN

    enabled: bool = Field(default=False, description="serve Prometheus metrics")
    listen: str = Field(
        default="127.0.0.1:9464",
        description="address:port to serve /metrics on; 127.0.0.1 (default) is this unit only,"
        " 0.0.0.0 every interface; IPv6 as [::1]:9464",
    )

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, listen: str) -> str:
        match = _LISTEN.match(listen)
        if match is None:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464 or [::1]:9464")
        if match.group("v6") is not None:
            try:
                ipaddress.IPv6Address(match.group("v6"))
            except ValueError:
                raise ValueError(f"{match.group('v6')!r} is not an IPv6 address") from None
        if not 1 <= int(match.group("port")) <= 65535:
            raise ValueError("port must be 1..65535")
        return listen

    @property
    def host(self) -> str:
        match = _LISTEN.match(self.listen)
        assert match is not None  # validated
        return match.group("v6") or match.group("host")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class AuditConfig(BaseModel):
    """Every decision and claim outcome in a local SQLite file (`facegate log` reads it)."""

    model_config = _FROZEN

    # On by default: an access-control system owes its owner the record of who came in.
    enabled: bool = Field(default=True, description="keep the audit trail")
    path: Path = Field(
        default=DEFAULT_AUDIT_PATH, description="SQLite file of the trail; relative to this YAML"
    )
    retention_days: int = Field(
        default=90, ge=1, le=3650, description="rows older than this are deleted, days"
    )
    max_rows: int = Field(
        default=1_000_000,
        ge=1000,
        le=10_000_000,
        description="at most this many rows are kept (the oldest go first): bounds the file"
        " (about 250 bytes a row with its indexes: 1,000,000 rows ~ 250 MB)",
    )
    snapshots: bool = Field(
        default=False,
        description="also keep a JPEG (<= 30 KB) of the face of each decision in a folder"
        " beside the file (<name>-snapshots/), referenced from its row; same retention",
    )

    @property
    def snapshot_dir(self) -> Path:
        return self.path.with_name(f"{self.path.stem}-snapshots")
