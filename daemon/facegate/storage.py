"""Crash-safe file replacement: the one atomic-write helper for the project.

A crash (power cut, SIGKILL) at any moment leaves either the old or the new file at `path`,
never a mix: the data goes to a temp file in the same directory, is fsynced, renamed over
`path` (atomic on POSIX within one filesystem), and the directory is fsynced so the rename
itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

logger = logging.getLogger(__name__)

BACKUP_SUFFIX: Final = ".bak"


def backup_path(path: Path) -> Path:
    """Where `atomic_write(..., backup=True)` keeps the previous version of `path`."""
    return path.with_name(path.name + BACKUP_SUFFIX)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], None],
    *,
    mode: int = 0o600,
    backup: bool = False,
) -> None:
    """Replace `path` with what `write(file)` writes, atomically; keep the old file as .bak."""
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        # mkstemp already creates 0600; fchmod makes a looser requested mode explicit too.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if backup and target.exists():
            _keep_backup(target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)
    logger.debug("wrote %s atomically", target)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, backup: bool = False
) -> None:
    """Replace `path` with `data` atomically (see `atomic_write`)."""

    def write(file: BinaryIO) -> None:
        file.write(data)

    atomic_write(path, write, mode=mode, backup=backup)


def _keep_backup(target: Path) -> None:
    """Point `<name>.bak` at the current file without ever leaving a partial .bak behind."""
    bak = backup_path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{bak.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        try:
            # A hard link costs no copy of a large gallery; the old inode lives on as .bak.
            os.link(target, tmp)
        except OSError:
            shutil.copy2(target, tmp)
            _fsync_file(tmp)
        os.replace(tmp, bak)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (it is metadata of the directory, not the file)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
