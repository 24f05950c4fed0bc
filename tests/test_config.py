"""facegate.yaml: one invalid variant per rule, each error naming file, line and key path."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel, ValidationError

from facegate.config import (
    CameraSource,
    ConfigValidationError,
    FacegateConfig,
    load_config,
)
from facegate.config.loader import format_loc
from facegate.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

BASE = """\
device: frontdoor-pi
cameras:
  - door: front
    source: picamera2
    fps: 10
    loop: false
    mode: face
    rotate: 0
recognition:
  threshold: 0.9
  margin: 0.1
  confirm_frames: 3
  window: 5
  min_face_px: 80
  min_sharpness: 0.004
  cooldown_s: 10
  unknown_event_interval_s: 5
  verify_timeout_s: 5
models: {dir: ../models, embedder: int8, threads: 2}
enrollment: enrollment.yaml
gallery: /var/lib/facegate/gallery.fgg
journal: /var/lib/facegate/journal
mqtt:
  host: 127.0.0.1
  port: 1883
  topic_prefix: facegate
  signing_key_file: hmac.key
log_level: INFO
watchdog: {stall_s: 10}
"""

SECOND_CAMERA = "  - door: front\n    source: 1\n"

# (id, old text, new text, line, key path, message fragment)
INVALID = [
    (
        "unknown-top-key",
        "log_level: INFO\n",
        "log_level: INFO\nbogus: 1\n",
        29,
        "bogus",
        "unknown key (got 1)",
    ),
    (
        "unknown-camera-key",
        "    rotate: 0\n",
        "    rotate: 0\n    zoom: 2\n",
        9,
        "cameras[0].zoom",
        "unknown key",
    ),
    (
        "device-pattern",
        "device: frontdoor-pi",
        "device: front door!",
        1,
        "device",
        "should match pattern",
    ),
    (
        "no-cameras",
        "cameras:\n  - door: front\n    source: picamera2\n    fps: 10\n"
        "    loop: false\n    mode: face\n    rotate: 0\n",
        "cameras: []\n",
        2,
        "cameras",
        "at least 1 item",
    ),
    ("door-slug", "door: front", "door: Front Door", 3, "cameras[0].door", "'Front Door'"),
    (
        "door-duplicate",
        "recognition:\n",
        SECOND_CAMERA + "recognition:\n",
        9,
        "cameras[1].door",
        "already used by cameras[0] (got 'front')",
    ),
    (
        "source-scheme",
        "source: picamera2",
        "source: ftp://host/video",
        4,
        "cameras[0].source",
        "URL scheme must be one of",
    ),
    (
        "source-empty",
        "source: picamera2",
        'source: ""',
        4,
        "cameras[0].source",
        "must not be empty",
    ),
    (
        "source-type",
        "source: picamera2",
        "source: [1]",
        4,
        "cameras[0].source",
        "a string or a device number",
    ),
    (
        "picamera-number",
        "source: picamera2",
        "source: picamera2:x",
        4,
        "cameras[0].source",
        "camera number",
    ),
    ("fps-high", "fps: 10", "fps: 100", 5, "cameras[0].fps", "less than or equal to 60 (got 100)"),
    ("fps-low", "fps: 10", "fps: 0.1", 5, "cameras[0].fps", "greater than or equal to 0.5"),
    ("loop-type", "loop: false", "loop: sometimes", 6, "cameras[0].loop", "valid boolean"),
    ("mode", "mode: face", "mode: card", 7, "cameras[0].mode", "'card_and_face' (got 'card')"),
    ("rotate", "rotate: 0", "rotate: 45", 8, "cameras[0].rotate", "(got 45)"),
    (
        "threshold-above-safe",
        "threshold: 0.9",
        "threshold: 1.26",
        10,
        "recognition.threshold",
        "less than or equal to 1.1 (got 1.26)",
    ),
    (
        "threshold-zero",
        "threshold: 0.9",
        "threshold: 0",
        10,
        "recognition.threshold",
        "greater than 0",
    ),
    ("margin-high", "margin: 0.1", "margin: 1.5", 11, "recognition.margin", "1.5"),
    ("margin-negative", "margin: 0.1", "margin: -0.1", 11, "recognition.margin", "-0.1"),
    (
        "confirm-zero",
        "confirm_frames: 3",
        "confirm_frames: 0",
        12,
        "recognition.confirm_frames",
        "greater than or equal to 1",
    ),
    (
        "confirm-above-window",
        "confirm_frames: 3",
        "confirm_frames: 6",
        13,
        "recognition.window",
        "window must be >= confirm_frames (6) (got 5)",
    ),
    ("min-face-px", "min_face_px: 80", "min_face_px: 5", 14, "recognition.min_face_px", "(got 5)"),
    (
        "min-sharpness",
        "min_sharpness: 0.004",
        "min_sharpness: -1",
        15,
        "recognition.min_sharpness",
        "(got -1)",
    ),
    (
        # The earlier, contrast-dependent unit (20) is refused, not silently misread.
        "min-sharpness-old-unit",
        "min_sharpness: 0.004",
        "min_sharpness: 20",
        15,
        "recognition.min_sharpness",
        "(got 20)",
    ),
    ("cooldown", "cooldown_s: 10", "cooldown_s: -1", 16, "recognition.cooldown_s", "(got -1)"),
    (
        "unknown-interval",
        "unknown_event_interval_s: 5",
        "unknown_event_interval_s: -2",
        17,
        "recognition.unknown_event_interval_s",
        "(got -2)",
    ),
    (
        "verify-timeout",
        "verify_timeout_s: 5",
        "verify_timeout_s: 0",
        18,
        "recognition.verify_timeout_s",
        "greater than 0",
    ),
    (
        "recognition-type",
        "recognition:\n",
        "recognition: 5\nx_recognition:\n",
        9,
        "recognition",
        "valid dictionary",
    ),
    ("embedder", "embedder: int8", "embedder: fp16", 19, "models.embedder", "'fp16'"),
    ("threads", "threads: 2", "threads: 0", 19, "models.threads", "(got 0)"),
    (
        "gallery-type",
        "gallery: /var/lib/facegate/gallery.fgg",
        "gallery: [a, b]",
        21,
        "gallery",
        "path",
    ),
    ("mqtt-port", "port: 1883", "port: 70000", 25, "mqtt.port", "(got 70000)"),
    (
        "mqtt-unknown-key",
        "  port: 1883\n",
        "  port: 1883\n  qos: 2\n",
        26,
        "mqtt.qos",
        "unknown key",
    ),
    (
        "mqtt-key-missing",
        "  signing_key_file: hmac.key\n",
        "",
        23,
        "mqtt",
        "give exactly one of signing",
    ),
    (
        "mqtt-two-keys",
        "  signing_key_file: hmac.key\n",
        "  signing_key_file: hmac.key\n  signing: {key_file: unlock.key}\n",
        23,
        "mqtt",
        "give exactly one of signing",
    ),
    (
        "mqtt-signing-algorithm",
        "  signing_key_file: hmac.key\n",
        "  signing: {algorithm: rs256, key_file: unlock.key}\n",
        27,
        "mqtt.signing.algorithm",
        "'ed25519' or 'hs256'",
    ),
    (
        "mqtt-missing",
        "mqtt:\n  host: 127.0.0.1\n  port: 1883\n  topic_prefix: facegate\n"
        "  signing_key_file: hmac.key\n",
        "",
        1,
        "mqtt",
        "required key is missing",
    ),
    (
        "mqtt-password-needs-user",
        "  port: 1883\n",
        "  port: 1883\n  password_file: pw\n",
        23,
        "mqtt",
        "password_file needs username",
    ),
    (
        "mqtt-cert-without-key",
        "  port: 1883\n",
        "  port: 1883\n  tls: {ca_file: ca, cert_file: c}\n",
        26,
        "mqtt.tls",
        "cert_file and key_file",
    ),
    ("log-level", "log_level: INFO", "log_level: LOUD", 28, "log_level", "'LOUD'"),
    ("watchdog", "stall_s: 10", "stall_s: 0", 29, "watchdog.stall_s", "(got 0)"),
]


def write(tmp_path: Path, text: str, name: str = "facegate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_base_is_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.recognition.threshold == 0.9
    assert config.cameras[0].source == CameraSource(kind="picamera2", value=0)


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "fragment"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_variant(
    tmp_path: Path, old: str, new: str, line: int, key: str, fragment: str
) -> None:
    assert old in BASE
    path = write(tmp_path, BASE.replace(old, new, 1))
    error = load_error(path)
    first = str(error).splitlines()[0]
    assert first.startswith(f"{path}:{line}: {key}: "), first
    assert fragment in first
    assert (error.line, error.field) == (line, key)


def test_every_error_is_reported_one_line_each(tmp_path: Path) -> None:
    text = BASE.replace("fps: 10", "fps: 100").replace("port: 1883", "port: 0")
    error = load_error(write(tmp_path, text))
    assert isinstance(error, ConfigValidationError)
    assert [line.split(": ")[1] for line in error.lines] == ["cameras[0].fps", "mqtt.port"]
    assert str(error).splitlines() == list(error.lines)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("device: a\ndevice: b\n", 2, "device: duplicate key 'device' (first given on line 1)"),
        (
            BASE.replace("    fps: 10\n", "    fps: 10\n    fps: 12\n"),
            6,
            "cameras[0].fps: duplicate key 'fps' (first given on line 5)",
        ),
        (BASE.replace("threads: 2}", "threads: 2, dir: x}"), 19, "models.dir: duplicate key"),
        ("cameras: [\n  {door: a\n", 3, "YAML syntax error"),
        ("device: 'x\n", 2, "YAML syntax error"),
        ("- a\n- b\n", 1, "top level must be a mapping"),
        ("just text\n", 1, "top level must be a mapping"),
        ("device: x\nstarted: 2025-02-30\n", 2, "started: YAML value error: invalid date"),
    ],
    ids=["dup-top", "dup-nested", "dup-flow", "syntax", "unclosed-quote", "list", "scalar", "date"],
)
def test_yaml_level_errors(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, text)
    message = str(load_error(path))
    assert message.startswith(f"{path}:{line}:"), message
    assert fragment in message


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "device: x\ncameras: &a\n  - *a\n")
    assert str(load_error(path)) == f"{path}:2: cameras[0]: recursive YAML alias"


def test_url_password_is_not_echoed(tmp_path: Path) -> None:
    text = BASE.replace("source: picamera2", "source: ftp://user:s3cret@cam/x")
    message = str(load_error(write(tmp_path, text)))
    assert "s3cret" not in message and "ftp://user:***@cam/x" in message


def test_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert str(load_error(missing)) == f"{missing}: file not found"
    assert "is a directory" in str(load_error(tmp_path))
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"device: x\ngallery: /tmp/caf\xe9\n")
    assert str(load_error(latin1)).startswith(f"{latin1}:2: not UTF-8")


def test_empty_file_names_the_missing_keys(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, ""))
    assert isinstance(error, ConfigValidationError)
    assert {line.split(": ")[1] for line in error.lines} == {"cameras", "mqtt"}


def test_defaults_and_base_60_free_numbers(tmp_path: Path) -> None:
    text = "cameras: [{door: a}]\nmqtt: {signing_key_file: k, host: '10:20'}\nrecognition:\n"
    config = load_config(write(tmp_path, text))
    assert config.device == "facegate"
    assert config.recognition.confirm_frames == 3 and config.recognition.window == 5
    assert config.models.embedder == "int8"
    assert config.log_level == "INFO"
    assert config.cameras[0].source.kind == "picamera2"


def test_relative_paths_are_anchored_at_the_yaml_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    etc = tmp_path / "etc"
    etc.mkdir()
    text = (
        BASE.replace("source: picamera2", "source: clips/demo.mp4")
        .replace("gallery: /var/lib/facegate/gallery.fgg", "gallery: ~/gallery.fgg")
        .replace(
            "  signing_key_file: hmac.key\n",
            "  signing_key_file: hmac.key\n"
            "  tls: {ca_file: ca.crt, cert_file: /abs/c.crt, key_file: k.key}\n",
        )
    )
    config = load_config(write(etc, text))
    assert config.models.dir == etc / "../models"
    assert config.enrollment == etc / "enrollment.yaml"
    assert config.gallery == tmp_path / "home" / "gallery.fgg"
    assert config.journal == Path("/var/lib/facegate/journal")
    assert config.cameras[0].source == CameraSource(kind="file", value=etc / "clips/demo.mp4")
    assert config.mqtt.signing_key_file == etc / "hmac.key"
    assert config.mqtt.tls is not None
    assert config.mqtt.tls.ca_file == etc / "ca.crt"
    assert config.mqtt.tls.cert_file == Path("/abs/c.crt")
    assert config.mqtt.tls.key_file == etc / "k.key"


def test_relative_config_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, BASE)
    monkeypatch.chdir(tmp_path)
    config = load_config("facegate.yaml")
    assert config.enrollment == tmp_path / "enrollment.yaml"


@pytest.mark.parametrize(
    ("raw", "kind", "value"),
    [
        ("picamera2", "picamera2", 0),
        ("picamera2:1", "picamera2", 1),
        (0, "device", 0),
        ("2", "device", 2),
        ("/dev/video0", "device", "/dev/video0"),
        ("rtsp://cam.local:554/stream", "url", "rtsp://cam.local:554/stream"),
        ("rtsps://cam/s", "url", "rtsps://cam/s"),
        ("HTTP://cam/mjpeg", "url", "HTTP://cam/mjpeg"),
        ("https://cam/mjpeg", "url", "https://cam/mjpeg"),
        ("video.mp4", "file", Path("video.mp4")),
        ("frames/", "folder", Path("frames")),
        ("frames", "folder", Path("frames")),
    ],
)
def test_camera_source_parse(raw: object, kind: str, value: object) -> None:
    source = CameraSource.parse(raw)
    assert (source.kind, source.value) == (kind, value)


def test_explicit_source_mapping_is_anchored(tmp_path: Path) -> None:
    text = BASE.replace("source: picamera2", "source: {kind: file, value: cam}")
    config = load_config(write(tmp_path, text))
    assert config.cameras[0].source == CameraSource(kind="file", value=tmp_path / "cam")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    with pytest.raises(ValidationError):
        config.recognition.threshold = 1.5


def test_example_config_validates() -> None:
    config = load_config(REPO / "config" / "facegate.yaml")
    assert config.cameras[0].door == "front"
    assert config.cameras[0].source.kind == "file"
    assert config.enrollment == REPO / "config" / "enrollment.yaml"
    assert config.gallery == Path("/var/lib/facegate/gallery.fgg")


def test_every_field_is_described() -> None:
    def walk(model: type[BaseModel]) -> list[str]:
        missing: list[str] = []
        for name, field in model.model_fields.items():
            if not field.description and name not in ("recognition", "models", "watchdog"):
                missing.append(f"{model.__name__}.{name}")
            for inner in (field.annotation, *get_args(field.annotation)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    missing += walk(inner)
        return missing

    assert walk(FacegateConfig) == []


def test_format_loc() -> None:
    assert format_loc(("cameras", 0, "fps")) == "cameras[0].fps"
    assert format_loc(()) == "(top level)"


def test_confirm_frames_above_default_window(tmp_path: Path) -> None:
    text = BASE.replace("  window: 5\n", "").replace("confirm_frames: 3", "confirm_frames: 6")
    message = str(load_error(write(tmp_path, text)))
    assert message.startswith(f"{tmp_path / 'facegate.yaml'}:9: recognition.window: window must")


def test_a_door_may_sign_with_its_own_key(tmp_path: Path) -> None:
    """cameras[].signing_key_file overrides the shared mqtt key for that door only."""
    text = BASE.replace(
        "    rotate: 0\n",
        "    rotate: 0\n    signing_key_file: keys/front.key\n  - door: garage\n    source: 1\n",
    )
    config = load_config(write(tmp_path, text))
    assert config.signing_key_sources() == {
        "front": (tmp_path / "keys/front.key", "cameras[0].signing_key_file", "hs256"),
        "garage": (tmp_path / "hmac.key", "mqtt.signing_key_file", "hs256"),
    }


def test_signing_algorithm_per_door(tmp_path: Path) -> None:
    """mqtt.signing: ed25519 by default; a door may sign with its own key and algorithm."""
    text = BASE.replace("  signing_key_file: hmac.key\n", "  signing: {key_file: unlock.key}\n")
    text = text.replace(
        "    rotate: 0\n",
        "    rotate: 0\n    signing_key_file: front.key\n    signing_algorithm: hs256\n"
        "  - door: garage\n    source: 1\n",
    )
    config = load_config(write(tmp_path, text))
    assert config.signing_key_sources() == {
        "front": (tmp_path / "front.key", "cameras[0].signing_key_file", "hs256"),
        "garage": (tmp_path / "unlock.key", "mqtt.signing.key_file", "ed25519"),
    }
    orphan = text.replace("    signing_key_file: front.key\n", "")
    assert "signing_algorithm needs this camera's own signing_key_file" in str(
        load_error(write(tmp_path, orphan))
    )
