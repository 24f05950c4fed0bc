"""Prometheus metrics of the running daemon (`metrics: {enabled: true}`; docs/operations.md
reads them).

Three kinds of sources, none of which costs the camera loop more than a counter increment:

- the loop tells `frame()` what each processed frame held (faces by outcome);
- the engine times its stages through `lap()` (its `stage_timer` hook) and the metrics
  output (outputs/metrics.py) counts decisions, unlocks and claim outcomes on its own thread;
- everything that is state rather than an event (cameras, broker link, journal, gallery,
  output queues) is read only when Prometheus scrapes, by a collector.

The HTTP server is prometheus_client's, on its own thread, with a private registry. All of
it lives in facegate/prometheus.py, imported only when metrics are on: metrics are off by
default, and a door without them does not carry prometheus_client and its HTTP server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facegate.config import FacegateConfig
    from facegate.prometheus import DaemonMetrics
    from facegate.vision.engine import FaceEngine

__all__ = ["DaemonMetrics", "start_metrics"]


def start_metrics(config: FacegateConfig, engine: FaceEngine) -> DaemonMetrics | None:
    """The daemon's metrics served on `metrics.listen`, the engine timed; None when off."""
    if not config.metrics.enabled:
        return None
    from facegate.prometheus import DaemonMetrics

    metrics = DaemonMetrics(config, engine)
    metrics.serve(config.metrics.host, config.metrics.port)
    engine.stage_timer = metrics
    return metrics


def __getattr__(name: str) -> Any:
    """`from facegate.metrics import DaemonMetrics` still works; it is what loads
    prometheus_client (the daemon itself imports only start_metrics)."""
    if name == "DaemonMetrics":
        from facegate.prometheus import DaemonMetrics

        return DaemonMetrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
