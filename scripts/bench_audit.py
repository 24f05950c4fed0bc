#!/usr/bin/env python3
"""Audit trail measurements for issue 15: insert latency per decision (targets <= 1 ms),
`facegate log` by person or door over 1,000,000 rows (<= 100 ms), bytes per row.

    .venv/bin/python scripts/bench_audit.py [--rows 1000000] [--dir /tmp/x]

Medians of repeated runs; this is a shared machine, so the numbers are noisy. The file is
written where --dir says (default: a temp dir), i.e. on whatever disk that is.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facegate.audit import AuditQuery, AuditStore
from facegate.config.outputs import AuditConfig
from facegate.decisions import Decision, ReasonCode
from facegate.outputs.audit import AuditOutput

PEOPLE = [f"person{i:03d}" for i in range(200)]
DOORS = ["front", "back", "garage", "office"]
NOW = time.time()


def decision(rng: random.Random, n: int, ts: float) -> Decision:
    kind = rng.choices(["granted", "denied", "unknown"], [70, 5, 25])[0]
    person = None if kind == "unknown" else rng.choice(PEOPLE)
    code = {"granted": ReasonCode.MATCH, "unknown": ReasonCode.UNKNOWN_FACE}.get(
        kind, ReasonCode.OUTSIDE_SCHEDULE
    )
    return Decision(
        kind, rng.choice(DOORS), person, rng.uniform(0.3, 1.4), rng.uniform(0, 0.5),  # type: ignore[arg-type]
        3, code, f"{kind}: reason text of a typical length", f"{n:032x}", ts,
        kind == "granted", None, n % 1000,
    )  # fmt: skip


def ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def insert_latency(folder: Path, count: int, synchronous: str) -> dict[str, float]:
    """Per-decision latency through the output (a row, a commit, the prune check)."""
    output = AuditOutput(AuditConfig(enabled=True, path=folder / f"insert-{synchronous}.db"))
    output._store._db.execute(f"PRAGMA synchronous={synchronous}")  # noqa: SLF001 - bench
    rng = random.Random(1)
    samples = []
    for n in range(count):
        d = decision(rng, n, NOW)
        start = time.perf_counter()
        output.decision(d)
        samples.append(time.perf_counter() - start)
    output.close()
    return ms(samples)


def fill(path: Path, rows: int) -> float:
    """`rows` decisions over 90 days, in bulk; returns seconds taken."""
    start = time.perf_counter()
    store = AuditStore.open(path)
    rng = random.Random(2)
    span = 90 * 86400
    db = store._db  # noqa: SLF001 - bench: one transaction per 50,000 rows
    for first in range(0, rows, 50_000):
        db.execute("BEGIN")
        for n in range(first, min(rows, first + 50_000)):
            store.add_decision(decision(rng, n, NOW - span + span * n / rows))
        db.execute("COMMIT")
    store.close()
    return time.perf_counter() - start


def query_latency(path: Path, runs: int) -> dict[str, dict[str, float]]:
    store = AuditStore.open_readonly(path)
    queries = {
        "person": AuditQuery(person="person042", limit=101),
        "door": AuditQuery(door="garage", limit=101),
        "person_since_7d": AuditQuery(person="person042", since=NOW - 7 * 86400, limit=101),
        "door_kind_denied": AuditQuery(door="front", kind="denied", limit=101),
        "all_since_1d": AuditQuery(since=NOW - 86400, limit=101),
        "person_limit_10000": AuditQuery(person="person042", limit=10_000),
    }
    results = {}
    for name, query in queries.items():
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            store.query(query)
            samples.append(time.perf_counter() - start)
        results[name] = ms(samples)
    store.close()
    return results


def command_latency(path: Path, runs: int) -> dict[str, float]:
    """The whole `facegate log --person ...` process: interpreter start and imports too."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "facegate", "log", "--db", str(path), "--person", "person042"],
            check=True,
            capture_output=True,
        )
        samples.append(time.perf_counter() - start)
    return ms(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--inserts", type=int, default=2000)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        big = folder / "big.db"
        report: dict[str, object] = {
            "insert_synchronous_normal": insert_latency(folder, args.inserts, "NORMAL"),
            "insert_synchronous_full": insert_latency(folder, args.inserts, "FULL"),
        }
        report["fill_seconds"] = round(fill(big, args.rows), 1)
        report["rows"] = args.rows
        size = sum(p.stat().st_size for p in folder.glob("big.db*"))
        report["bytes_per_row"] = round(size / args.rows, 1)
        report["query"] = query_latency(big, 20)
        report["facegate_log_command"] = command_latency(big, 5)
        output = AuditOutput(AuditConfig(enabled=True, path=big, max_rows=args.rows * 2))
        rng = random.Random(3)
        samples = []
        for n in range(args.inserts):
            d = decision(rng, args.rows + n, NOW)
            start = time.perf_counter()
            output.decision(d)
            samples.append(time.perf_counter() - start)
        output.close()
        report[f"insert_into_{args.rows}_rows"] = ms(samples)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
