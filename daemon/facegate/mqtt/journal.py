"""On-disk journal of outgoing MQTT messages, kept until the broker acknowledges them.

Format: one JSON file per message, ``<seq:020d>.json``, written atomically with
``facegate.storage`` (temp file, fsync, rename, fsync dir) and deleted on PUBACK. Chosen
over an append-only log because
a crash can only leave a whole file or a stray ``*.tmp`` (removed on open), an ack is a
single unlink (no compaction pass, no rewrite of a growing file on a flash card), the
bound is a file count, and replay order is the file name order. The cost, one fsync pair
per message, is fine at door-event rates (a few per second at most).

Deletes are not fsynced: a lost delete after a crash means one duplicate delivery
(at-least-once; consumers de-duplicate by ``event_id``), never a lost event.

``seq.json`` reserves sequence numbers in blocks so that ``seq`` keeps increasing across
restarts even when every entry was acknowledged and deleted; unlock ``seq`` uses it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from facegate.storage import atomic_write_bytes

logger = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
SEQ_FILE: Final = "seq.json"
SEQ_BLOCK: Final = 1000
DEFAULT_MAX_ENTRIES: Final = 10_000
DEFAULT_MAX_BYTES: Final = 32 * 1024 * 1024
_ENTRY_SUFFIX: Final = ".json"
_TMP_SUFFIX: Final = ".tmp"


class EntryKind(StrEnum):
    """What a journaled message is; decides drop order and expiry handling."""

    EVENT = "event"
    UNLOCK = "unlock"
    RESULT = "result"


@dataclass(frozen=True)
class JournalEntry:
    """One outgoing message. ``expires_at`` (epoch s) set means: never send after it."""

    seq: int
    kind: EntryKind
    topic: str
    payload: bytes
    created_at: float
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        """True once the message must not be sent any more."""
        return self.expires_at is not None and self.expires_at <= now


class Journal:
    """Durable, bounded FIFO of outgoing messages; thread-safe."""

    def __init__(
        self,
        directory: Path,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("journal bounds must be positive")
        self._dir = directory
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, JournalEntry] = OrderedDict()
        self._bytes = 0
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._next_seq, self._reserved = self._load()

    @property
    def directory(self) -> Path:
        """Where the entries live."""
        return self._dir

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes_used(self) -> int:
        """Payload bytes currently held."""
        with self._lock:
            return self._bytes

    def next_seq(self) -> int:
        """Allocate a sequence number that was never handed out before, even across restarts."""
        with self._lock:
            return self._allocate()

    def append(
        self,
        kind: EntryKind,
        topic: str,
        payload: bytes,
        *,
        seq: int | None = None,
        expires_at: float | None = None,
    ) -> JournalEntry:
        """Store a message durably; drop old ones first if the journal is full."""
        with self._lock:
            if seq is None:
                seq = self._allocate()
            elif self._entries and seq <= next(reversed(self._entries)):
                raise ValueError(f"journal seq {seq} is not after the newest entry")
            entry = JournalEntry(seq, kind, topic, payload, self._clock(), expires_at)
            self._make_room(len(payload))
            _write(self._path(seq), _encode(entry))
            self._entries[seq] = entry
            self._bytes += len(payload)
            return entry

    def ack(self, seq: int) -> bool:
        """Forget an acknowledged message; False if it was not (or no longer) journaled."""
        with self._lock:
            entry = self._entries.pop(seq, None)
            if entry is None:
                return False
            self._remove(entry)
            return True

    def pending(self) -> list[JournalEntry]:
        """Entries to (re)send, oldest first; expired unlocks are dropped here, never returned."""
        now = self._clock()
        with self._lock:
            for entry in [e for e in self._entries.values() if e.expired(now)]:
                logger.info(
                    "dropping expired %s seq=%d topic=%s (expired %.1f s ago)",
                    entry.kind,
                    entry.seq,
                    entry.topic,
                    now - (entry.expires_at or now),
                )
                del self._entries[entry.seq]
                self._remove(entry)
            return list(self._entries.values())

    def get(self, seq: int) -> JournalEntry | None:
        """The entry with this seq if still journaled."""
        with self._lock:
            return self._entries.get(seq)

    # -- internals (called with self._lock held) -------------------------------------------

    def _allocate(self) -> int:
        seq = self._next_seq
        if seq >= self._reserved:
            # Persist the reservation before the number is used, so a crash never reuses it.
            reserved = seq + SEQ_BLOCK
            _write(self._dir / SEQ_FILE, json.dumps({"reserved": reserved}).encode())
            self._reserved = reserved  # only once durable: a failed write is retried next time
        self._next_seq = seq + 1
        return seq

    def _make_room(self, incoming_bytes: int) -> None:
        now = self._clock()
        while self._entries and (
            len(self._entries) >= self._max_entries
            or self._bytes + incoming_bytes > self._max_bytes
        ):
            victim = self._pick_victim(now)
            if victim.kind == EntryKind.UNLOCK and victim.expired(now):
                logger.info("dropping expired unlock seq=%d to make room", victim.seq)
            else:
                logger.warning(
                    "journal full (%d entries, %d bytes): dropping oldest %s seq=%d topic=%s",
                    len(self._entries),
                    self._bytes,
                    victim.kind,
                    victim.seq,
                    victim.topic,
                )
            del self._entries[victim.seq]
            self._remove(victim)

    def _pick_victim(self, now: float) -> JournalEntry:
        # Order: anything already expired, then the oldest event, then the oldest entry.
        for entry in self._entries.values():
            if entry.expired(now):
                return entry
        for entry in self._entries.values():
            if entry.kind == EntryKind.EVENT:
                return entry
        return next(iter(self._entries.values()))

    def _remove(self, entry: JournalEntry) -> None:
        self._bytes -= len(entry.payload)
        self._path(entry.seq).unlink(missing_ok=True)

    def _path(self, seq: int) -> Path:
        return self._dir / f"{seq:020d}{_ENTRY_SUFFIX}"

    def _load(self) -> tuple[int, int]:
        for tmp in self._dir.glob("*" + _TMP_SUFFIX):
            # A crash between write and rename: the message was never acknowledged to
            # the caller as stored, so discarding it is correct.
            logger.warning("removing partially written journal file %s", tmp)
            tmp.unlink(missing_ok=True)
        for path in sorted(self._dir.glob("[0-9]*" + _ENTRY_SUFFIX)):
            entry = self._read_entry(path)
            if entry is not None:
                self._entries[entry.seq] = entry
                self._bytes += len(entry.payload)
        reserved = self._read_reserved()
        newest = next(reversed(self._entries)) + 1 if self._entries else 0
        if self._entries:
            logger.info("journal %s: %d pending message(s)", self._dir, len(self._entries))
        next_seq = max(reserved, newest)
        return next_seq, next_seq

    def _read_entry(self, path: Path) -> JournalEntry | None:
        try:
            return _decode(path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Keep the bytes for a human, but never let one bad file stop the daemon.
            aside = path.with_name(path.name + ".corrupt")
            logger.error("journal file %s is unreadable (%s); moved to %s", path, exc, aside)
            path.replace(aside)
            return None

    def _read_reserved(self) -> int:
        path = self._dir / SEQ_FILE
        try:
            value = json.loads(path.read_bytes())["reserved"]
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.error("journal %s unreadable (%s); seq restarts after newest entry", path, exc)
            return 0
        return int(value) if isinstance(value, int) else 0


def _write(path: Path, data: bytes) -> None:
    # The journal lock serialises writers and _load() removes stray *.tmp files, so skip
    # storage's per-path lock file (one per message, never deleted) and directory scan.
    atomic_write_bytes(path, data, mode=0o600, lock=False)


def _encode(entry: JournalEntry) -> bytes:
    record = {
        "v": FORMAT_VERSION,
        "seq": entry.seq,
        "kind": entry.kind.value,
        "topic": entry.topic,
        "payload": entry.payload.decode(),
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def _decode(data: bytes) -> JournalEntry:
    record = json.loads(data)
    if record["v"] != FORMAT_VERSION:
        raise ValueError(f"unknown journal format version {record['v']!r}")
    expires_at = record["expires_at"]
    return JournalEntry(
        seq=int(record["seq"]),
        kind=EntryKind(record["kind"]),
        topic=str(record["topic"]),
        payload=str(record["payload"]).encode(),
        created_at=float(record["created_at"]),
        expires_at=None if expires_at is None else float(expires_at),
    )
