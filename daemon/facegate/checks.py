"""`facegate check-config`: everything the daemon will need, checked before it starts.

Pure validation lives in facegate.config; this adds the checks that touch the disk:
camera files, model files, signing keys, broker password and TLS files, enrollment images,
and the gallery's model. Files `run` reads are read here the way `run` reads them (bounded,
regular files only), so check-config refuses, with exit 2, whatever would stop `run`.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from facegate.config import EnrollmentConfig, FacegateConfig, load_config, load_enrollment
from facegate.config.enrollment import door_ids
from facegate.config.loader import ConfigFileError
from facegate.config.mqtt import TlsConfig
from facegate.errors import BadInputError, ConfigError, GalleryError
from facegate.files import MIB, read_regular_file
from facegate.gallery import Gallery
from facegate.keys import KeyType, load_public_key
from facegate.mqtt import load_door_keys
from facegate.mqtt.client import _read_password as read_password  # the very reader `run` uses
from facegate.vision.engine import MODEL_FILES, pipeline_fingerprint

logger = logging.getLogger(__name__)

# PEM certificates and keys are a few KiB; a CA bundle (e.g. ca-certificates.crt) ~220 KiB.
TLS_FILE_MAX_BYTES = MIB


@dataclass
class CheckReport:
    config: FacegateConfig
    people: int
    images: int
    warnings: list[str] = field(default_factory=list)


def check_all(config_path: Path) -> CheckReport:
    """Raise BadInputError (naming file and field) on the first problem that stops a start."""
    config = load_config(config_path)
    _check_cameras(config, config_path)
    _check_models(config, config_path)
    key_warnings = _check_signing_keys(config) + _check_fleet(config)
    if config.mqtt.password_file is not None:
        read_password(config.mqtt.password_file)
    if config.mqtt.tls is not None:
        _check_tls(config.mqtt.tls)
    _check_writable(config.gallery.parent, config_path, "gallery")
    _check_writable(config.journal, config_path, "journal")
    if config.fleet is not None:  # bundles rewrite the enrollment file and unpack beside it
        _check_writable(config.enrollment.parent, config_path, "enrollment")
    if config.audit.enabled:
        _check_writable(config.audit.path.parent, config_path, "audit.path")
    if config.control.enabled and not config.control.socket.parent.is_dir():
        # systemd makes /run/facegate (RuntimeDirectory) only while the unit runs.
        key_warnings.append(
            f"{config_path}: control.socket: folder {config.control.socket.parent} does not"
            " exist (yet): without it the daemon runs without walk-up enrollment"
        )
    enrollment = _load_enrollment(config, config_path)
    images = sum(len(enrollment.images_for(person)) for person in enrollment.enrollees)
    report = CheckReport(config, len(enrollment.people), images)
    unknown_doors = door_ids(enrollment.people) - set(config.door_ids)
    if unknown_doors:
        report.warnings.append(
            f"{config.enrollment}: doors {sorted(unknown_doors)} have no camera in {config_path}"
        )
    report.warnings += key_warnings + _gallery_warnings(config)
    return report


def _check_cameras(config: FacegateConfig, config_path: Path) -> None:
    for index, camera in enumerate(config.cameras):
        source = camera.source
        if isinstance(source.value, Path) and not source.value.exists():
            raise ConfigError(
                config_path, f"{source.value}: not found", field=f"cameras[{index}].source"
            )


def _check_signing_keys(config: FacegateConfig) -> list[str]:
    """Every key file must sign as configured (the shared one too: it is configured, so it
    is meant): a public key, a key of the other algorithm or an encrypted one is refused.
    A door's own HS256 secret that repeats another key protects nothing: warn."""
    shared = "the shared mqtt signing key"
    sources = config.signing_key_sources()
    path, field = config.mqtt.signing_key_path
    sources[shared] = (path, field, config.mqtt.signing_algorithm)
    keys = load_door_keys(sources)  # each file read once, the shared one included
    warnings = []
    if config.mqtt.signing is None:
        warnings.append(
            f"{path}: mqtt.signing_key_file is the old form of mqtt.signing (hs256); unlocks"
            " are JWS now, see docs/migration-jws.md"
        )
    for camera in config.cameras:
        own = keys[camera.door]
        if camera.signing_key_file is None or own.type is not KeyType.HS256:
            continue  # an Ed25519 key shared by doors cannot be used to forge by a controller
        same = sorted(name for name, key in keys.items() if key == own and name != camera.door)
        if same:
            warnings.append(
                f"{camera.signing_key_file}: door {camera.door!r} has its own key file but "
                f"the same key as {', '.join(same)}: a controller holding that key can forge "
                "this door's unlocks"
            )
    return warnings


