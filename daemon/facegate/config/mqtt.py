"""MQTT section of facegate.yaml (broker, TLS, credentials, signing, journal bounds)."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# UTF-8 bytes: door ids (<= 32) and the topic suffix are appended to the prefix.
TOPIC_PREFIX_MAX_BYTES: Final = 64
# After a drop paho waits reconnect_min_s, doubling up to reconnect_max_s: a first wait over a
# minute or a cap over an hour leaves every unlock of that time undelivered (1e6 s: never).
RECONNECT_MIN_MAX_S: Final = 60.0
RECONNECT_MAX_MAX_S: Final = 3600.0


_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TlsConfig(BaseModel):
    """TLS to the broker: CA to trust, optional client certificate and key."""

    model_config = _FROZEN

    ca_file: Path = Field(description="CA certificate(s) that sign the broker's certificate (PEM)")
    cert_file: Path | None = Field(default=None, description="client certificate (PEM)")
    key_file: Path | None = Field(default=None, description="client private key (PEM)")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


SigningAlgorithm = Literal["ed25519", "hs256"]


class SigningConfig(BaseModel):
    """How unlocks are signed (JWS): the algorithm and the key of every door without its own."""

    model_config = _FROZEN

    algorithm: SigningAlgorithm = Field(
        default="ed25519",
        description=(
            "ed25519: EdDSA, controllers hold only the public key (default); hs256: HMAC with"
            " a shared secret, for controllers without Ed25519 (give each door its own key)"
        ),
    )
    key_file: Path = Field(
        description=(
            "the private key: Ed25519 PKCS#8 PEM, or a hex secret (>= 32 bytes) for hs256;"
            " `facegate keys new` writes one. Relative to this YAML"
        )
    )


class MqttConfig(BaseModel):
    """Broker connection and the unlock contract settings."""

    model_config = _FROZEN

    host: str = Field(default="127.0.0.1", description="broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="broker TCP port")
    topic_prefix: str = Field(
        default="facegate",
        description=(
            "topic levels before <door>/..., e.g. facegate or site/facegate: 1.."
            f"{TOPIC_PREFIX_MAX_BYTES} bytes, no + # or control characters, no empty level,"
            " not starting with $ (broker topics)"
        ),
    )
    client_id: str | None = Field(
        default=None, description="MQTT client id; default facegate-<device>"
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="keepalive, seconds")
    signing: SigningConfig | None = Field(
        default=None, description="unlock signing: algorithm and key (required, or the old form)"
    )
    signing_key_file: Path | None = Field(
        default=None,
        description=(
            "deprecated: the old form of `signing: {algorithm: hs256, key_file: ...}` (a hex"
            " secret); unlocks are JWS either way (docs/migration-jws.md)"
        ),
    )
    unlock_ttl_s: float = Field(
        default=5.0, ge=0.5, le=60, description="unlock validity after it is issued, seconds"
    )
    username: str | None = Field(default=None, description="broker user name")
    password_file: Path | None = Field(default=None, description="file holding the broker password")
    tls: TlsConfig | None = Field(default=None, description="TLS settings; plain TCP if absent")
    reconnect_min_s: float = Field(
        default=1,
        gt=0,
        le=RECONNECT_MIN_MAX_S,
        description=f"first reconnect delay, seconds, (0, {RECONNECT_MIN_MAX_S:g}]",
    )
    reconnect_max_s: float = Field(
        default=30,
        gt=0,
        le=RECONNECT_MAX_MAX_S,
        description=f"reconnect delay cap, seconds, (0, {RECONNECT_MAX_MAX_S:g}]",
    )
    journal_max_entries: int = Field(
        default=10000, ge=10, description="outgoing messages kept on disk until acknowledged"
    )

    @field_validator("topic_prefix")
    @classmethod
    def _valid_topic_levels(cls, prefix: str) -> str:
        problem = topic_prefix_problem(prefix)
        if problem is not None:
            raise ValueError(problem)
        return prefix

    @model_validator(mode="after")
    def _check_cross_fields(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        if (self.signing is None) == (self.signing_key_file is None):
            raise ValueError(
                "give exactly one of signing (algorithm, key_file) and the old signing_key_file"
            )
        return self

    @property
    def signing_algorithm(self) -> SigningAlgorithm:
        """The algorithm of the shared key (the old signing_key_file is an HS256 secret)."""
        return "hs256" if self.signing is None else self.signing.algorithm

    @property
    def signing_key_path(self) -> tuple[Path, str]:
        """(the shared signing key file, the config field naming it)."""
        if self.signing is not None:
            return self.signing.key_file, "mqtt.signing.key_file"
        assert self.signing_key_file is not None  # the validator wants one of the two
        return self.signing_key_file, "mqtt.signing_key_file"


def topic_prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot start our topics (a broker would refuse or misroute them), or None."""
    try:
        size = len(prefix.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from a YAML "\ud800" escape
        return "must be valid UTF-8 text"
    if not 1 <= size <= TOPIC_PREFIX_MAX_BYTES:
        return f"must be 1..{TOPIC_PREFIX_MAX_BYTES} bytes (UTF-8), got {size}"
    if any(_refused_by_brokers(char) for char in prefix):
        return "must not contain control characters (NUL, newline, ...) or Unicode non-characters"
    if "+" in prefix or "#" in prefix:
        return "must not contain MQTT wildcards + or #"
    if prefix.startswith("$"):
        return "must not start with $: such topics belong to the broker ($SYS), which refuses them"
    if "" in prefix.split("/"):
        return "must not have an empty topic level (a leading, trailing or double /)"
    return None


def _refused_by_brokers(char: str) -> bool:
    # MQTT 3.1.1 section 1.5.3: no U+0000; control characters and non-characters are refused by
    # mosquitto's UTF-8 check. Category Cc is U+0000-001F and U+007F-009F.
    code = ord(char)
    is_non_character = 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE
    return unicodedata.category(char) == "Cc" or is_non_character
