"""The audit trail: every decision and claim outcome as a row in a local SQLite file.

One row per decision (granted / denied / unknown) and per answered verify request
(kind `claim`): when, which door, who, the reason code and text, distance, margin, frames,
whether it unlocked, the event / request / track ids and, when snapshots are on, the name
of a face JPEG kept beside the file. Never an embedding.

Crash safety: WAL journal, one transaction per row. A SIGKILL (or a power cut) in the
middle of a write leaves the file consistent and loses at most the row being written;
`synchronous=NORMAL` is WAL's documented crash-safe setting (a power cut may also lose
the last rows committed before it, never corrupt the file). Bounded: rows older than the
retention and beyond `max_rows` are deleted (pruned at open and then regularly), and the
space they held is reused, so the file stops growing.

Reading (`facegate log`) opens the file read-only and can run while the daemon writes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

from facegate.decisions import ClaimOutcome, Decision
from facegate.errors import BadInputError

logger = logging.getLogger(__name__)

Kind = Literal["granted", "denied", "unknown", "claim"]
KINDS: Final[tuple[Kind, ...]] = ("granted", "denied", "unknown", "claim")
SCHEMA_VERSION: Final = 1
#: Rows deleted per transaction while pruning: keeps each write lock short.
PRUNE_BATCH: Final = 10_000
_UNITS_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE: Final = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    door TEXT NOT NULL,
    kind TEXT NOT NULL,
    person TEXT,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    distance REAL,
    margin REAL,
    frames INTEGER,
    unlock INTEGER NOT NULL,
    match INTEGER,
    event_id TEXT,
    request_id TEXT,
    track_id INTEGER,
    snapshot TEXT
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_door_ts ON audit (door, ts);
CREATE INDEX IF NOT EXISTS audit_person_ts ON audit (person, ts);
CREATE INDEX IF NOT EXISTS audit_kind_ts ON audit (kind, ts);
"""
_COLUMNS: Final = (
    "ts, door, kind, person, code, reason, distance, margin, frames, unlock, match,"
    " event_id, request_id, track_id, snapshot"
)
_INSERT: Final = f"INSERT INTO audit ({_COLUMNS}) VALUES ({', '.join('?' * 15)})"


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One line of the trail. `person` is the claimed identity for kind `claim`."""

    ts: float
    door: str
    kind: str
    person: str | None
    code: str
    reason: str
    distance: float | None
    margin: float | None
    frames: int | None
    unlock: bool
    match: bool | None
    event_id: str | None
    request_id: str | None
    track_id: int | None
    snapshot: str | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """What `facegate log` asks for; None means no filter. Newest `limit` rows match."""

    since: float | None = None
    door: str | None = None
    person: str | None = None
    kind: str | None = None
    limit: int = 100


def parse_since(text: str, now: float) -> float:
    """`90s`, `30m`, `12h`, `1d`, `2w` ago, or an ISO date / time (local time unless it
    names its zone), as epoch seconds. ValueError on anything else."""
    match = _SINCE.match(text.strip())
    if match is not None:
        return now - float(match.group(1)) * _UNITS_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (90s, 30m, 12h, 1d, 2w) or a date"
            " (2026-11-30, 2026-11-30T08:00)"
        ) from None
    return moment.timestamp()  # a naive datetime is local time


class AuditStore:
    """The SQLite file. Not thread-safe: one thread at a time (the audit output's worker)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path) -> AuditStore:
        """Open (creating it and its folder) for writing; a clear error naming the file."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread off: opened by the service, written by the output's worker,
            # closed by the service after the worker ended; never two at once.
            db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BadInputError(
                    path, f"written by a newer facegate (schema {version})", field="audit.path"
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise BadInputError(
                path, f"cannot open the audit trail: {exc}", field="audit.path"
            ) from None
        return cls(db, path)

    @classmethod
    def open_readonly(cls, path: Path) -> AuditStore:
        if not path.is_file():
            raise BadInputError(
                path, "no audit trail here (is audit.enabled on?)", field="audit.path"
            )
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
            db.execute("SELECT 1 FROM audit LIMIT 1")
        except sqlite3.Error as exc:
            raise BadInputError(
                path, f"cannot read the audit trail: {exc}", field="audit.path"
            ) from None
        return cls(db, path)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA optimize")
        self._db.close()

    # -- writing ---------------------------------------------------------------------------

    def add_decision(self, decision: Decision, snapshot: str | None = None) -> None:
        """One row, committed before returning."""
        d = decision
        self._db.execute(
            _INSERT,
            (d.ts, d.door, d.kind, d.person, str(d.code), d.reason, d.distance, d.margin,
             d.frames, int(d.unlock), None, d.event_id, d.request_id, d.track_id, snapshot),
        )  # fmt: skip

    def add_claim(self, door: str, outcome: ClaimOutcome, ts: float) -> None:
        o = outcome
        self._db.execute(
            _INSERT,
            (ts, door, "claim", o.identity, str(o.code), o.reason, o.distance, None, None, 0,
             int(o.match), None, o.request_id, None, None),
        )  # fmt: skip

    def prune(self, oldest_ts: float, max_rows: int) -> list[str]:
        """Delete rows before `oldest_ts` and all but the newest `max_rows`; returns the
        snapshot names of the deleted rows (their files are the caller's to remove).

        Both are index range scans (ids grow with time and rows leave only from the old
        end, so the newest `max_rows` are the ids above max(id) - max_rows): a prune that
        finds nothing to delete costs two index lookups, not a scan of the table."""
        newest = self._db.execute("SELECT max(id) FROM audit").fetchone()[0]
        if newest is None:
            return []
        by_count = "SELECT id, snapshot FROM audit WHERE id <= ? ORDER BY id LIMIT ?"
        by_age = "SELECT id, snapshot FROM audit WHERE ts < ? ORDER BY ts LIMIT ?"
        return self._delete(by_count, int(newest) - max_rows) + self._delete(by_age, oldest_ts)

    def _delete(self, select: str, bound: float) -> list[str]:
        snapshots: list[str] = []
        while True:
            with self._transaction():
                rows = self._db.execute(select, (bound, PRUNE_BATCH)).fetchall()
                self._db.executemany("DELETE FROM audit WHERE id = ?", [(i,) for i, _ in rows])
            snapshots += [name for _, name in rows if name]
            if len(rows) < PRUNE_BATCH:
                return snapshots

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reading ---------------------------------------------------------------------------

    def query(self, query: AuditQuery) -> list[AuditRow]:
        """The newest `query.limit` matching rows, oldest first."""
        where: list[str] = []
        args: list[object] = []
        for column, wanted in (("door", query.door), ("person", query.person),
                               ("kind", query.kind)):  # fmt: skip
            if wanted is not None:
                where.append(f"{column} = ?")
                args.append(wanted)
        if query.since is not None:
            where.append("ts >= ?")
            args.append(query.since)
        sql = f"SELECT {_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, query.limit)).fetchall()
        return [_row(values) for values in reversed(rows)]

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM audit").fetchone()[0])


def _row(values: tuple[object, ...]) -> AuditRow:
    (ts, door, kind, person, code, reason, distance, margin, frames, unlock, match, event_id,
     request_id, track_id, snapshot) = values  # fmt: skip
    return AuditRow(
        float(ts),  # type: ignore[arg-type]
        str(door),
        str(kind),
        None if person is None else str(person),
        str(code),
        str(reason),
        None if distance is None else float(distance),  # type: ignore[arg-type]
        None if margin is None else float(margin),  # type: ignore[arg-type]
        None if frames is None else int(frames),  # type: ignore[call-overload]
        bool(unlock),
        None if match is None else bool(match),
        None if event_id is None else str(event_id),
        None if request_id is None else str(request_id),
        None if track_id is None else int(track_id),  # type: ignore[call-overload]
        None if snapshot is None else str(snapshot),
    )
