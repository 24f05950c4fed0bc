"""Measure the standard storage parts issue 12 item 8 asked about, against what facegate has.

    .venv/bin/python scripts/bench_storage.py journal [--entries 10000] [--appends 2000]
    .venv/bin/python scripts/bench_storage.py journal-tests
    .venv/bin/python scripts/bench_storage.py gallery [--people 100000] [--per-person 5]

`journal`: the MQTT event journal as one JSON file per message (facegate.mqtt.journal, today)
against `SqliteJournal` below (stdlib sqlite3, WAL, synchronous=FULL for appends): append
latency per durable message, startup and resend (pending + ack of every entry) with 10,000
pending, disk bytes, lines of code, a SIGKILL-at-random check that no acknowledged append
is lost, and what each does when the disk is full (a 512 KiB tmpfs: needs root).

`journal-tests`: runs the project's journal, broker and outage tests UNCHANGED against the
sqlite prototype: a snapshot of HEAD (`git archive`) in a temp folder whose journal.py ends
by rebinding `Journal` to `SqliteJournal`, with the snapshot first on PYTHONPATH.

`gallery`: loads a synthetic 100,000-person gallery in fresh processes from the .fgg format
(facegate.gallery), safetensors (library and a plain mmap reader of the same file), .npz
and a folder of .npy files opened with mmap_mode="r". Each is timed twice: `open` = the
arrays in hand, `load` = open + the same guarantees `Gallery.load` gives (checksums over
every byte, the content checks of `Gallery(...)`, per-person columns copied to the heap).
safetensors is a measurement-only dependency: `.venv/bin/pip install safetensors`.

Prints JSON. Every timing is a median over fresh runs on a shared machine: noisy. It imports
facegate from the work tree; while others edit it, measure HEAD instead:
`git archive HEAD daemon | tar -x -C /tmp/fg-head` and `PYTHONPATH=/tmp/fg-head/daemon`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tokenize
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from facegate.mqtt.journal import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES,
    FORMAT_VERSION,
    SEQ_BLOCK,
    SEQ_FILE,
    EntryKind,
    JournalEntry,
)

REPO: Final = Path(__file__).resolve().parent.parent
logger = logging.getLogger("facegate.mqtt.journal")

# === sqlite journal prototype: begin ===========================================================
# A drop-in for facegate.mqtt.journal.Journal (same API, same log lines). Kept here, not in
# the package: it was measured and not adopted (docs/gallery.md, "Storage formats, measured").

DB_FILE: Final = "journal.db"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS entry (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL,
    topic TEXT NOT NULL, payload BLOB NOT NULL, created_at REAL NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_ENTRY: Final = "SELECT seq, kind, topic, payload, created_at, expires_at FROM entry"
# sqlite primary result codes -> errno, so the publisher's `except OSError` still fails closed.
_ERRNO: Final = {sqlite3.SQLITE_FULL: errno.ENOSPC, sqlite3.SQLITE_READONLY: errno.EROFS}


class SqliteJournal:
    """Durable, bounded FIFO of outgoing messages in one sqlite3 WAL database; thread-safe.

    Appends and seq reservations commit with synchronous=FULL: the WAL is fsynced before
    `append` returns, so an acknowledged append survives a power cut (NORMAL would only
    survive SIGKILL). Acks and expiry drops commit with `ack_sync` (NORMAL by default): like
    the file journal's unsynced unlink, a lost delete is one duplicate, never a lost event.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        ack_sync: str = "NORMAL",
        append_sync: str = "FULL",
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("journal bounds must be positive")
        self._dir = directory
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._ack_sync = ack_sync
        self._append_sync = append_sync  # NORMAL only to measure what FULL costs: not power-safe
        self._sync = ""
        self._lock = threading.Lock()
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _as_oserror(self._dir / DB_FILE):
            self._db = self._connect(self._dir / DB_FILE)
            self._migrate_files()
            count, used, newest = self._db.execute(
                "SELECT count(*), total(length(payload)), max(seq) FROM entry"
            ).fetchone()
            row = self._db.execute("SELECT value FROM meta WHERE key = 'reserved'").fetchone()
        self._count, self._bytes = int(count), int(used)
        if count:
            logger.info("journal %s: %d pending message(s)", self._dir, count)
        self._next_seq = self._reserved = max(
            row[0] if row else 0, -1 if newest is None else newest + 1
        )

    def _connect(self, path: Path) -> sqlite3.Connection:
        # sqlite gives -wal and -shm the database file's mode: create it 0600 first.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            return db
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            logger.error("journal %s is unreadable (%s); moved to %s", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    path.with_name(path.name + suffix).replace(aside.with_name(aside.name + suffix))
            return self._connect(path)

    @property
    def directory(self) -> Path:
        """Where the database lives."""
        return self._dir

    def __len__(self) -> int:
        with self._lock:
            return self._count

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
        """Store a message durably (fsynced on return); drop old ones first if full."""
        with self._lock:
            if seq is None:
                seq = self._allocate()
            else:
                newest = self._db.execute("SELECT max(seq) FROM entry").fetchone()[0]
                if newest is not None and seq <= newest:
                    raise ValueError(f"journal seq {seq} is not after the newest entry")
            entry = JournalEntry(seq, kind, topic, payload, self._clock(), expires_at)
            with self._write(self._append_sync):
                dropped = self._make_room(len(payload))
                self._db.execute(
                    "INSERT INTO entry VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, kind.value, topic, payload, entry.created_at, expires_at),
                )
            self._count += 1 - len(dropped)
            self._bytes += len(payload) - sum(len(e.payload) for e in dropped)
            return entry

    def ack(self, seq: int) -> bool:
        """Forget an acknowledged message; False if it was not (or no longer) journaled."""
        with self._lock, self._write(self._ack_sync):
            row = self._db.execute(
                "DELETE FROM entry WHERE seq = ? RETURNING length(payload)", (seq,)
            ).fetchone()
            if row is None:
                return False
            self._count -= 1
            self._bytes -= row[0]
            return True

    def pending(self) -> list[JournalEntry]:
        """Entries to (re)send, oldest first; expired unlocks are dropped here, never returned."""
        now = self._clock()
        with self._lock:
            expired = self._select(" WHERE expires_at <= ? ORDER BY seq", now)
            if expired:
                with self._write(self._ack_sync):
                    self._db.execute("DELETE FROM entry WHERE expires_at <= ?", (now,))
                for entry in expired:
                    logger.info(
                        "dropping expired %s seq=%d topic=%s (expired %.1f s ago)",
                        entry.kind,
                        entry.seq,
                        entry.topic,
                        now - (entry.expires_at or now),
                    )
                    self._count -= 1
                    self._bytes -= len(entry.payload)
            return self._select(" ORDER BY seq")

    def get(self, seq: int) -> JournalEntry | None:
        """The entry with this seq if still journaled."""
        with self._lock:
            found = self._select(" WHERE seq = ?", seq)
            return found[0] if found else None

    # -- internals (called with self._lock held) -------------------------------------------

    def _allocate(self) -> int:
        seq = self._next_seq
        if seq >= self._reserved:
            reserved = seq + SEQ_BLOCK
            with self._write("FULL"):
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('reserved', ?)", (reserved,))
            self._reserved = reserved  # only once durable: a failed write is retried next time
        self._next_seq = seq + 1
        return seq

    def _make_room(self, incoming_bytes: int) -> list[JournalEntry]:
        now, dropped = self._clock(), []
        count, used = self._count, self._bytes
        while count and (count >= self._max_entries or used + incoming_bytes > self._max_bytes):
            # Order: anything already expired, then the oldest event, then the oldest entry.
            (victim,) = self._select(
                " ORDER BY coalesce(expires_at <= ?, 0) DESC, kind != 'event', seq LIMIT 1", now
            )
            if victim.kind == EntryKind.UNLOCK and victim.expired(now):
                logger.info("dropping expired unlock seq=%d to make room", victim.seq)
            else:
                logger.warning(
                    "journal full (%d entries, %d bytes): dropping oldest %s seq=%d topic=%s",
                    count,
                    used,
                    victim.kind,
                    victim.seq,
                    victim.topic,
                )
            self._db.execute("DELETE FROM entry WHERE seq = ?", (victim.seq,))
            dropped.append(victim)
            count, used = count - 1, used - len(victim.payload)
        return dropped

    def _select(self, where: str, *args: object) -> list[JournalEntry]:
        with _as_oserror(self._dir / DB_FILE):
            rows = self._db.execute(_ENTRY + where, args).fetchall()
        return [JournalEntry(s, EntryKind(k), t, bytes(p), c, e) for s, k, t, p, c, e in rows]

    @contextlib.contextmanager
    def _write(self, sync: str) -> Iterator[None]:
        """One transaction committed at `sync`; sqlite errors become OSError (errno kept)."""
        with _as_oserror(self._dir / DB_FILE):
            if sync != self._sync:
                self._db.execute(f"PRAGMA synchronous={sync}")
                self._sync = sync
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _migrate_files(self) -> None:
        """Journal format 1 (one JSON file per message, seq.json) -> rows, once."""
        for tmp in self._dir.glob("*.tmp"):
            logger.warning("removing partially written journal file %s", tmp)
            tmp.unlink(missing_ok=True)
        files, seq_file = sorted(self._dir.glob("[0-9]*.json")), self._dir / SEQ_FILE
        if not files and not seq_file.exists():
            return
        rows, reserved = [], 0
        for path in files:
            try:
                record = json.loads(path.read_bytes())
                if record["v"] != FORMAT_VERSION:
                    raise ValueError(f"unknown journal format version {record['v']!r}")
                row = (int(record["seq"]), EntryKind(record["kind"]).value, str(record["topic"]))
                rows.append(
                    (
                        *row,
                        str(record["payload"]).encode(),
                        float(record["created_at"]),
                        None if record["expires_at"] is None else float(record["expires_at"]),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                aside = path.with_name(path.name + ".corrupt")
                logger.error("journal file %s is unreadable (%s); moved to %s", path, exc, aside)
                path.replace(aside)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            reserved = int(json.loads(seq_file.read_bytes())["reserved"])
        with self._write("FULL"):
            self._db.executemany("INSERT OR IGNORE INTO entry VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute(
                "INSERT INTO meta VALUES ('reserved', ?) ON CONFLICT(key) "
                "DO UPDATE SET value = max(value, excluded.value)",
                (reserved,),
            )
        for path in files:  # only once the rows are durable: a crash before re-migrates
            path.unlink(missing_ok=True)
        seq_file.unlink(missing_ok=True)
        logger.info("journal %s: moved %d file(s) into %s", self._dir, len(rows), DB_FILE)


@contextlib.contextmanager
def _as_oserror(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_IOERR) & 0xFF
        raise OSError(_ERRNO.get(code, errno.EIO), f"{path}: {exc}") from exc


# === sqlite journal prototype: end =============================================================


# --- journal: run the project's tests unchanged against the prototype ---------------------------

JOURNAL_TESTS: Final = (
    ["tests/test_mqtt_journal.py"],
    ["tests/test_mqtt_broker.py"],
    ["tests/test_daemon.py", "-k", "outage or kill"],
)
_SWAP: Final = """

# bench_storage.py journal-tests: the sqlite prototype under the file journal's name.
from bench_storage import SqliteJournal as Journal  # noqa: E402
"""


def journal_tests(ref: str = "HEAD") -> dict[str, Any]:
    """Each selection on a snapshot of `ref`, once with the file journal, once with sqlite."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fg-journal-tests-") as tmp:
        for variant in ("files", "sqlite"):
            tree = Path(tmp) / variant
            tree.mkdir()
            archive = subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO),
                    "archive",
                    ref,
                    "daemon",
                    "tests",
                    "scripts",
                    "setup.cfg",
                    "pyproject.toml",
                ],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            (tree / "models").symlink_to(REPO / "models")
            if variant == "sqlite":
                with (tree / "daemon/facegate/mqtt/journal.py").open("a") as file:
                    file.write(_SWAP)
            env = {**os.environ, "PYTHONPATH": f"{tree / 'daemon'}:{REPO / 'scripts'}"}
            which = subprocess.run(
                [sys.executable, "-c", "import facegate.mqtt.journal as j; print(j.Journal)"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            out[f"{variant}: Journal is"] = which
            for selection in JOURNAL_TESTS:
                start = time.perf_counter()
                run = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
                    cwd=tree,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                lines = run.stdout.strip().splitlines()
                failed = [line.split()[1] for line in lines if line.startswith("FAILED")]
                out[f"{variant}: {' '.join(selection)}"] = {
                    "exit": run.returncode,
                    "summary": lines[-1] if lines else run.stderr[-500:],
                    "failed": failed,
                    "wall_s": round(time.perf_counter() - start, 1),
                }
                print(
                    json.dumps({variant: out[f"{variant}: {' '.join(selection)}"]}), file=sys.stderr
                )
    return out


# --- journal: measurements ---------------------------------------------------------------------


def _file_journal(directory: Path) -> Any:
    from facegate.mqtt.journal import Journal

    return Journal(directory)


JOURNALS: Final[dict[str, Callable[[Path], Any]]] = {
    "files": _file_journal,
    "sqlite_full": lambda d: SqliteJournal(d),  # appends FULL, acks NORMAL: the candidate
    "sqlite_full_acks_full": lambda d: SqliteJournal(d, ack_sync="FULL"),
    "sqlite_normal": lambda d: SqliteJournal(d, append_sync="NORMAL"),  # not power-cut safe
}


def event_payload(i: int) -> bytes:
    """An event as the daemon publishes it (about 260 bytes)."""
    return json.dumps(
        {
            "event_id": f"{i:032x}",
            "device": "pi",
            "door": "front",
            "decision": "granted",
            "reason": "matched",
            "person": "alice",
            "name": "Alice Example",
            "distance": 0.61234,
            "margin": 0.31234,
            "frames": 5,
            "track": i,
            "ts": 1.7e9 + i,
            "quality": 0.87,
        },
        separators=(",", ":"),
    ).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def append_latency(kind: str, directory: Path, appends: int) -> dict[str, float]:
    journal = JOURNALS[kind](directory)
    times = []
    for i in range(appends):
        start = time.perf_counter()
        journal.append(EntryKind.EVENT, "facegate/front/event", event_payload(i))
        times.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": percentile(times, 0.5),
        "p99_ms": percentile(times, 0.99),
        "max_ms": max(times),
        "mean_ms": statistics.fmean(times),
    }


def fill(kind: str, directory: Path, entries: int) -> None:
    journal = JOURNALS[kind](directory)
    for i in range(entries):
        journal.append(EntryKind.EVENT, "facegate/front/event", event_payload(i))


def disk_bytes(directory: Path) -> dict[str, int]:
    """Apparent bytes and allocated bytes (st_blocks) of the folder and what it holds."""
    paths = [directory, *directory.iterdir()]
    stats = [p.stat() for p in paths]
    return {
        "files": len(paths) - 1,
        "apparent": sum(s.st_size for s in stats),
        "allocated": sum(s.st_blocks * 512 for s in stats),
    }


def fsync_tree(directory: Path) -> None:
    """fsync every file and the folder: unlinking a never-written (dirty) copy costs nothing."""
    for path in [*directory.iterdir(), directory]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def evict(directory: Path) -> None:
    """Drop this folder's files from the page cache (only ours: other work is not touched)."""
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def drain(kind: str, directory: Path) -> dict[str, float]:
    """Startup, the resend's pending() and one ack per entry, as a fresh daemon does them."""
    t0 = time.perf_counter()
    journal = JOURNALS[kind](directory)
    t1 = time.perf_counter()
    pending = journal.pending()
    t2 = time.perf_counter()
    for entry in pending:
        journal.ack(entry.seq)
    t3 = time.perf_counter()
    assert len(journal) == 0
    return {
        "startup_ms": (t1 - t0) * 1000,
        "pending_ms": (t2 - t1) * 1000,
        "ack_all_s": t3 - t2,
        "entries": len(pending),
    }


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def bench_journal(entries: int, appends: int, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fg-journal-") as tmp:
        root = Path(tmp)
        results["filesystem"] = filesystem(root)
        latency: dict[str, list[dict[str, float]]] = {k: [] for k in JOURNALS}
        for r in range(rounds):  # interleaved, so a busy spell hits every kind alike
            for kind in JOURNALS:
                latency[kind].append(
                    _child("_append", kind, str(root / f"a-{kind}-{r}"), str(appends))
                )
        for kind, runs in latency.items():
            results[f"append/{kind}"] = {
                k: round(statistics.median(run[k] for run in runs), 3) for k in runs[0]
            }
        for kind in ("files", "sqlite_full", "sqlite_full_acks_full"):
            full = root / f"full-{kind}"
            start = time.perf_counter()
            _child("_fill", kind, str(full), str(entries))
            print(
                f"{kind}: filled {entries} in {time.perf_counter() - start:.1f} s", file=sys.stderr
            )
            results[f"disk/{kind}/{entries}_pending"] = disk_bytes(full)
            warm: list[dict[str, float]] = []
            cold: list[dict[str, float]] = []
            for r in range(rounds):
                for runs, cache in ((warm, "warm"), (cold, "cold")):
                    copy = root / f"drain-{kind}-{cache}-{r}"
                    shutil.copytree(full, copy)
                    fsync_tree(copy)  # as the journal left them: on disk, not dirty in memory
                    if cache == "cold":
                        evict(copy)
                    runs.append(_child("_drain", kind, str(copy)))
                    if cache == "warm" and r == 0:
                        results[f"disk/{kind}/after_drain"] = disk_bytes(copy)
                    shutil.rmtree(copy)
            for cache, runs in (("warm", warm), ("cold", cold)):
                results[f"drain_{entries}/{kind}/{cache}"] = {
                    k: round(statistics.median(run[k] for run in runs), 3) for k in runs[0]
                }
    results["lines"] = journal_lines()
    return results


def code_lines(source: str) -> int:
    """Lines holding code: no blank lines, comments or docstrings."""
    import ast

    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.update(range(body[0].lineno, (body[0].end_lineno or 0) + 1))
    lines: set[int] = set()
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def journal_lines() -> dict[str, dict[str, int]]:
    """The file journal as shipped, and what a sqlite journal.py would hold: the shared head
    of journal.py (imports, constants, EntryKind, JournalEntry) + the prototype above."""
    current = (REPO / "daemon/facegate/mqtt/journal.py").read_text()
    head = current[: current.index("class Journal:")]
    mine = Path(__file__).read_text()
    proto = mine[mine.index("# === sqlite journal prototype: begin") :]
    proto = proto[: proto.index("# === sqlite journal prototype: end")]
    start = proto.index("    def _migrate_files")
    migration = textwrap.dedent(proto[start : proto.index("\n\n\n", start)])
    # What the sqlite module needs beyond the shared head: sqlite3, contextlib, errno, os.
    imports = "import contextlib\nimport errno\nimport os\nimport sqlite3\n"
    sqlite_module = head + imports + proto
    return {
        "files (journal.py)": {"lines": current.count("\n"), "code": code_lines(current)},
        "sqlite (head + prototype)": {
            "lines": sqlite_module.count("\n"),
            "code": code_lines(sqlite_module),
        },
        "of which migration from files": {
            "lines": migration.count("\n"),
            "code": code_lines(migration),
        },
    }


def filesystem(path: Path) -> str:
    """The filesystem type under `path`: fsync on tmpfs costs nothing, so say which it was."""
    out = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)], capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


_KILLEE_EVERY_ACK: Final = 3


def killee(kind: str, directory: Path) -> None:
    """Append forever, printing `+seq` once append returned and `-seq` before each ack."""
    journal = JOURNALS[kind](directory)
    for i in range(10**9):
        entry = journal.append(EntryKind.EVENT, "facegate/front/event", event_payload(i))
        print(f"+{entry.seq}", flush=True)
        if i % _KILLEE_EVERY_ACK == 0:
            # Reported before the ack: a kill between the two must not look like a loss.
            print(f"-{entry.seq}", flush=True)
            journal.ack(entry.seq)


def sigkill_check(kills: int) -> dict[str, Any]:
    """SIGKILL an appending process at random moments: every append that returned must be
    pending after a restart, with its payload; an acked entry coming back is a duplicate."""
    out: dict[str, Any] = {}
    rng = random.Random(12)
    with tempfile.TemporaryDirectory(prefix="fg-kill-") as tmp:
        for kind in ("files", "sqlite_full"):
            lost = duplicates = appended = 0
            for k in range(kills):
                directory = Path(tmp) / f"{kind}-{k}"
                proc = subprocess.Popen(
                    [sys.executable, __file__, "_killee", kind, str(directory)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert proc.stdout is not None
                first = proc.stdout.readline()  # imports done, appending: now kill at random
                time.sleep(rng.uniform(0.05, 1.0))
                proc.send_signal(signal.SIGKILL)
                lines = [first, *proc.communicate()[0].split()]
                added = {int(x[1:]) for x in lines if x.startswith("+")}
                acked = {int(x[1:]) for x in lines if x.startswith("-")}
                pending = {e.seq: e for e in JOURNALS[kind](directory).pending()}
                for seq in added - acked:
                    if seq not in pending or pending[seq].payload != event_payload(seq):
                        lost += 1
                duplicates += len(acked & pending.keys())
                appended += len(added)
            out[kind] = {
                "kills": kills,
                "appends_acknowledged": appended,
                "lost": lost,
                "acked_but_back": duplicates,
            }
    return out


def checkpoints(journal: SqliteJournal) -> dict[str, str]:
    out = {}
    for mode in ("PASSIVE", "RESTART", "TRUNCATE"):
        try:
            out[mode] = str(journal._db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone())
        except sqlite3.Error as exc:
            out[mode] = f"{type(exc).__name__}: {exc}"
    return out


def disk_full_check() -> dict[str, Any]:
    """Fill a 512 KiB tmpfs (needs root): the append that does not fit must raise OSError
    (ENOSPC) and leave no entry; acks must still work and free room for the next append."""
    out: dict[str, Any] = {}
    for kind in ("files", "sqlite_full"):
        mount = Path(tempfile.mkdtemp(prefix="fg-full-"))
        try:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            mount.rmdir()
            return {"skipped": f"cannot mount a tmpfs: {exc}"}
        try:
            journal = JOURNALS[kind](mount / "j")
            stored, error, payload = [], None, b'{"x":"' + b"x" * 1000 + b'"}'
            while error is None:
                try:
                    stored.append(journal.append(EntryKind.EVENT, "e", payload).seq)
                except OSError as exc:
                    error = exc
            result: dict[str, Any] = {
                "appended_before_full": len(stored),
                "error": f"{type(error).__name__} errno={errno.errorcode.get(error.errno or 0)}",
                "pending_after_error_is_stored": [e.seq for e in journal.pending()] == stored,
            }
            acks_ok = 0
            for seq in stored[: len(stored) // 2]:
                try:
                    acks_ok += journal.ack(seq)
                except OSError as exc:
                    result["ack_error"] = str(exc)
                    if isinstance(journal, SqliteJournal):  # can a checkpoint make room?
                        result["checkpoints"] = checkpoints(journal)
                    break
            result["acks_ok_of_half"] = f"{acks_ok}/{len(stored) // 2}"
            try:
                journal.append(EntryKind.EVENT, "e", payload)
                result["append_after_acks"] = "ok"
            except OSError as exc:
                result["append_after_acks"] = f"failed: {exc}"
            del journal
            reopened = JOURNALS[kind](mount / "j")
            result["reopened_pending"] = len(reopened.pending())
            out[kind] = result
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
            mount.rmdir()
    return out


# --- gallery: .fgg against standard formats ----------------------------------------------------

FINGERPRINT: Final = "0" * 64
CRC_CHUNK: Final = 16 << 20  # as facegate.gallery: CRC-32 per 16 MiB, chunks checked in threads
FORMATS: Final = ("fgg", "safetensors_lib", "safetensors_mmap", "npz", "npy_mmap")
FILE_OF: Final = {
    "fgg": "g.fgg",
    "safetensors_lib": "g.safetensors",
    "safetensors_mmap": "g.safetensors",
    "npz": "g.npz",
    "npy_mmap": "npy",
}


def synthetic_columns(people: int, per_person: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The columns of facegate.gallery schema 1 for `people` x `per_person` unit embeddings,
    built vectorised (facegate.bench.synthetic_gallery builds one object per row: minutes)."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = people * per_person
    centres = rng.normal(size=(people, 1, 128)).astype(np.float32)
    emb = centres + rng.normal(scale=0.05, size=(people, per_person, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    template = emb.mean(axis=1)
    template /= np.linalg.norm(template, axis=1, keepdims=True)
    ids = np.char.add("p", np.char.zfill(np.arange(people).astype("<U6"), 6))
    arrays = {
        "embedding": emb.reshape(n, 128),
        "person": np.repeat(np.arange(people, dtype=np.int32), per_person),
        "image_sha256": rng.integers(0, 256, size=(n, 32), dtype=np.uint8),
        "source": np.array(
            [f"people/p{i // per_person:06d}/{i % per_person}.jpg".encode() for i in range(n)]
        ),
        "face_px": np.full(n, 100.0, np.float32),
        "sharpness": np.full(n, 50.0, np.float32),
        "yaw_deg": np.full(n, 5.0, np.float32),
        "embedded_at": np.full(n, 1.7e9, np.float64),
        "person_id": ids,
        "template": template.astype(np.float32),
        "name": np.char.add("Person ", ids),
        "doors": np.full(people, '["*"]', "<U5"),
        "schedule": np.full(people, "", "<U1"),
        "valid_from": np.full(people, "", "<U1"),
        "valid_until": np.full(people, "", "<U1"),
        "disabled": np.zeros(people, np.bool_),
    }
    meta = {
        "schema": 1,
        "fingerprint": FINGERPRINT,
        "created": "2026-01-01T00:00:00+00:00",
        "enrollment_sha256": "",
        "schedules": {},
    }
    return meta, arrays


def as_u8(array: Any) -> Any:
    """Any fixed-width array as (rows, bytes) uint8: how string columns go into safetensors."""
    import numpy as np

    flat = np.ascontiguousarray(array).view(np.uint8)
    return flat.reshape(len(array), -1) if len(array) else flat.reshape(0, array.dtype.itemsize)


def chunk_crcs(arrays: dict[str, Any]) -> dict[str, list[int]]:
    """CRC-32 of every CRC_CHUNK bytes of every array, on all cores (zlib drops the GIL)."""
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    chunks = [
        (name, flat[i : i + CRC_CHUNK])
        for name, a in arrays.items()
        for flat in (as_u8(a).reshape(-1).data,)
        for i in range(0, max(len(flat), 1), CRC_CHUNK)
    ]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        values = list(pool.map(zlib.crc32, [c for _, c in chunks]))
    out: dict[str, list[int]] = {name: [] for name in arrays}
    for (name, _), value in zip(chunks, values, strict=True):
        out[name].append(value)
    return out


def write_formats(directory: Path, people: int, per_person: int) -> dict[str, int]:
    """The same gallery in every format; returns bytes on disk per format."""
    import numpy as np
    from safetensors.numpy import save_file

    from facegate.gallery import Gallery

    meta, arrays = synthetic_columns(people, per_person)
    Gallery(meta, arrays).save(directory / FILE_OF["fgg"], backup=False)
    # Checksums and the string dtypes ride in the formats' own metadata slots.
    extra = {"crc32": chunk_crcs(arrays), "dtypes": {k: a.dtype.str for k, a in arrays.items()}}
    header = json.dumps({**meta, **extra})
    save_file(
        {k: as_u8(a) if a.dtype.kind in "US" else a for k, a in arrays.items()},
        str(directory / FILE_OF["safetensors_lib"]),
        metadata={"facegate": header},
    )
    np.savez(
        directory / FILE_OF["npz"],
        __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
        **arrays,
    )
    folder = directory / FILE_OF["npy_mmap"]
    folder.mkdir()
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    (folder / "meta.json").write_text(header)
    sizes = {}
    for fmt in FORMATS:
        path = directory / FILE_OF[fmt]
        files = list(path.iterdir()) if path.is_dir() else [path]
        sizes[fmt] = sum(f.stat().st_size for f in files)
    return sizes


def open_format(fmt: str, path: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(meta, arrays, how) with the arrays in hand: mapped or copied, as the format allows.
    `how` says whether the format already checked every byte (npz: zip CRC-32 per member)."""
    import mmap

    import numpy as np

    if fmt == "fgg":  # the layout in gallery.py's docstring, without its checks
        with path.open("rb") as file:
            buf = np.frombuffer(mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ), np.uint8)
        (size,) = np.frombuffer(buf[16:24], "<u8")
        meta = json.loads(bytes(buf[32 : 32 + int(size)]))
        arrays = {
            d["name"]: buf[
                d["offset"] : d["offset"] + np.dtype(d["dtype"]).itemsize * int(np.prod(d["shape"]))
            ]
            .view(d["dtype"])
            .reshape(d["shape"])
            for d in meta.pop("arrays")
        }
        return meta, arrays, "unchecked"
    if fmt == "safetensors_lib":
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as file:
            meta = json.loads(file.metadata()["facegate"])
            arrays = {k: file.get_tensor(k) for k in file.keys()}  # noqa: SIM118
        return meta, _restore(meta, arrays), "unchecked"
    if fmt == "safetensors_mmap":  # the format is 8 bytes of length, JSON, raw data: map it
        with path.open("rb") as file:
            buf = np.frombuffer(mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ), np.uint8)
        (size,) = np.frombuffer(buf[:8], "<u8")
        header = json.loads(bytes(buf[8 : 8 + int(size)]))
        meta = json.loads(header.pop("__metadata__")["facegate"])
        st = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "U8": "|u1", "BOOL": "|b1"}
        base = 8 + int(size)
        arrays = {
            k: buf[base + d["data_offsets"][0] : base + d["data_offsets"][1]]
            .view(st[d["dtype"]])
            .reshape(d["shape"])
            for k, d in header.items()
        }
        return meta, _restore(meta, arrays), "unchecked"
    if fmt == "npz":
        with np.load(path) as file:  # zipfile checks each member's CRC-32 as it is read
            arrays = {k: file[k] for k in file.files}
        return json.loads(arrays.pop("__meta__").tobytes()), arrays, "checked"
    if fmt == "npy_mmap":
        meta = json.loads((path / "meta.json").read_text())
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in path.glob("*.npy")}
        return meta, arrays, "unchecked"
    raise ValueError(fmt)


def _restore(meta: dict[str, Any], arrays: dict[str, Any]) -> dict[str, Any]:
    """String columns stored as (rows, bytes) uint8 back to their numpy dtype (a view)."""
    out = {}
    for name, array in arrays.items():
        dtype = meta["dtypes"][name]
        out[name] = array.view(dtype).reshape(len(array)) if dtype[1] in "US" else array
    return out


def load_format(fmt: str, path: Path) -> Any:
    """Open, then give Gallery.load's guarantees: every byte checksummed, the content checks
    of Gallery(...), per-person columns copied to the heap."""
    from facegate.gallery import Gallery

    if fmt == "fgg":
        return Gallery.load(path, FINGERPRINT)
    meta, arrays, how = open_format(fmt, path)
    crcs = meta.pop("crc32", None)
    meta.pop("dtypes", None)
    if how == "unchecked" and chunk_crcs(arrays) != crcs:
        raise ValueError("checksum mismatch")
    rows = len(arrays["embedding"])
    arrays = {k: a if len(a) == rows and k != "person_id" else a.copy() for k, a in arrays.items()}
    return Gallery(meta, arrays)


def time_load(fmt: str, path: Path, level: str) -> dict[str, float]:
    """In the fresh process: import, then time one open or load."""
    import numpy  # noqa: F401  (imports are not what is measured)

    from facegate.gallery import Gallery  # noqa: F401

    if fmt.startswith("safetensors"):
        import safetensors.numpy  # noqa: F401
    start = time.perf_counter()
    if level == "open":
        _, arrays, _ = open_format(fmt, path)
        # Touch the matcher's input: a mapping is only paged in when read.
        float(arrays["template"].sum())
    else:
        gallery = load_format(fmt, path)
        float(gallery.templates.sum())
    ms = (time.perf_counter() - start) * 1000
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(status.split("VmHWM:")[1].split()[0])
    return {"ms": ms, "max_rss_mb": hwm_kb / 1024}


def check_formats(directory: Path) -> dict[str, str]:
    """Every format loads to the same gallery, and refuses a file with one flipped bit."""
    from facegate.gallery import Gallery

    reference = Gallery.load(directory / FILE_OF["fgg"], FINGERPRINT)
    out = {}
    for fmt in FORMATS:
        path = directory / FILE_OF[fmt]
        same = load_format(fmt, path).same_content(reference)
        target = path / "embedding.npy" if path.is_dir() else path
        original = target.read_bytes()
        at = len(original) * 3 // 5  # inside the embeddings in every layout
        try:
            target.write_bytes(original[:at] + bytes([original[at] ^ 0x80]) + original[at + 1 :])
            load_format(fmt, path)
            refused = "LOADED"
        except Exception as exc:  # noqa: BLE001  (any refusal will do; which one is reported)
            refused = type(exc).__name__
        finally:
            target.write_bytes(original)
        out[fmt] = f"same content: {same}; one bit flipped: {refused}"
    return out


def bench_gallery_formats(people: int, per_person: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fg-gallery-") as tmp:
        directory = Path(tmp)
        start = time.perf_counter()
        sizes = write_formats(directory, people, per_person)
        print(
            f"wrote {people} x {per_person} in every format in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
        out["filesystem"] = filesystem(directory)
        out["mb_on_disk"] = {k: round(v / 1e6, 1) for k, v in sizes.items()}
        out["same_content_and_corruption_refused"] = check_formats(directory)
        for level, cache in (("open", "warm"), ("load", "warm"), ("load", "cold")):
            times: dict[str, list[dict[str, float]]] = {f: [] for f in FORMATS}
            for r in range(runs + 1):  # interleaved; run 0 only warms the page cache
                for fmt in FORMATS:
                    path = directory / FILE_OF[fmt]
                    if cache == "cold":
                        evict(directory)
                    result = _child("_gallery", fmt, str(path), level)
                    if r:
                        times[fmt].append(result)
            for fmt, results in times.items():
                ms = [x["ms"] for x in results]
                out[f"{level}_{cache}/{fmt}"] = {
                    "median_ms": round(statistics.median(ms), 1),
                    "min_ms": round(min(ms), 1),
                    "max_ms": round(max(ms), 1),
                    "max_rss_mb": round(statistics.median(x["max_rss_mb"] for x in results)),
                }
                print(fmt, level, cache, out[f"{level}_{cache}/{fmt}"], file=sys.stderr)
    return out


# --- command line ------------------------------------------------------------------------------


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    argv = sys.argv[1:]
    if argv and argv[0].startswith("_"):  # the fresh processes the benchmarks start
        command, kind, directory, *rest = argv
        if command == "_killee":
            killee(kind, Path(directory))
        elif command == "_append":
            print(json.dumps(append_latency(kind, Path(directory), int(rest[0]))))
        elif command == "_fill":
            fill(kind, Path(directory), int(rest[0]))
            print("{}")
        elif command == "_drain":
            print(json.dumps(drain(kind, Path(directory))))
        elif command == "_gallery":
            print(json.dumps(time_load(kind, Path(directory), rest[0])))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    journal = sub.add_parser("journal", help="file journal vs sqlite: latency, resend, disk")
    journal.add_argument("--entries", type=int, default=10_000)
    journal.add_argument("--appends", type=int, default=2000)
    journal.add_argument("--rounds", type=int, default=3)
    journal.add_argument("--kills", type=int, default=10)
    sub.add_parser("journal-tests", help="the journal/broker/outage tests against sqlite")
    gallery = sub.add_parser("gallery", help=".fgg vs safetensors, .npz, .npy (mmap): load")
    gallery.add_argument("--people", type=int, default=100_000)
    gallery.add_argument("--per-person", type=int, nargs="+", default=[5, 1])
    gallery.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.command == "journal":
        results.update(bench_journal(args.entries, args.appends, args.rounds))
        results["sigkill"] = sigkill_check(args.kills)
        results["disk_full"] = disk_full_check()
    elif args.command == "journal-tests":
        results.update(journal_tests())
    elif args.command == "gallery":
        for per_person in args.per_person:
            key = f"{args.people}_people_x_{per_person}"
            results[key] = bench_gallery_formats(args.people, per_person, args.runs)
    # Other work on the machine skews every timing here: record how busy it was.
    results["load_average_1min"] = os.getloadavg()[0]
    results["cpus"] = os.cpu_count() or 0
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
