"""The audit trail (issue 15, part 3): real SQLite files, a writer killed mid-write, the
`facegate log` command, and the daemon writing its trail."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from broker import MosquittoBroker
from door_site import (
    DOOR,
    RESIDENT,
    STRANGER,
    Daemon,
    Subscriber,
    face,
    granted,
    hallway,
    make_site,
)
from facegate.audit import AuditQuery, AuditStore, parse_since
from facegate.cli import main
from facegate.config.outputs import AuditConfig
from facegate.decisions import ClaimOutcome, Decision, ReasonCode
from facegate.errors import BadInputError
from facegate.outputs.audit import AuditOutput

NOW = 1_750_000_000.0
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def decision(ts: float, kind: str = "granted", person: str | None = "alice", door: str = DOOR,
             snapshot: bytes | None = None, n: int = 0) -> Decision:  # fmt: skip
    code = {"granted": ReasonCode.MATCH, "unknown": ReasonCode.UNKNOWN_FACE}.get(
        kind, ReasonCode.OUTSIDE_SCHEDULE
    )
    return Decision(kind, door, person, 0.5, 0.2, 3, code, f"{kind} text", f"e{n}", ts,  # type: ignore[arg-type]
                    kind == "granted", None, 7, snapshot)  # fmt: skip


def audit_config(tmp_path: Path, **extra: object) -> AuditConfig:
    return AuditConfig(enabled=True, path=tmp_path / "audit.db", **extra)


def test_every_decision_and_claim_is_a_row_and_never_an_embedding(tmp_path: Path) -> None:
    clock = Clock()
    output = AuditOutput(audit_config(tmp_path), clock)
    output.decision(decision(NOW - 60))
    output.decision(decision(NOW - 30, "unknown", None, n=1))
    output.decision(decision(NOW - 20, "denied", "bob", door="back", n=2))
    output.claim_outcome(DOOR, ClaimOutcome("r1", "alice", True, 0.4, ReasonCode.MATCH, "ok"))
    output.close()
    store = AuditStore.open_readonly(tmp_path / "audit.db")
    rows = store.query(AuditQuery())
    assert [(r.kind, r.person, r.door) for r in rows] == [
        ("granted", "alice", DOOR), ("unknown", None, DOOR), ("denied", "bob", "back"),
        ("claim", "alice", DOOR),
    ]  # fmt: skip
    first, claim = rows[0], rows[-1]
    assert (first.code, first.reason, first.unlock, first.event_id, first.track_id) == (
        "match", "granted text", True, "e0", 7,
    )  # fmt: skip
    assert (claim.match, claim.request_id, claim.ts, claim.distance) == (True, "r1", NOW, 0.4)
    assert [r.kind for r in store.query(AuditQuery(person="alice"))] == ["granted", "claim"]
    assert [r.door for r in store.query(AuditQuery(door="back"))] == ["back"]
    assert [r.kind for r in store.query(AuditQuery(kind="unknown"))] == ["unknown"]
    assert [r.ts for r in store.query(AuditQuery(since=NOW - 25, limit=1))] == [NOW]
    store.close()
    columns = [
        c[1] for c in sqlite3.connect(tmp_path / "audit.db").execute("PRAGMA table_info(audit)")
    ]
    assert not [c for c in columns if "embed" in c or "vector" in c]


def test_retention_max_rows_and_snapshots(tmp_path: Path) -> None:
    clock = Clock()
    config = audit_config(tmp_path, retention_days=1, max_rows=1000, snapshots=True)
    output = AuditOutput(config, clock)
    jpeg = b"\xff\xd8 a face \xff\xd9"
    output.decision(decision(NOW - 2 * DAY, snapshot=jpeg, n=1))
    output.decision(decision(NOW - 1, snapshot=jpeg, n=2))
    snapshots = config.snapshot_dir
    assert sorted(p.name for p in snapshots.iterdir()) == ["e1.jpg", "e2.jpg"]
    clock.now += 3601  # the next write prunes: the two-day-old row and its picture go
    output.decision(decision(clock.now, n=3))
    assert sorted(p.name for p in snapshots.iterdir()) == ["e2.jpg"]
    for n in range(1500):
        output.decision(decision(clock.now, n=100 + n))
    output.close()
    store = AuditStore.open_readonly(config.path)
    count = store.count()
    assert 1000 <= count <= 1000 + 1000  # pruned every 1000 rows
    assert store.query(AuditQuery(limit=1))[0].event_id == "e1599"
    store.close()
    # Reopening prunes at once.
    AuditOutput(config, clock).close()
    assert AuditStore.open_readonly(config.path).count() == 1000


def test_a_writer_killed_mid_write_loses_at_most_that_row(tmp_path: Path) -> None:
    """A forked writer reports each committed row through a pipe and is SIGKILLed at random
    moments, six times, on the same file: every reported row is there, at most one more, and
    the file passes SQLite's integrity check each time."""
    path = tmp_path / "audit.db"
    rng = random.Random(15)
    acked = 0
    for _round in range(6):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: write rows as fast as it can until killed
            os.close(read_fd)
            try:
                store = AuditStore.open(path)
                for n in range(10**9):
                    store.add_decision(decision(NOW + n, n=n))
                    os.write(write_fd, b".")
            finally:
                os._exit(1)
        os.close(write_fd)
        time.sleep(rng.uniform(0.05, 0.3))  # the moment of the kill is the point
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(read_fd, "rb") as pipe:
            acked += len(pipe.read())
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT count(*) FROM audit").fetchone()[0]
        db.close()
        assert acked <= rows <= acked + 1, (acked, rows)
        acked = rows  # a row committed but not yet reported counts from now on
    assert acked > 50


