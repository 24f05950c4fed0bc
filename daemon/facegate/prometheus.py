"""The Prometheus side of `metrics:` (facegate/metrics.py starts it): DaemonMetrics, its
HTTP server and the scrape-time collector. Imported only when metrics are enabled, so a door
without them never loads prometheus_client and its HTTP server.
"""

from __future__ import annotations

import logging
import math
import platform
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from facegate import __version__
from facegate.camera import LatestFrameGrabber
from facegate.config import FacegateConfig
from facegate.decisions import ClaimOutcome, Decision
from facegate.errors import BadInputError
from facegate.mqtt import DoorBus, MqttPublisher
from facegate.outputs.base import OutputWorker
from facegate.pipeline import DoorPipeline, StepResult
from facegate.vision.engine import FaceEngine
from facegate.vision.types import RefusalReason

logger = logging.getLogger(__name__)

#: Stage latencies: the detector takes ~2 ms, the int8 embedder ~20 ms here, ~80-200 ms on a Pi.
STAGE_BUCKETS_S: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
STAGES: Final = ("detect", "landmarks", "align", "quality", "embed", "frame")
FACE_OUTCOMES: Final = ("embedded", *(str(reason) for reason in RefusalReason))
LIVENESS_OUTCOMES: Final = ("live", "presentation_attack")


