"""A device's enrollment from bundles: what version it runs, and switching to a new one.

Layout, beside the enrollment file the daemon reads (config `enrollment`):

    <fleet dir>/state.json      {"version", "sha256", "site"} of the running bundle
    <fleet dir>/v<version>/     that bundle's photos (and its enrollment.yaml as shipped)

`apply` writes the new version's folder under a temporary name (fsynced), renames it into
place, then replaces the enrollment file atomically (its image paths pointing into the new
folder), then the state, then removes older folders. A crash at any moment leaves the
old enrollment or the new one, never a mix: until the enrollment file is renamed the
daemon reads the old one and its old folder is untouched; a state that lags behind
only means the same bundle is applied again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from facegate.errors import FacegateError
from facegate.files import KIB, read_regular_text
from facegate.fleet.bundle import ENROLLMENT_NAME, Bundle

logger = logging.getLogger(__name__)

STATE_NAME: Final = "state.json"


@dataclass(frozen=True)
class Installed:
    """What a device runs: the bundle version and its sha256 (0 and "" before any)."""

    version: int
    sha256: str


class EnrollmentStore:
    def __init__(self, enrollment: Path, fleet_dir: Path) -> None:
        self.enrollment = enrollment
        self.dir = fleet_dir

    def installed(self) -> Installed:
        """The running bundle; a missing or unreadable state means none (version 0)."""
        try:
            text = read_regular_text(self.dir / STATE_NAME, 4 * KIB, what="fleet state")
            state = json.loads(text)
            return Installed(int(state["version"]), str(state["sha256"]))
        except (FacegateError, OSError, ValueError, KeyError, TypeError) as exc:
            if (self.dir / STATE_NAME).exists():
                logger.warning("fleet state %s unusable (%s): treated as version 0", self.dir, exc)
            return Installed(0, "")

    def apply(self, bundle: Bundle) -> None:
        """Switch the device to `bundle` (verified by the caller); atomic, see module doc."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        version = bundle.manifest.version
        folder = self.dir / f"v{version}"
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-v{version}-", dir=self.dir))
        for path, data in bundle.contents.items():
            _write_synced(staging / path, data)
        _fsync_tree(staging)
        if folder.exists():  # the same version again (a crash before the state was written)
            shutil.rmtree(folder)
        os.rename(staging, folder)
        _fsync_dir(self.dir)
        _replace_atomically(self.enrollment, _pointing_into(bundle.enrollment_text, folder))
        state = {"version": version, "sha256": bundle.sha256, "site": bundle.manifest.site}
        _replace_atomically(self.dir / STATE_NAME, json.dumps(state).encode())
        for old in self.dir.glob("v*"):
            if old != folder and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        for leftover in self.dir.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _pointing_into(enrollment_text: str, folder: Path) -> bytes:
    """The bundle's enrollment with each image path made absolute inside `folder`.

    The paths were checked against the manifest's path pattern (photos/<id>/<name>)."""
    raw = yaml.safe_load(enrollment_text)
    for person in raw.get("people") or []:
        person["images"] = [str(folder / image) for image in person.get("images", [])]
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode("utf-8")


def _write_synced(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_tree(root: Path) -> None:
    for folder, _, _ in os.walk(root):
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_atomically(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename over `path`, fsync the folder."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o640)
        os.rename(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


__all__ = ["ENROLLMENT_NAME", "EnrollmentStore", "Installed"]
