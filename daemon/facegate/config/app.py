"""`facegate.yaml`: device, cameras, recognition thresholds, models, paths, MQTT, logging."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from facegate.config.fleet import FleetConfig
from facegate.config.loader import located_error, require_unique
from facegate.config.mqtt import MqttConfig, SigningAlgorithm
from facegate.config.outputs import (
    AUDIT_FILE_NAME,
    AuditConfig,
    HomeAssistantConfig,
    MetricsConfig,
)
from facegate.paths import DEFAULT_GALLERY, DEFAULT_JOURNAL, INSTALLED_MODELS_DIR

DOOR_ID_PATTERN: Final = r"^[a-z0-9_-]{1,32}$"
URL_SCHEMES: Final = frozenset({"rtsp", "rtsps", "http", "https"})
# On the 5-celebrity data (int8) the equal-error point is L2 ~1.2 (2% of strangers in) and
# 1 impostor pair in 1000 is accepted from L2 ~1.1: no door may be configured looser than that.
MAX_THRESHOLD: Final = 1.1

DoorId = Annotated[str, StringConstraints(pattern=DOOR_ID_PATTERN)]
SourceKind = Literal["picamera2", "device", "url", "file", "folder"]

# allow_inf_nan=False: `.inf` or `.nan` is never a sensible number of seconds or pixels.
_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class CameraSource(BaseModel):
    """Where frames come from, parsed from the `source:` string of a camera.

    `value` is the picamera2 camera number (int), a device index (int) or device path
    (str, `/dev/...`), a URL (str), or a video file / image folder (Path, anchored at
    the YAML file's directory by the loader).
    """

    model_config = _FROZEN

    kind: SourceKind = Field(description="picamera2 | device | url | file | folder")
    value: int | str | Path = Field(description="camera number, device, URL or path")

    @model_validator(mode="before")
    @classmethod
    def _paths_are_paths(cls, raw: Any) -> Any:
        # An explicit {kind: file, value: x.mp4} must anchor like a parsed one.
        if isinstance(raw, dict) and raw.get("kind") in ("file", "folder"):
            value = raw.get("value")
            if isinstance(value, str):
                return {**raw, "value": Path(value)}
        return raw

    @classmethod
    def parse(cls, raw: object) -> CameraSource:
        """`picamera2[:N]`, an int/digit string, `/dev/...`, a URL or a file/folder path."""
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError("source must be a string or a device number")
        if isinstance(raw, int) or raw.strip().isdigit():
            return cls(kind="device", value=int(raw))
        text = raw.strip()
        if not text:
            raise ValueError("source must not be empty")
        if text == "picamera2" or text.startswith("picamera2:"):
            return cls(kind="picamera2", value=_picamera_number(text))
        if text.startswith("/dev/"):
            return cls(kind="device", value=text)
        scheme = _SCHEME.match(text)
        if scheme:
            if scheme.group(1).lower() not in URL_SCHEMES:
                raise ValueError(f"URL scheme must be one of {sorted(URL_SCHEMES)}")
            return cls(kind="url", value=text)
        # Decided without touching the disk (validation is pure): a trailing "/" or no
        # extension means a folder of images; check-config tests that it exists.
        path = Path(text)
        is_folder = text.endswith("/") or not path.suffix
        return cls(kind="folder" if is_folder else "file", value=path)

    def __str__(self) -> str:
        if self.kind == "picamera2":
            return f"picamera2:{self.value}"
        return str(self.value)


def _picamera_number(text: str) -> int:
    _, _, number = text.partition(":")
    if not number:
        return 0
    if not number.isdigit():
        raise ValueError("picamera2 camera number must be a non-negative integer")
    return int(number)


class CameraConfig(BaseModel):
    """One camera watching one door."""

    model_config = _FROZEN

    door: DoorId = Field(
        description="door id used in MQTT topics and enrollment doors: [a-z0-9_-], 1..32 chars"
    )
    source: CameraSource = Field(
        default_factory=lambda: CameraSource(kind="picamera2", value=0),
        description=(
            "picamera2[:N] | device index (0) | /dev/videoN | rtsp(s)/http(s) URL | video file"
            " | image folder (trailing / or no extension); paths relative to this YAML"
        ),
    )
    fps: float = Field(default=10.0, ge=0.5, le=60, description="frames processed per second")
    loop: bool = Field(default=False, description="video files: start again at the end (demo)")
    mode: Literal["face", "card_and_face"] = Field(
        default="face",
        description="face: a recognised face unlocks; card_and_face: only a matched 1:1 claim",
    )
    rotate: Literal[0, 90, 180, 270] = Field(
        default=0, description="clockwise rotation of the image, degrees"
    )
    hfov_deg: float = Field(
        default=60.0,
        ge=20,
        le=170,
        description=(
            "the lens's horizontal field of view, degrees (Pi camera module 2: 62, module 3:"
            " 66, wide: 102); liveness judges the face's 3-D motion with it. Needs a restart"
        ),
    )
    spectrum: Literal["visible", "nir"] = Field(
        default="visible",
        description=(
            "visible | nir (a NoIR camera with an 850 nm illuminator and a visible-blocking"
            " filter: phone and tablet screens emit no NIR and show no face). Needs a restart"
        ),
    )
    signing_key_file: Path | None = Field(
        default=None,
        description=(
            "this door's own private unlock key (default: mqtt.signing.key_file); with hs256,"
            " one secret per door means a controller that leaks its secret cannot forge another"
            " door's unlocks. Key changes need a restart"
        ),
    )
    signing_algorithm: SigningAlgorithm | None = Field(
        default=None,
        description=(
            "this door's unlock algorithm, ed25519 or hs256 (default: mqtt.signing.algorithm);"
            " needs signing_key_file"
        ),
    )

    @model_validator(mode="after")
    def _algorithm_needs_key(self) -> CameraConfig:
        if self.signing_algorithm is not None and self.signing_key_file is None:
            raise ValueError("signing_algorithm needs this camera's own signing_key_file")
        return self

    @field_validator("source", mode="before")
    @classmethod
    def _parse_source(cls, raw: object) -> object:
        # A mapping {kind, value} is accepted as is (explicit override of the guess).
        return raw if isinstance(raw, dict | CameraSource) else CameraSource.parse(raw)


class PhotoQualityConfig(BaseModel):
    """The quality gate for photos (enrollment.yaml images, `facegate enroll`, walk-up
    captures once saved): judged at the face's native resolution, so tight face crops of a
    one-shot database enroll. The door's live frames keep min_face_px / min_sharpness /
    max_yaw_deg above."""

    model_config = _FROZEN

    min_face_px: int = Field(
        default=32, ge=16, le=4000, description="smallest face box width in a photo, pixels"
    )
    min_detail_px: float = Field(
        default=14.0,
        ge=0,
        le=1000,
        description=(
            "face width x native sharpness (0..1, ~0.45 when sharp at any size), pixels: a"
            " small face must be sharp, a large one may be soft; below 14 blurred small faces"
            " of different people were measured within L2 0.9 of each other. 0 disables"
        ),
    )
    max_yaw_deg: float = Field(
        default=45.0, ge=0, le=90, description="photos turned further are refused, degrees"
    )


class RecognitionConfig(BaseModel):
    """When a face counts as a person: distance, margin, multi-frame agreement, quality."""

    model_config = _FROZEN

    threshold: float = Field(
        default=0.9,
        gt=0,
        le=MAX_THRESHOLD,
        description=(
            "accept when the L2 distance between unit embeddings (0 same .. 2 opposite) is at"
            f" most this; (0, {MAX_THRESHOLD}]. Looser values are refused: from L2 1.1 one"
            " impostor pair in 1000 is accepted, and the equal-error point (L2 ~1.2, 2% of"
            " strangers accepted) is never safe for a door; at 0.9 no impostor pair was accepted"
        ),
    )
    margin: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="the second-best identity must be at least this much farther (L2), 0..1",
    )
    confirm_frames: int = Field(
        default=3, ge=1, le=60, description="frames that must agree on a person, 1..60"
    )
    window: int = Field(
        default=5, ge=1, le=120, description="of the last this many frames, >= confirm_frames"
    )
    min_face_px: int = Field(
        default=80, ge=20, le=4000, description="smallest face box width embedded, pixels"
    )
    min_sharpness: float = Field(
        default=0.004,
        ge=0,
        le=1,
        description=(
            "share of the aligned grey face's contrast in fine detail (variance of its"
            " Laplacian / its variance; exposure does not change it); sharp faces 0.01-0.1,"
            " 0 disables"
        ),
    )
    max_yaw_deg: float = Field(
        default=30.0,
        ge=0,
        le=90,
        description="faces turned further than this (degrees, from the landmarks) are not"
        " matched;"
        " the eye-based alignment mis-scales turned faces by 1 - cos(yaw); 90 disables",
    )
    cooldown_s: float = Field(
        default=10.0, ge=0, le=3600, description="no second unlock per person and door, seconds"
    )
    unknown_event_interval_s: float = Field(
        default=5.0, ge=0, le=3600, description="at most one `unknown` event per door, seconds"
    )
    verify_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="how long a 1:1 claim waits for a match, seconds"
    )
    photos: PhotoQualityConfig = Field(
        default_factory=PhotoQualityConfig,
        description="quality gate for enrollment photos, judged at native resolution",
    )

    liveness: Literal["off", "passive", "challenge"] = Field(
        default="passive",
        description=(
            "off: a photo of a resident opens the door; passive: unlock only for a face whose"
            " own motion shows 3-D structure (a print, bent or flat, or a still on a screen"
            " never); challenge: as passive, and only after a random prompt on"
            " <door>/prompt is answered on the same track (stops a replayed video too; needs"
            " a display or speaker at the door)"
        ),
    )
    liveness_wait_s: float = Field(
        default=3.0,
        ge=0.5,
        le=60,
        description=(
            "passive: a recognised face still without a liveness verdict this long after it"
            " was recognised gets one `liveness_undecided` denial (it may still be let in when"
            " it moves), seconds"
        ),
    )
    challenge_timeout_s: float = Field(
        default=4.0,
        ge=1,
        le=30,
        description="challenge: how long the answer to a prompt may take, seconds",
    )
    challenge_prompts: tuple[Literal["turn_left", "turn_right", "blink"], ...] = Field(
        default=("turn_left", "turn_right"),
        min_length=1,
        description=(
            "challenge: the prompts drawn from at random. `blink` is not a default: an eye-hole"
            " print with real eyes behind it, held still, answers it, and a replayed video"
            " blinks every few seconds"
        ),
    )

    @field_validator("liveness", mode="before")
    @classmethod
    def _bare_off(cls, raw: object) -> object:
        # YAML 1.1 reads a bare `off` as false (and `on` as true: not a mode).
        if raw is False:
            return "off"
        if raw is True:
            raise ValueError(
                "liveness must be off, passive or challenge (a bare `on` reads as true)"
            )
        return raw

    @field_validator("challenge_prompts")
    @classmethod
    def _distinct_prompts(cls, prompts: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(prompts)) != len(prompts):
            raise ValueError("challenge_prompts must not repeat a prompt")
        return prompts

    @model_validator(mode="after")
    def _window_holds_confirm_frames(self) -> RecognitionConfig:
        # A model validator, not a field one: defaults are not validated per field.
        if self.window < self.confirm_frames:
            raise located_error(
                ("window",),
                f"window must be >= confirm_frames ({self.confirm_frames})",
                self.window,
            )
        return self


class ModelsConfig(BaseModel):
    """Where the built .tflite files are and how to run them."""

    model_config = _FROZEN

    dir: Path = Field(
        default=INSTALLED_MODELS_DIR,
        description="folder with the built models (make models); relative to this YAML",
    )
    # The type names are the keys of the registries in facegate.vision.engine (this module
    # is a leaf and cannot import them); tests/test_stages.py keeps both lists equal.
    detector: Literal["blazeface"] = Field(
        default="blazeface",
        description="face detector type: blazeface (MediaPipe short range, faces within ~2 m)",
    )
    landmarker: Literal["facemesh"] = Field(
        default="facemesh",
        description="landmark model type (eyes, head turn): facemesh (MediaPipe, 468 points)",
    )
    embedder: Literal["int8", "float32"] = Field(
        default="int8", description="int8: fast (use this); float32: accuracy reference"
    )
    threads: int = Field(default=2, ge=1, le=16, description="interpreter CPU threads")


class WatchdogConfig(BaseModel):
    """systemd watchdog: pings stop when frames stop."""

    model_config = _FROZEN

    stall_s: float = Field(
        default=10.0, ge=1, le=600, description="no new frame for this long stops pings, seconds"
    )
    # 300 s: with the unit's 30 s WatchdogSec a long broker outage restarts us about every
    # 5.5 min, well under StartLimitBurst (5 in 10 min) that would leave the unit failed.
    mqtt_down_s: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description=(
            "an MQTT link down for this long stops pings, so systemd restarts the daemon"
            " (events stay journaled); 0: never, seconds"
        ),
    )


#: sockaddr_un holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH_BYTES: Final = 107


class ControlConfig(BaseModel):
    """The local control socket of `facegate enroll --capture` (walk-up enrollment)."""

    model_config = _FROZEN

    enabled: bool = Field(default=False, description="serve the control socket")
    socket: Path = Field(
        default=Path("/run/facegate/control.sock"),
        description=(
            "Unix socket, mode 0660: root and the daemon's group may use it; never the"
            " network. Its folder must exist (systemd's RuntimeDirectory); relative to this"
            " YAML"
        ),
    )

    @field_validator("socket")
    @classmethod
    def _fits_a_sockaddr(cls, path: Path) -> Path:
        size = len(os.fsencode(path))
        if size > MAX_SOCKET_PATH_BYTES:
            raise ValueError(f"a Unix socket path is at most {MAX_SOCKET_PATH_BYTES} bytes: {size}")
        return path


class ReviewConfig(BaseModel):
    """Review of unknown faces: the best photo of each stranger's visit, kept on this unit
    for `facegate review` (docs/enrollment.md, "Privacy")."""

    model_config = _FROZEN

    enabled: bool = Field(default=False, description="keep photos of unknown faces")
    path: Path | None = Field(
        default=None,
        description="folder of the kept faces (0700, files 0600); default: review/ beside"
        " the journal folder; relative to this YAML",
    )
    retention_days: int = Field(
        default=30, ge=1, le=365, description="faces older than this are deleted, days"
    )
    max_faces: int = Field(
        default=1000, ge=10, le=100_000, description="at most this many (the oldest go first)"
    )


class FacegateConfig(BaseModel):
    """The whole of facegate.yaml."""

    model_config = _FROZEN

    device: str = Field(
        default="facegate",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="this unit's name in events and the default MQTT client id",
    )
    cameras: list[CameraConfig] = Field(min_length=1, description="one camera per door")
    recognition: RecognitionConfig = Field(default_factory=RecognitionConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    enrollment: Path = Field(
        default=Path("enrollment.yaml"), description="enrollment file; relative to this YAML"
    )
    gallery: Path = Field(default=DEFAULT_GALLERY, description="enrolled embeddings file")
    journal: Path = Field(
        default=DEFAULT_JOURNAL,
        description="folder of events not yet acknowledged by the broker",
    )
    mqtt: MqttConfig = Field(description="broker and unlock signing")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="DEBUG | INFO | WARNING | ERROR | CRITICAL"
    )
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    fleet: FleetConfig | None = Field(
        default=None, description="take the enrollment from the site's signed bundles (off)"
    )
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, description="Home Assistant MQTT discovery (off)"
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="Prometheus metrics over HTTP (off)"
    )
    audit: AuditConfig = Field(
        default_factory=AuditConfig,
        description="audit trail of every decision, SQLite (on; beside the journal folder)",
    )
    control: ControlConfig = Field(
        default_factory=ControlConfig,
        description="local control socket for walk-up enrollment (off)",
    )
    review: ReviewConfig = Field(
        default_factory=ReviewConfig, description="keep unknown faces for review (off)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, raw: object) -> object:
        return raw.upper() if isinstance(raw, str) else raw

    @field_validator("cameras")
    @classmethod
    def _unique_doors(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        doors = [camera.door for camera in cameras]
        require_unique(doors, "door", lambda first: f"door id is already used by cameras[{first}]")
        return cameras

    @model_validator(mode="before")
    @classmethod
    def _mapping_required(cls, raw: Any) -> Any:
        # An empty YAML section (`recognition:`) reads as None; treat it as "all defaults".
        if isinstance(raw, dict):
            raw = {
                key: ({} if value is None and key in _SECTIONS else value)
                for key, value in raw.items()
            }
            return _audit_beside_the_journal(raw)
        return raw

    def camera(self, door: str) -> CameraConfig:
        """The camera of `door`; KeyError if there is none."""
        for camera in self.cameras:
            if camera.door == door:
                return camera
        raise KeyError(door)

    @property
    def door_ids(self) -> tuple[str, ...]:
        return tuple(camera.door for camera in self.cameras)

    @property
    def review_dir(self) -> Path:
        """Where unknown faces are kept: review.path, else review/ beside the journal."""
        return self.review.path or self.journal.parent / "review"

    def signing_key_sources(self) -> dict[str, tuple[Path, str, SigningAlgorithm]]:
        """door -> (file of the key that signs its unlocks, the config field naming it, the
        algorithm): the camera's own key, else the shared mqtt one."""
        shared_path, shared_field = self.mqtt.signing_key_path
        shared = self.mqtt.signing_algorithm
        sources: dict[str, tuple[Path, str, SigningAlgorithm]] = {}
        for i, camera in enumerate(self.cameras):
            if camera.signing_key_file is None:
                sources[camera.door] = (shared_path, shared_field, shared)
            else:
                field = f"cameras[{i}].signing_key_file"
                sources[camera.door] = (
                    camera.signing_key_file,
                    field,
                    camera.signing_algorithm or shared,
                )
        return sources


def _audit_beside_the_journal(raw: dict[str, Any]) -> dict[str, Any]:
    """Without `audit.path`, the trail lives with the daemon's other state: beside the
    journal folder (/var/lib/facegate/audit.db on a device, the site's folder in tests)."""
    audit = raw.get("audit", {})
    journal = raw.get("journal", str(DEFAULT_JOURNAL))
    if not isinstance(audit, dict) or "path" in audit or not isinstance(journal, str):
        return raw  # validation reports what is wrong with them
    return {**raw, "audit": {**audit, "path": str(Path(journal).parent / AUDIT_FILE_NAME)}}


_SECTIONS: Final = frozenset(
    {
        "recognition",
        "models",
        "watchdog",
        "homeassistant",
        "metrics",
        "audit",
        "control",
        "review",
    }
)
