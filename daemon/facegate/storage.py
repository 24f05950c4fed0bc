"""Crash-safe file replacement: the one atomic-write helper for the project.

A crash (power cut, SIGKILL) at any moment leaves either the old or the new file at `path`,
never a mix: the data goes to a temp file in the same directory, is fsynced, renamed over
`path` (atomic on POSIX within one filesystem), and the directory is fsynced so the rename
itself survives a power cut. Writers of one path take an flock on `.<name>.lock`, so they
never interleave, and each clears the temp files a killed predecessor left.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
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
    lock: bool = True,
) -> None:
    """Replace `path` with what `write(file)` writes, atomically; keep the old file as .bak.

    Writers of one path are serialised by a lock file, which also makes it safe to delete
    the temp files a killed writer left behind (a 350 MB gallery each, on an SD card).
    `lock=False` skips the lock file and the directory scan for stale temps: for callers
    that already serialise their writers and remove leftover `*.tmp` files themselves,
    e.g. the MQTT journal with one small file per message.
    """
    target = Path(path)
    if not lock:
        _replace(target, write, mode, backup)
    else:
        with _writer_lock(target):
            _remove_stale_temps(target)
            _replace(target, write, mode, backup)
    logger.debug("wrote %s atomically", target)


def _replace(target: Path, write: Callable[[BinaryIO], None], mode: int, backup: bool) -> None:
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


@contextlib.contextmanager
def _writer_lock(target: Path) -> Iterator[None]:
    """An exclusive flock on `.<name>.lock`; the kernel drops it when a writer dies."""
    fd = os.open(target.parent / f".{target.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_stale_temps(target: Path) -> None:
    """Delete temp files of `target` (and of its .bak) that a killed writer left behind."""
    names = (re.escape(target.name), re.escape(backup_path(target).name))
    stale = re.compile(rf"\.(?:{'|'.join(names)})\.[A-Za-z0-9_]{{8}}\.tmp")
    for leftover in target.parent.iterdir():
        if stale.fullmatch(leftover.name):
            logger.info("removing %s, left by a writer that was killed", leftover)
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def atomic_write_bytes(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = 0o600,
    backup: bool = False,
    lock: bool = True,
) -> None:
    """Replace `path` with `data` atomically (see `atomic_write`)."""

    def write(file: BinaryIO) -> None:
        # A buffered write retries short writes and raises on failure (ENOSPC), so a
        # partial file is never fsynced and renamed into place.
        file.write(data)

    atomic_write(path, write, mode=mode, backup=backup, lock=lock)


def _keep_backup(target: Path) -> None:
    """Point `<name>.bak` at the current file without ever leaving a partial .bak behind."""
    bak = backup_path(target)
    if bak.exists() and os.path.samefile(bak, target):
        return  # a writer killed after linking the backup: it already is the current file
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
    finally:
        # rename() between two links to one inode succeeds and removes nothing.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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
