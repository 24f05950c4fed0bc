"""The project's exception hierarchy; the CLI maps these to exit codes (2 = bad input)."""

from __future__ import annotations

from pathlib import Path


class FacegateError(Exception):
    """Base of every error facegate raises on purpose."""


class BadInputError(FacegateError):
    """A user-supplied file or value is unusable; the message names the file and the field."""

    def __init__(
        self,
        source: str | Path,
        message: str,
        *,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.source = str(source)
        self.field = field
        self.line = line
        self.detail = message
        where = self.source + (f":{line}" if line is not None else "")
        what = f" {field}:" if field else ""
        super().__init__(f"{where}:{what} {message}")


class ConfigError(BadInputError):
    """facegate.yaml or enrollment.yaml is invalid."""


class NoFaceError(BadInputError):
    """An image that must hold exactly one usable face holds none."""


class ManyFacesError(BadInputError):
    """An image that must hold exactly one usable face holds several."""


class ModelError(FacegateError):
    """A model file is missing, corrupt, or no TFLite runtime can load it."""


class GalleryError(FacegateError):
    """The gallery is missing, corrupt, or was built with another model: refuse to match."""


class CameraError(FacegateError):
    """A camera or frame source cannot be opened or read; the message says what to check."""
