"""The audit trail as an output: every decision and claim outcome into SQLite (facegate.audit).

Runs on its own worker like every output: a slow SD card delays only the trail. Old rows
(and their snapshot files) are pruned at start and then every PRUNE_EVERY_S or
PRUNE_EVERY_ROWS rows, whichever comes first, so `max_rows` holds to within a few
thousand rows and the retention to within the hour.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from facegate.audit import AuditStore
from facegate.config.outputs import AuditConfig
from facegate.decisions import ClaimOutcome, Decision
from facegate.outputs.base import Output

logger = logging.getLogger(__name__)

PRUNE_EVERY_S: Final = 3600.0
PRUNE_EVERY_ROWS: Final = 1000
DAY_S: Final = 86400.0


class AuditOutput(Output):
    """Writes the trail; opening it is checked at start (exit 2 naming audit.path)."""

    name = "audit"

    def __init__(self, config: AuditConfig, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._store = AuditStore.open(config.path)
        self._rows_since_prune = 0
        self._next_prune = 0.0
        self._prune()

    def decision(self, decision: Decision) -> None:
        snapshot = None
        if self._config.snapshots and decision.snapshot is not None:
            snapshot = self._keep_snapshot(decision.event_id, decision.snapshot)
        self._store.add_decision(decision, snapshot)
        self._wrote()

    def claim_outcome(self, door: str, outcome: ClaimOutcome) -> None:
        self._store.add_claim(door, outcome, self._clock())
        self._wrote()

    def close(self) -> None:
        self._store.close()

    def _wrote(self) -> None:
        self._rows_since_prune += 1
        if self._rows_since_prune >= PRUNE_EVERY_ROWS or self._clock() >= self._next_prune:
            self._prune()

    def _prune(self) -> None:
        now = self._clock()
        oldest = now - self._config.retention_days * DAY_S
        removed = self._store.prune(oldest, self._config.max_rows)
        for name in removed:
            (self._config.snapshot_dir / name).unlink(missing_ok=True)
        if removed:
            logger.info("audit: %d snapshot(s) past retention removed", len(removed))
        self._rows_since_prune = 0
        self._next_prune = now + PRUNE_EVERY_S

    def _keep_snapshot(self, event_id: str, jpeg: bytes) -> str | None:
        """Write `<event_id>.jpg` (whole or not at all) and return its name; a failure costs
        the picture, never the row."""
        name = f"{event_id}.jpg"
        folder = self._config.snapshot_dir
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            _write_atomically(folder / name, jpeg)
        except OSError as exc:
            logger.error("audit: snapshot %s not kept: %s", name, exc)
            return None
        return name


def _write_atomically(path: Path, data: bytes) -> None:
    # No fsync: a snapshot lost in a power cut is acceptable; a half-written one is not.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