def _check_fleet(config: FacegateConfig) -> list[str]:
    """The admin's public key must load; it must not be the unlock key's public half."""
    if config.fleet is None:
        return []
    field = "fleet.admin_public_key_file"
    admin = load_public_key(config.fleet.admin_public_key_file, KeyType.ED25519, field)
    unlock = load_door_keys(config.signing_key_sources())
    if any(key.public() == admin for key in unlock.values()):
        return [
            f"{config.fleet.admin_public_key_file}: the bundle admin key is an unlock key:"
            " whoever holds the unlock key could also sign enrollments; use separate keys"
        ]
    return []


def _check_tls(tls: TlsConfig) -> None:
    """Each TLS file regular and bounded, then loaded as paho's tls_set will load it."""
    files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
    for name, path in files.items():
        if path is not None:
            read_regular_file(path, TLS_FILE_MAX_BYTES, field=f"mqtt.tls.{name}", what="TLS file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        message = f"not a usable CA certificate (PEM): {exc}"
        raise BadInputError(tls.ca_file, message, field="mqtt.tls.ca_file") from None
    if tls.cert_file is None or tls.key_file is None:
        return
    try:
        # An encrypted key would make OpenSSL prompt on the terminal: say so instead.
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=_no_password)
    except (OSError, ssl.SSLError) as exc:
        pair = f"{tls.cert_file}, {tls.key_file}"
        message = f"cannot load the client certificate and key (PEM, key not encrypted): {exc}"
        raise BadInputError(pair, message, field="mqtt.tls") from None


def _no_password() -> bytes:
    return b""


def _load_enrollment(config: FacegateConfig, config_path: Path) -> EnrollmentConfig:
    """The enrollment; a file that cannot be read names the facegate.yaml key pointing at it."""
    try:
        return load_enrollment(config.enrollment)
    except ConfigFileError as exc:
        raise ConfigError(config_path, str(exc), field="enrollment") from None


def _check_writable(folder: Path, config_path: Path, field: str) -> None:
    """The daemon writes the gallery and the journal; find out now, not at the first event."""
    existing = folder if folder.exists() else folder.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(config_path, f"{existing}: not a writable folder", field=field)


def _check_models(config: FacegateConfig, config_path: Path) -> None:
    needed = [MODEL_FILES[k] for k in ("detector_short", "landmarks", config.models.embedder)]
    for name in needed:
        path = config.models.dir / name
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            problem = "model file missing" if not path.exists() else f"unreadable ({exc.strerror})"
            raise ConfigError(
                config_path, f"{path}: {problem} (build with `make models`)", field="models.dir"
            ) from None


def _gallery_warnings(config: FacegateConfig) -> list[str]:
    """The daemon (re)builds the gallery from enrollment at start; say what it will do."""
    if not config.gallery.exists():
        return [f"{config.gallery}: no gallery yet; `facegate run` builds it from enrollment"]
    fingerprint = pipeline_fingerprint(config.models.dir, config.models.embedder)
    try:
        Gallery.load(config.gallery, fingerprint)
    except GalleryError as exc:
        return [f"{exc} (`facegate run` re-embeds the enrollment images)"]
    except BadInputError as exc:
        return [str(exc)]
    return []
