"""Bounded reads of small files a user points us at: configs, keys, passwords, certificates.

A path in a config file can name anything: a FIFO (an open would block forever), a device or
a symlink to /dev/zero (a read would never end), a huge file. Every such read goes through
`read_regular_file`, which can only return the bytes of a regular file no larger than the
caller's limit or raise BadInputError naming the file and the config field.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final, NoReturn

from facegate.errors import BadInputError

logger = logging.getLogger(__name__)

#: File name endings read as images everywhere (enrollment folders, datasets, camera folders).
IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
KIB: Final = 1024
MIB: Final = 1024 * KIB
_CHUNK: Final = 64 * KIB
# O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting for one.
# O_NOCTTY: naming a terminal must not make it our controlling terminal.
_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY

_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_regular_file(
    path: Path, max_bytes: int, *, field: str | None = None, what: str = "file"
) -> bytes:
    """The content of the regular file `path` (symlinks followed), at most `max_bytes` long.

    `what` names the file in messages ("signing key file"); `field` is the config key that
    gave the path. Anything else (missing, not a regular file, too large, unreadable) raises
    BadInputError; nothing blocks, and at most `max_bytes + 1` bytes are ever read.
    """
    try:
        # stat first: a device is refused without opening it (opening some has side effects).
        _refuse_irregular(path, os.stat(path).st_mode, field, what)
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        raise BadInputError(path, f"{what} not found", field=field) from None
    except ValueError:  # os.stat/os.open refuse a NUL inside the path
        raise BadInputError(path, f"{what} path contains a NUL byte", field=field) from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read {what}: {_reason(exc)}", field=field) from None
    try:
        return _read_bounded(fd, path, max_bytes, field, what)
    finally:
        os.close(fd)


def read_regular_text(
    path: Path,
    max_bytes: int,
    *,
    field: str | None = None,
    what: str = "file",
    encoding: str = "utf-8",
) -> str:
    """`read_regular_file` decoded; an undecodable byte is a BadInputError with its line."""
    raw = read_regular_file(path, max_bytes, field=field, what=what)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        name = "UTF-8" if encoding.replace("-", "").lower() == "utf8" else encoding.upper()
        message = f"not {name} text (byte {exc.start})"
        raise BadInputError(path, message, field=field, line=line) from None


def describe_size(size: int) -> str:
    """1048576 -> `1 MiB`, 4096 -> `4 KiB`, 100 -> `100 bytes`."""
    for unit, name in ((MIB, "MiB"), (KIB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def _read_bounded(fd: int, path: Path, max_bytes: int, field: str | None, what: str) -> bytes:
    try:
        info = os.fstat(fd)
        # The path may have been swapped between stat and open: the open file decides.
        _refuse_irregular(path, info.st_mode, field, what)
        if info.st_size > max_bytes:
            _too_large(path, max_bytes, field, what, f"{info.st_size} bytes")
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:  # a file may grow after fstat: never read past the limit
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise BadInputError(path, f"cannot read {what}: {_reason(exc)}", field=field) from None
    _too_large(path, max_bytes, field, what, "it grew while being read")


def _refuse_irregular(path: Path, mode: int, field: str | None, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    via = f" (symlink to {os.path.realpath(path)})" if os.path.islink(path) else ""
    raise BadInputError(path, f"{what} is {kind}{via}, not a regular file", field=field)


def _too_large(path: Path, max_bytes: int, field: str | None, what: str, size: str) -> NoReturn:
    limit = describe_size(max_bytes)
    raise BadInputError(path, f"{what} is larger than {limit} ({size})", field=field)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
