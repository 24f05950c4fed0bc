"""`facegate run`: camera -> detector -> align -> embedder -> gallery match -> policy -> outputs.

One processing thread (this one) owns the face engine and the policies; each camera has a
grabber thread that keeps only its newest frame, each output (the MQTT door bus) has a
worker thread, and paho runs its own network thread. Verify requests arrive through a
bounded, rate-limited intake. Signals only set flags; the loop acts on them between
frames. The systemd watchdog is pinged only while frames flow and every component is
alive, so a part that died gets the daemon restarted instead of silently failing.
"""

from __future__ import annotations

import functools
import logging
import re
import signal
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Final

from facegate.camera import LatestFrameGrabber, source_from_config
from facegate.config import CameraConfig, FacegateConfig, load_config, load_enrollment
from facegate.config.diff import changed_paths
from facegate.control import ControlServer, start_control
from facegate.decisions import ClaimOutcome, Decision
from facegate.enroll import EnrollReport, PhotoEncoder, enroll, photo_gate
from facegate.errors import FacegateError
from facegate.fleet import FleetAgent, start_fleet
from facegate.gallery import Gallery
from facegate.keys import PrivateKey
from facegate.memory import after_start
from facegate.metrics import start_metrics
from facegate.mqtt import DoorBus, MqttPublisher, load_door_keys
from facegate.mqtt.intake import RequestIntake
from facegate.notify import SystemdNotifier
from facegate.outputs import OutputWorker, build_outputs
from facegate.pipeline import DoorPipeline, Recognition
from facegate.policy import DoorPolicy
from facegate.review import UnknownFaceCollector, start_review
from facegate.vision.engine import FaceEngine
from facegate.vision.quality import QualityGate

if TYPE_CHECKING:
    from facegate.metrics import DaemonMetrics  # prometheus_client: only with metrics on

logger = logging.getLogger(__name__)

#: How long one loop iteration waits for a frame before doing housekeeping.
FRAME_WAIT_S: Final = 0.1
#: Frames are processed at most every MIN_INTERVAL_SHARE / fps seconds: a 30 fps camera is
#: still processed at about the door's fps, a 10 fps camera at every frame, on arrival.
MIN_INTERVAL_SHARE: Final = 0.8
#: Minimum spacing of systemd watchdog pings.
WATCHDOG_PING_S: Final = 1.0
#: Start-up may embed every enrollment image (first start, model change): on a Pi that can
#: outlast the unit's TimeoutStartSec, so ask systemd for this much more before READY.
STARTUP_EXTEND_USEC: Final = 15 * 60 * 1_000_000


def load_recognition(
    config: FacegateConfig,
    engine: FaceEngine,
    on_report: Callable[[EnrollReport], object] | None = None,
) -> Recognition:
    """Bring the gallery up to date with enrollment.yaml (incremental) and load it.

    Unusable photos are skipped with a warning rather than keeping the door offline, and a
    resident whose photos are all unreadable for now keeps their previous embeddings;
    `facegate enroll` (strict by default) is where a person fixes them. `on_report` gets
    the enroll report once the new state is loaded (the fleet acks with it)."""
    photos = PhotoEncoder(engine, photo_gate(config))  # photos, not the door's live gate
    report = enroll(config.enrollment, config.gallery, photos, skip_bad=True, keep_previous=True)
    logger.info(
        "gallery %s: %d people, %d images embedded, %d reused",
        config.gallery, report.enrolled, report.embedded, report.reused,
    )  # fmt: skip
    gallery = Gallery.load(config.gallery, engine.fingerprint)
    state = Recognition(config, load_enrollment(config.enrollment), gallery.matcher())
    if on_report is not None:
        on_report(report)
    return state


def quality_gate(config: FacegateConfig) -> QualityGate:
    rec = config.recognition
    return QualityGate(rec.min_face_px, rec.min_sharpness, rec.max_yaw_deg)


