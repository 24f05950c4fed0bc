"""Memory the daemon gives back once it has started (issue 17, item 4).

Start-up touches much that the door never needs again: the interpreter and every library
run their import-time code, the dynamic linker reads their symbol tables, enrollment
decodes photos. What stays afterwards is counted in the daemon's RSS though nothing reads
it. `after_start()` returns two kinds of it:

- free heap memory glibc keeps (malloc_trim): photo buffers of the enrollment;
- pages of read-only file mappings (shared libraries, model files) that are the file's own
  bytes: a page touched again is read back from the page cache (or the file), so dropping
  them changes nothing but RSS, which then counts the pages the door actually uses (about
  40 MB of library pages are read at start-up only). A mapping that holds a private copy
  of any page (relocated data, anything written) is left alone: dropping that would undo
  the change.

Linux and glibc only; elsewhere each step does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

#: madvise(2) advice: drop these pages now (the same value on every Linux architecture).
MADV_DONTNEED: Final = 4
_HEADER: Final = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+ *(.*)$")
#: smaps fields that count pages this process changed (private copies, dirty shared ones).
_CHANGED: Final = ("Anonymous", "Private_Dirty", "Shared_Dirty")

Madvise = Callable[[int, int, int], int]


def libc_madvise() -> Madvise | None:
    """libc's madvise(addr, length, advice), or None where there is none to call."""
    if not sys.platform.startswith("linux"):
        return None
    function = ctypes.CDLL(None, use_errno=True).madvise
    function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    function.restype = ctypes.c_int
    advise: Madvise = function
    return advise


def _clean_file_mappings(smaps: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, path) of each read-only file mapping no page of which was changed."""
    current: tuple[int, int, str] | None = None
    changed = 0
    for line in [*smaps.splitlines(), "0-0 ---p 0 0 0"]:  # a sentinel closes the last one
        header = _HEADER.match(line)
        if header is None:
            key, _, value = line.partition(":")
            if key in _CHANGED:
                changed += int(value.split()[0])
            continue
        if current is not None and changed == 0:
            yield current
        start, end, perms, path = header.groups()
        readable_file = path.startswith("/") and "w" not in perms
        current = (int(start, 16), int(end, 16), path) if readable_file else None
        changed = 0


def release_file_pages() -> int:
    """Drop the resident pages of every read-only file mapping with no changed page;
    returns the bytes advised (0 off Linux)."""
    advise = libc_madvise()
    try:
        smaps = Path("/proc/self/smaps").read_text()
    except OSError:
        return 0
    if advise is None:
        return 0
    released = 0
    for start, end, _path in _clean_file_mappings(smaps):
        if advise(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
    return released


def trim_heap() -> bool:
    """Give free heap memory back to the kernel (glibc's malloc_trim); True if some was."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:  # not glibc (musl has no malloc_trim)
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return bool(trim(0))


def vm_rss_kb() -> int:
    """This process's VmRSS in kB (0 where /proc is not there)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def after_start() -> None:
    """Start-up is over (the first frame was processed): give back what it alone needed,
    log the effect."""
    before = vm_rss_kb()
    trim_heap()
    release_file_pages()
    after = vm_rss_kb()
    logger.info("memory after start: VmRSS %.1f MB (%.1f MB given back)",
                after / 1024, (before - after) / 1024)  # fmt: skip