class DaemonMetrics:
    """The daemon's metrics and the HTTP server that serves them."""

    def __init__(self, config: FacegateConfig, engine: FaceEngine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # CPU seconds, RSS, open fds, start time
        doors = config.door_ids
        self._frames = Counter(
            "facegate_frames_processed", "frames run through the pipeline", ["door"],
            registry=self.registry,
        )  # fmt: skip
        self._faces = Counter(
            "facegate_faces",
            "faces seen in processed frames: embedded, reused (standing still), or why refused",
            ["door", "outcome"], registry=self.registry,
        )  # fmt: skip
        self._decisions = Counter(
            "facegate_decisions", "decisions by kind and reason code", ["door", "kind", "code"],
            registry=self.registry,
        )  # fmt: skip
        self._unlocks = Counter(
            "facegate_unlocks", "unlock commands issued", ["door"], registry=self.registry
        )
        self._claims = Counter(
            "facegate_claim_outcomes", "answers to 1:1 verify requests", ["door", "code"],
            registry=self.registry,
        )  # fmt: skip
        self._liveness = Counter(
            "facegate_liveness_outcomes", "liveness verdicts on face tracks (0 until a liveness"
            " stage runs)", ["door", "outcome"], registry=self.registry,
        )  # fmt: skip
        stage_seconds = Histogram(
            "facegate_stage_seconds", "time per stage: per frame for detect and frame, per face"
            " for the others", ["stage"], buckets=STAGE_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        # Label lookups cost a lock and a dict: done once, not per frame.
        self._stage = {stage: stage_seconds.labels(stage) for stage in STAGES}
        for door in doors:
            self._frames.labels(door)
            self._unlocks.labels(door)
            for outcome in FACE_OUTCOMES:
                self._faces.labels(door, outcome)
            for outcome in LIVENESS_OUTCOMES:
                self._liveness.labels(door, outcome)
            self._decisions.labels(door, "granted", "match")
            self._decisions.labels(door, "unknown", "unknown_face")
        self._info(config, engine)
        self._state = _StateCollector()
        self.registry.register(self._state)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _info(self, config: FacegateConfig, engine: FaceEngine) -> None:
        Info("facegate_build", "facegate version and Python", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()}
        )
        models = config.models
        Info("facegate_model", "the models and runtime in use", registry=self.registry).info(
            {
                "detector": models.detector,
                "landmarker": models.landmarker,
                "embedder": models.embedder,
                "embedding_dim": str(engine.embedding_dim),
                "threads": str(models.threads),
                "runtime": engine.runtime,
                "fingerprint": engine.fingerprint[:16],
            }
        )

    # -- lifecycle -------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> None:
        """Serve GET /metrics on host:port (its own thread); a busy port is a config error."""
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise BadInputError(
                f"{host}:{port}", f"cannot serve metrics: {exc.strerror}", field="metrics.listen"
            ) from None
        logger.info("metrics on http://%s/metrics", _url_host(host, self.port))

    @property
    def port(self) -> int:
        """The port served (useful with port 0); 0 before serve()."""
        return 0 if self._server is None else int(self._server.server_port)

    def watch(
        self,
        grabbers: Mapping[str, LatestFrameGrabber],
        bus: DoorBus,
        pipelines: Mapping[str, DoorPipeline],
        outputs: Sequence[OutputWorker],
    ) -> None:
        """What the scrape reads: the live objects, never copies (a restarted camera shows)."""
        self._state.grabbers, self._state.bus = grabbers, bus
        self._state.pipelines, self._state.outputs = pipelines, outputs

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    # -- what the loop, the engine and the metrics output report ----------------------------

    def frame(self, door: str, result: StepResult) -> None:
        """One processed frame (the loop thread)."""
        self._frames.labels(door).inc()
        reused = result.reused or [False] * len(result.faces)
        for face, old in zip(result.faces, reused, strict=True):
            refusal = face.quality.refusal
            outcome = "reused" if old else "embedded" if refusal is None else str(refusal)
            self._faces.labels(door, outcome).inc()

    def lap(self, stage: str, since: float) -> float:
        """The engine's StageTimer: one histogram sample since `since` (perf_counter)."""
        now = time.perf_counter()
        self._stage[stage].observe(now - since)
        return now

    def decision(self, decision: Decision) -> None:
        self._decisions.labels(decision.door, decision.kind, str(decision.code)).inc()
        if decision.unlock:
            self._unlocks.labels(decision.door).inc()
        if str(decision.code) == "presentation_attack":
            self.liveness(decision.door, "presentation_attack")

    def claim_outcome(self, door: str, outcome: ClaimOutcome) -> None:
        self._claims.labels(door, str(outcome.code)).inc()

    def liveness(self, door: str, outcome: str) -> None:
        """A liveness verdict on a track (the liveness stage reports `live` ones here)."""
        self._liveness.labels(door, outcome).inc()


class _StateCollector(Collector):
    """Read at scrape time: cameras, broker link and journal, gallery, output queues."""

    def __init__(self) -> None:
        self.grabbers: Mapping[str, LatestFrameGrabber] = {}
        self.bus: DoorBus | None = None
        self.pipelines: Mapping[str, DoorPipeline] = {}
        self.outputs: Sequence[OutputWorker] = ()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # dynamic: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._cameras()
        yield from self._broker()
        yield from self._outputs()
        gallery = GaugeMetricFamily(
            "facegate_gallery_people", "people enrolled, per door", labels=["door"]
        )
        for door, pipeline in list(self.pipelines.items()):
            gallery.add_metric([door], len(pipeline.state.matcher))
        yield gallery

    def _cameras(self) -> Iterator[Metric]:
        read = CounterMetricFamily(
            "facegate_camera_frames_read", "frames received from the camera", labels=["door"]
        )
        dropped = CounterMetricFamily(
            "facegate_camera_frames_dropped",
            "frames replaced by a newer one before processing (the latest frame wins)",
            labels=["door"],
        )
        up = GaugeMetricFamily("facegate_camera_up", "1 while the camera delivers", labels=["door"])
        age = GaugeMetricFamily(
            "facegate_camera_last_frame_age_seconds",
            "seconds since the newest frame (NaN before the first)",
            labels=["door"],
        )
        now = time.monotonic()
        for door, grabber in list(self.grabbers.items()):
            read.add_metric([door], grabber.frames_read)
            dropped.add_metric([door], grabber.frames_dropped)
            up.add_metric([door], 1.0 if grabber.connected else 0.0)
            last = grabber.last_frame_ts
            age.add_metric([door], math.nan if last is None else now - last)
        yield from (read, dropped, up, age)

    def _broker(self) -> Iterator[Metric]:
        bus = self.bus
        if bus is None:
            return
        down_s = bus.down_for()
        connected = bus.is_connected if isinstance(bus, MqttPublisher) else down_s == 0
        yield GaugeMetricFamily(
            "facegate_mqtt_connected", "1 while the door bus is connected", 1.0 if connected else 0
        )
        yield GaugeMetricFamily(
            "facegate_mqtt_down_seconds", "seconds the door bus has been down (0 when up)", down_s
        )
        if isinstance(bus, MqttPublisher):
            yield GaugeMetricFamily(
                "facegate_journal_pending",
                "messages on disk waiting for the broker's acknowledgement",
                len(bus.journal),
            )

    def _outputs(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily(
            "facegate_output_queue_depth", "messages waiting per output", labels=["output"]
        )
        dropped = CounterMetricFamily(
            "facegate_output_dropped", "messages dropped: queue full", labels=["output"]
        )
        failed = CounterMetricFamily(
            "facegate_output_failed", "messages whose output raised", labels=["output"]
        )
        healthy = GaugeMetricFamily(
            "facegate_output_healthy", "1 unless dead or stuck", labels=["output"]
        )
        for output in self.outputs:
            queued.add_metric([output.name], output.pending)
            dropped.add_metric([output.name], output.dropped)
            failed.add_metric([output.name], output.failed)
            healthy.add_metric([output.name], 1.0 if output.healthy() else 0.0)
        yield from (queued, dropped, failed, healthy)


def _url_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
