"""The `fleet:` section: this device takes its enrollment from signed bundles of its site."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

MIB: Final = 1024 * 1024

_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FleetConfig(BaseModel):
    """Enrollment from bundles published on `<prefix>/site/<site>/enrollment`."""

    model_config = _FROZEN

    site: str = Field(
        pattern=r"^[a-z0-9_-]{1,64}$",
        description="the site this device belongs to: [a-z0-9_-], 1..64 characters",
    )
    admin_public_key_file: Path = Field(
        description=(
            "the site admin's Ed25519 public key (PEM) that signs bundles; not the unlock key."
            " Relative to this YAML"
        )
    )
    dir: Path | None = Field(
        default=None,
        description=(
            "where bundles unpack (photos, state); default: a `fleet` folder beside the"
            " enrollment file, which the daemon rewrites when a bundle arrives"
        ),
    )
    max_bundle_bytes: int = Field(
        default=256 * MIB,
        ge=1024,
        le=4096 * MIB,
        description="larger bundles are refused unread, bytes (default 256 MiB)",
    )