def test_parse_since() -> None:
    assert parse_since("90s", NOW) == NOW - 90
    assert parse_since("1d", NOW) == NOW - DAY
    assert parse_since("2w", NOW) == NOW - 14 * DAY
    assert parse_since("1.5h", NOW) == NOW - 5400
    assert parse_since("2026-01-02T03:04:05+00:00", NOW) == 1767323045.0
    for bad in ("", "1y", "yesterday", "-1d", "1 d"):
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad, NOW)


def test_facegate_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    output = AuditOutput(audit_config(tmp_path))
    output.decision(decision(now - 3 * DAY, person="carol", n=1))
    output.decision(decision(now - 60, n=2))
    output.decision(decision(now - 30, "denied", "bob", n=3))
    output.claim_outcome(DOOR, ClaimOutcome("r9", "bob", False, None, ReasonCode.TIMEOUT, "t/o"))
    output.close()
    db = ["--db", str(tmp_path / "audit.db")]

    assert main(["log", *db, "--since", "1d"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["time", "door", "kind"]
    assert [line.split()[3] for line in lines[1:]] == ["granted", "denied", "claim"]
    assert "claim no" in lines[3] and "timeout" in lines[3] and "yes" in lines[1]

    assert main(["log", *db, "--person", "bob", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["code"]) for r in rows] == [("denied", "outside_schedule"),
                                                      ("claim", "timeout")]  # fmt: skip

    assert main(["log", *db, "--kind", "granted", "--csv", "--limit", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("ts,door,kind,person,code")
    assert len(out.splitlines()) == 2 and ",alice," in out and "--limit" in err

    assert main(["log", *db, "--door", "nowhere"]) == 0
    assert capsys.readouterr().out.strip() == "no entries"
    assert main(["log", *db, "--since", "last tuesday"]) == 2
    assert "--since" in capsys.readouterr().err
    assert main(["log", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no audit trail" in capsys.readouterr().err


def test_an_unwritable_trail_is_a_start_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BadInputError, match="audit.path"):
        AuditOutput(AuditConfig(enabled=True, path=blocker / "audit.db"))


def test_the_daemon_keeps_its_trail(
    tmp_path: Path, mosquitto: MosquittoBroker, daemons: list[Daemon],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    scene = face(RESIDENT, 6) + hallway(4) + face(STRANGER, 6) + hallway(4)
    site = make_site(tmp_path, mosquitto.port, people={RESIDENT: [DOOR]}, scene=scene)
    with site.config.open("a") as file:
        file.write("audit: {enabled: true, path: audit.db, snapshots: true}\n")
    sub = Subscriber(mosquitto.host, mosquitto.port)
    try:
        daemon = Daemon(site.config)
        daemons.append(daemon)
        daemon.wait_ready()
        sub.wait_for(
            lambda s: granted(s, RESIDENT) and any(e["decision"] == "unknown" for e in s.events()),
            what="granted and unknown",
        )
    finally:
        sub.close()
    # Read while the daemon runs and writes.
    deadline = time.monotonic() + 10
    while True:
        assert main(["log", "--config", str(site.config), "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        kinds = {r["kind"] for r in rows}
        if {"granted", "unknown"} <= kinds or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {"granted", "unknown"} <= kinds
    resident = next(r for r in rows if r["kind"] == "granted")
    assert resident["person"] == RESIDENT and resident["unlock"] and resident["snapshot"]
    assert (tmp_path / "audit-snapshots" / resident["snapshot"]).stat().st_size <= 30 * 1024
    assert daemon.terminate() == 0
