"""MQTT section of facegate.yaml (broker, TLS, credentials, signing, journal bounds)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TlsConfig(BaseModel):
    """TLS to the broker: CA to trust, optional client certificate and key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path = Field(description="CA certificate(s) that sign the broker's certificate (PEM)")
    cert_file: Path | None = Field(default=None, description="client certificate (PEM)")
    key_file: Path | None = Field(default=None, description="client private key (PEM)")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(BaseModel):
    """Broker connection and the unlock contract settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="broker TCP port")
    topic_prefix: str = Field(
        default="facegate", min_length=1, description="first topic level, e.g. facegate/<door>/..."
    )
    client_id: str | None = Field(
        default=None, description="MQTT client id; default facegate-<device>"
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="keepalive, seconds")
    signing_key_file: Path = Field(
        description="hex HMAC-SHA256 key (>= 16 bytes) for the unlocks of every door without"
        " its own cameras[].signing_key_file"
    )
    unlock_ttl_s: float = Field(
        default=5.0, ge=0.5, le=60, description="unlock validity after it is issued, seconds"
    )
    username: str | None = Field(default=None, description="broker user name")
    password_file: Path | None = Field(default=None, description="file holding the broker password")
    tls: TlsConfig | None = Field(default=None, description="TLS settings; plain TCP if absent")
    reconnect_min_s: float = Field(default=1, gt=0, description="first reconnect delay, seconds")
    reconnect_max_s: float = Field(default=30, gt=0, description="reconnect delay cap, seconds")
    journal_max_entries: int = Field(
        default=10000, ge=10, description="outgoing messages kept on disk until acknowledged"
    )

    @model_validator(mode="after")
    def _check_cross_fields(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        if "+" in self.topic_prefix or "#" in self.topic_prefix:
            raise ValueError("topic_prefix must not contain MQTT wildcards + or #")
        return self