class Service:
    """The long-running daemon. `run()` returns the process exit code."""

    def __init__(self, config_path: Path, bus: DoorBus | None = None) -> None:
        self._config_path = config_path
        self._bus_override = bus
        self._stop = False
        self._reload = False
        self._intake = RequestIntake()
        self._outputs: list[OutputWorker] = []
        self._metrics: DaemonMetrics | None = None  # None unless `metrics:` is enabled
        self._unhealthy: str | None = None  # why the watchdog is withheld, logged once
        self._notifier = SystemdNotifier()
        self._last_ping = 0.0
        self._ready = False  # READY=1 sent: models loaded and a first frame seen
        self._grabbers: dict[str, LatestFrameGrabber] = {}
        self._pipelines: dict[str, DoorPipeline] = {}
        self._cameras: dict[str, CameraConfig] = {}  # as started: doors change only on restart
        self._door_keys: dict[str, PrivateKey] = {}  # as started: keys change only on restart
        self._next_due: dict[str, float] = {}
        self._fleet: FleetAgent | None = None  # with `fleet:`, bundles arrive through it
        self._control: ControlServer | None = None  # with control.enabled: walk-up enrollment
        self._review: UnknownFaceCollector | None = None  # with review.enabled

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        # First: a SIGHUP during start-up must not kill us (systemd counts that as clean).
        self._install_signal_handlers()
        config = load_config(self._config_path)
        logging.getLogger().setLevel(config.log_level)
        # No full-range fallback at a door: a face too far for the short-range model is
        # far below min_face_px anyway, and the fallback would double every empty frame's cost.
        engine = FaceEngine.load(
            config.models.dir, config.models.embedder, config.models.threads,
            gate=quality_gate(config), full_range_fallback=False,
            detector=config.models.detector, landmarker=config.models.landmarker,
            # Always composed: `recognition.liveness: off` skips it per frame (no cost), and
            # a reload may switch it on.
            liveness="passive",
        )  # fmt: skip
        self._notifier.notify(f"EXTEND_TIMEOUT_USEC={STARTUP_EXTEND_USEC}")
        state = load_recognition(config, engine)
        self._door_keys = load_door_keys(config.signing_key_sources())
        bus = self._bus_override or self._make_bus(config, self._door_keys)
        bus.set_verify_handler(self._intake.put)
        bus.start()
        self._fleet = start_fleet(config, self._request_reload)
        self._metrics = start_metrics(config, engine)
        self._control = start_control(config, engine, bus)
        self._review = start_review(config)
        outputs = build_outputs(config, bus, self._metrics)
        self._outputs = [OutputWorker(output) for output in outputs]
        for output in self._outputs:
            output.start()
        self._start_cameras(engine, state)
        if self._metrics is not None:
            self._metrics.watch(self._grabbers, bus, self._pipelines, self._outputs)
        try:
            self._loop(engine, state, bus)
        finally:
            self._notifier.notify("STOPPING=1")
            if self._control is not None:
                self._control.close()
            if self._review is not None:
                self._review.close()  # visits in progress are kept
            for grabber in self._grabbers.values():
                grabber.stop()
            for output in self._outputs:
                output.close()  # drains what the loop decided, then closes the bus
            if self._metrics is not None:
                self._metrics.close()
            if self._fleet is not None:
                self._fleet.close()
        logger.info("stopped")
        return 0

    @staticmethod
    def _make_bus(config: FacegateConfig, door_keys: dict[str, PrivateKey]) -> MqttPublisher:
        return MqttPublisher(
            config.mqtt,
            device=config.device,
            doors=config.door_ids,
            journal_dir=config.journal,
            signing_keys=door_keys,
        )

    def _request_reload(self) -> None:
        """The fleet unpacked a new enrollment: reload it as SIGHUP does (from any thread)."""
        self._reload = True

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            logger.info("signal %s: stopping", signal.Signals(signum).name)
            self._stop = True

        def reload(_signum: int, _frame: FrameType | None) -> None:
            self._reload = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _start_cameras(self, engine: FaceEngine, state: Recognition) -> None:
        config = state.config
        for camera in config.cameras:
            self._start_camera(camera, config.watchdog.stall_s)
            policy = DoorPolicy(camera.door, camera.mode, config.recognition, state.enrollment)
            self._pipelines[camera.door] = DoorPipeline(camera.door, engine, state, policy)
            self._next_due[camera.door] = 0.0

    def _start_camera(self, camera: CameraConfig, stall_s: float) -> None:
        """Start the camera of a door; a running one is stopped first (new source settings)."""
        old = self._grabbers.get(camera.door)
        if old is not None:
            logger.info("camera %s: restarting with its new source settings", camera.door)
            old.stop()
        grabber = LatestFrameGrabber(
            functools.partial(source_from_config, camera), stall_s=stall_s, name=camera.door
        )
        grabber.start()
        self._grabbers[camera.door] = grabber
        self._cameras[camera.door] = camera

    # -- the loop --------------------------------------------------------------------------

    def _loop(self, engine: FaceEngine, state: Recognition, bus: DoorBus) -> None:
        while not self._stop:
            if self._control is not None and self._control.between_frames(state):
                self._reload = True  # walk-up enrollment changed enrollment.yaml
            if self._reload:
                self._reload = False
                reloaded = self._reloaded(engine, state)
                if self._control is not None:
                    self._control.reloaded(reloaded, ok=reloaded is not state)
                state = reloaded
            self._take_claims()
            progressed = False
            for door, grabber in self._grabbers.items():
                progressed |= self._process_door(door, grabber)
            if progressed and not self._ready:
                self._notifier.notify("READY=1")
                logger.info("ready: models loaded and first frame received")
                self._ready = True
                after_start()  # what start-up alone needed goes back (facegate/memory.py)
            self._answer_expired_claims()
            self._watchdog(state.config, bus)
            if all(g.finished for g in self._grabbers.values()):
                logger.info("all frame sources ended")
                break

    def _process_door(self, door: str, grabber: LatestFrameGrabber) -> bool:
        """Process the newest frame of one door if one is due; True if a frame was processed.

        A camera faster than the door's fps is not processed faster: until the next frame is
        due the grabber keeps replacing its newest frame, and we sleep."""
        share = FRAME_WAIT_S / len(self._grabbers)
        now = time.monotonic()
        due = self._next_due[door]
        if now < due:
            time.sleep(min(due - now, share))
            return False
        frame = grabber.get(timeout=share)
        if frame is None:
            return False
        # The next frame may come a little early: with exactly 1/fps the processing clock
        # phase-locks against the camera's and every frame waits up to a period in the slot.
        started = time.monotonic()
        self._next_due[door] = started + MIN_INTERVAL_SHARE / self._cameras[door].fps
        # A walk-up capture reads every face of every frame: nothing reused from earlier ones.
        capturing = self._control is not None and self._control.capturing(door)
        result = self._pipelines[door].step(frame.image, reuse=not capturing)
        if logger.isEnabledFor(logging.DEBUG):  # the latency timeline (bench_daemon --timeline)
            logger.debug(
                "frame door=%s index=%d waited_ms=%.1f step_ms=%.1f faces=%d",
                door, frame.index, (started - frame.ts) * 1000,
                (time.monotonic() - started) * 1000, len(result.faces),
            )  # fmt: skip
        if self._metrics is not None:
            self._metrics.frame(door, result)
        if self._control is not None:
            self._control.frame(door, frame.image, result)
        if self._review is not None:
            self._review.frame(door, frame.image, result, self._pipelines[door].state)
        for decision in result.decisions:
            self._publish_decision(decision)
        self._publish_outcomes(door, result.claim_outcomes)
        for prompt in result.prompts:
            logger.info("prompt door=%s action=%s", prompt.door, prompt.action)
            for output in self._outputs:
                output.submit_prompt(prompt)
        return True

    def _publish_decision(self, decision: Decision) -> None:
        live = decision.liveness
        logger.info(
            "decision door=%s kind=%s person=%s distance=%.3f margin=%.3f frames=%d "
            "track=%s code=%s reason=%r liveness=%s event_id=%s",
            decision.door, decision.kind, decision.person, decision.distance, decision.margin,
            decision.frames, decision.track_id, decision.code, decision.reason,
            "-" if live is None else f"{live.method}/{live.verdict}/{live.score}",
            decision.event_id,
        )  # fmt: skip
        for output in self._outputs:
            output.submit_decision(decision)

    # -- 1:1 claims ------------------------------------------------------------------------

    def _take_claims(self) -> None:
        # Bounded per turn (the intake rate-limits each door): frames keep their latency.
        for request in self._intake.take():
            pipeline = self._pipelines.get(request.door)
            if pipeline is None:
                logger.warning("verify request for unknown door %s ignored", request.door)
                continue
            logger.info(
                "claim door=%s identity=%r request_id=%r",
                request.door,
                request.identity,
                request.request_id,
            )
            outcomes = pipeline.claim(request.request_id, request.identity, request.timeout_s)
            self._publish_outcomes(request.door, outcomes)

    def _answer_expired_claims(self) -> None:
        for door, pipeline in self._pipelines.items():
            self._publish_outcomes(door, pipeline.expired_claims())

    def _publish_outcomes(self, door: str, outcomes: list[ClaimOutcome]) -> None:
        for outcome in outcomes:
            logger.info(
                "verify door=%s identity=%r match=%s code=%s reason=%r request_id=%r",
                door, outcome.identity, outcome.match, outcome.code, outcome.reason,
                outcome.request_id,
            )  # fmt: skip
            for output in self._outputs:
                output.submit_claim_outcome(door, outcome)

    # -- reload and watchdog ---------------------------------------------------------------

    def _reloaded(self, engine: FaceEngine, state: Recognition) -> Recognition:
        """SIGHUP: re-read config and enrollment, re-enroll incrementally, keep the cameras.
        Any error keeps the running state (the door keeps working as before) and is logged."""
        self._notifier.notify("RELOADING=1")
        previous_gate = engine.gate
        try:
            config = load_config(self._config_path)
            engine.gate = quality_gate(config)  # enrollment must pass the new gate
            fleet_report = self._fleet.reloaded if self._fleet is not None else None
            new_state = load_recognition(config, engine, on_report=fleet_report)
        except (FacegateError, OSError, ValueError) as exc:
            engine.gate = previous_gate
            logger.error("reload failed, keeping the previous configuration: %s", exc)
            if self._fleet is not None:
                self._fleet.reload_failed(str(exc))
            self._notify_reloaded()
            return state
        except Exception:
            # A bug or an input no parser foresaw: the door must keep working as before.
            engine.gate = previous_gate
            logger.exception("reload failed unexpectedly, keeping the previous configuration")
            if self._fleet is not None:
                self._fleet.reload_failed("unexpected error, see the daemon log")
            self._notify_reloaded()
            return state
        if self._keys_changed(config):
            # Controllers with the new key would reject every unlock: say why, loudly.
            logger.warning("signing key changes need a restart; still signing with the old keys")
        self._apply_changes(state.config, config)
        for pipeline in self._pipelines.values():
            pipeline.update(new_state)
        logger.info("reloaded: %d people enrolled", len(new_state.matcher))
        self._notify_reloaded()
        return new_state

    def _apply_changes(self, old: FacegateConfig, new: FacegateConfig) -> None:
        """Apply what can change live and log, per key, what needs a restart.

        Recognition, schedules, people, watchdog and the enrollment and gallery paths come
        with the new state; here: the log level and the cameras."""
        logging.getLogger().setLevel(new.log_level)
        restart_cameras: set[str] = set()
        for path in changed_paths(old, new):
            effect = reload_effect(path)
            if effect is ReloadEffect.RESTART:
                logger.warning("reload: %s changed; needs a restart (old value kept)", path)
                continue
            if effect is ReloadEffect.CAMERA:
                restart_cameras.add(old.cameras[_camera_index(path)].door)
            logger.info("reload: %s changed; applied", path)
        if old.door_ids != new.door_ids:
            return  # doors come and go only with a restart (warned above)
        for camera in new.cameras:
            if camera.door in restart_cameras:
                self._start_camera(camera, new.watchdog.stall_s)
            self._cameras[camera.door] = camera  # fps and mode apply from the next frame

    def _keys_changed(self, config: FacegateConfig) -> bool:
        """Whether a door that keeps running would now be given another key."""
        try:
            keys = load_door_keys(config.signing_key_sources())
        except FacegateError as exc:
            logger.error("%s: the next start will fail until this is fixed", exc)
            return True
        return any(door in keys and keys[door] != key for door, key in self._door_keys.items())

    def _notify_reloaded(self) -> None:
        # Before the first frame, READY=1 still waits for it (sent by the loop).
        if self._ready:
            self._notifier.notify("READY=1")

    def _watchdog(self, config: FacegateConfig, bus: DoorBus) -> None:
        """Ping systemd only while some camera delivers frames and every component is alive:
        a stalled camera, a dead thread or a long-dead MQTT link gets us restarted by
        WatchdogSec instead of silently watching nothing."""
        now = time.monotonic()
        if now - self._last_ping < WATCHDOG_PING_S:
            return
        bus.supervise()
        problem = self._health_problem(config, bus, now)
        if problem is not None:
            if problem != self._unhealthy:
                logger.error("watchdog withheld: %s", problem)
            self._unhealthy = problem
            return
        if self._unhealthy is not None:
            logger.info("watchdog resumed: every component is alive again")
            self._unhealthy = None
        self._notifier.notify("WATCHDOG=1")
        self._last_ping = now

    def _health_problem(self, config: FacegateConfig, bus: DoorBus, now: float) -> str | None:
        """Why the daemon is not doing its job, or None when it is."""
        fresh = [
            g.last_frame_ts is not None and now - g.last_frame_ts < config.watchdog.stall_s
            for g in self._grabbers.values()
        ]
        if not any(fresh):
            return f"no camera delivered a frame for {config.watchdog.stall_s:g} s"
        if dead := [door for door, g in self._grabbers.items() if not g.alive]:
            return f"camera supervisor dead for {', '.join(dead)}"
        if stuck := [o.name for o in self._outputs if not o.healthy()]:
            return f"output {', '.join(stuck)} dead or stuck"
        limit = config.watchdog.mqtt_down_s
        if limit > 0 and (down := bus.down_for()) > limit:
            return f"MQTT link down for {down:.0f} s (limit {limit:g} s)"
        return None


class ReloadEffect(Enum):
    LIVE = "live"
    CAMERA = "camera"  # that door's camera restarts; the others keep running
    RESTART = "restart"


#: Settings a running daemon takes without a restart (key path prefixes).
_LIVE: Final = ("recognition.", "log_level", "watchdog.", "enrollment", "gallery")
_CAMERA_LIVE: Final = frozenset({"fps", "mode"})
_CAMERA_RESTART: Final = frozenset({"source", "loop", "rotate"})
_CAMERA_FIELD: Final = re.compile(r"cameras\[(\d+)\]\.(\w+)")


def reload_effect(path: str) -> ReloadEffect:
    """What a reload does with a changed key path."""
    if path.startswith(_LIVE):
        return ReloadEffect.LIVE
    camera = _CAMERA_FIELD.match(path)
    if camera is not None and camera.group(2) in _CAMERA_LIVE:
        return ReloadEffect.LIVE
    if camera is not None and camera.group(2) in _CAMERA_RESTART:
        return ReloadEffect.CAMERA
    return ReloadEffect.RESTART  # models, mqtt, device, journal, doors, keys


def _camera_index(path: str) -> int:
    match = _CAMERA_FIELD.match(path)
    assert match is not None
    return int(match.group(1))
