"""Decisions, unlocks and claim outcomes counted for Prometheus (facegate/metrics.py)."""

from __future__ import annotations

from typing import Protocol

from facegate.decisions import ClaimOutcome, Decision
from facegate.outputs.base import Output


class DecisionCounter(Protocol):
    """What the metrics output feeds (facegate.metrics.DaemonMetrics)."""

    def decision(self, decision: Decision) -> None: ...

    def claim_outcome(self, door: str, outcome: ClaimOutcome) -> None: ...


class MetricsOutput(Output):
    """Counts what the door decided; on its own worker like every output."""

    name = "metrics"

    def __init__(self, metrics: DecisionCounter) -> None:
        self._metrics = metrics

    def decision(self, decision: Decision) -> None:
        self._metrics.decision(decision)

    def claim_outcome(self, door: str, outcome: ClaimOutcome) -> None:
        self._metrics.claim_outcome(door, outcome)
