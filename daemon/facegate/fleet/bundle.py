"""Signed enrollment bundles: build one from enrollment.yaml, read one from untrusted bytes.

A bundle is one byte string::

    facegate-bundle 1\\n
    <manifest: JWS compact, EdDSA with the site's admin key, typ facegate-bundle+jwt>\\n
    <the files, concatenated in manifest order>

The manifest (the JWS payload) names the site, a version (higher is newer), when it was
made, and each file's path, size and sha256: ``enrollment.yaml`` first, then the photos it
references (``photos/<person>/<n>-<name>``). The signature covers the manifest and the
manifest covers every byte after it, so a device that checks both holds exactly what the
admin signed. Photos, not embeddings: each device embeds them with its own models.

`read_bundle` is total: it returns a verified Bundle or raises BundleRejected with a
short reason (oversize, malformed, unsigned, bad_signature, other_site, truncated,
tampered); it never writes anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import yaml
from jwt.api_jws import PyJWS
from jwt.exceptions import PyJWTError

from facegate.config import load_enrollment
from facegate.errors import BadInputError, FacegateError
from facegate.files import MIB, read_regular_file
from facegate.keys import KeyType, PrivateKey, PublicKey
from facegate.mqtt.signing import JsonRejected, load_json_object

MAGIC: Final = b"facegate-bundle 1\n"
BUNDLE_TYP: Final = "facegate-bundle+jwt"
ENROLLMENT_NAME: Final = "enrollment.yaml"
MAX_MANIFEST_BYTES: Final = MIB
MAX_FILES: Final = 20_000
MAX_PHOTO_BYTES: Final = 25 * MIB  # the image parser's own limit
DEFAULT_MAX_BUNDLE_BYTES: Final = 256 * MIB
_PATH: Final = re.compile(r"photos/[a-z0-9_-]{1,64}/[A-Za-z0-9._-]{1,120}")
_SITE: Final = re.compile(r"[a-z0-9_-]{1,64}")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_COMPACT: Final = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")
_JWS: Final = PyJWS()


class BundleRejected(FacegateError):
    """A bundle that must not be applied; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class BundleFile:
    path: str  # enrollment.yaml or photos/<person>/<name>
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    site: str
    version: int
    created_at: float
    files: tuple[BundleFile, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "site": self.site,
            "version": self.version,
            "created_at": self.created_at,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: the manifest and each file's bytes; ``sha256`` of the whole."""

    manifest: Manifest
    contents: dict[str, bytes]
    sha256: str
    size: int

    @property
    def enrollment_text(self) -> str:
        return self.contents[ENROLLMENT_NAME].decode("utf-8")


def is_valid_site(site: str) -> bool:
    return _SITE.fullmatch(site) is not None


# -- building ----------------------------------------------------------------------------


def build_bundle(
    enrollment_path: Path, admin_key: PrivateKey, site: str, version: int | None = None
) -> bytes:
    """The signed bundle of `enrollment_path` and every photo it references.

    The bundled enrollment.yaml is the original with each person's `images` replaced by
    the bundled photo paths; everything else (doors, schedules, validity) is kept."""
    if admin_key.type is not KeyType.ED25519:
        raise BadInputError("--key", "the admin key must be Ed25519 (facegate keys new)")
    if not is_valid_site(site):
        raise BadInputError("--site", "a site id is [a-z0-9_-], 1..64 characters")
    enrollment = load_enrollment(enrollment_path)  # validates, and resolves the images
    raw = yaml.safe_load(enrollment_path.read_text(encoding="utf-8"))
    photos: dict[str, bytes] = {}
    for person in enrollment.enrollees:  # residents and blocked people alike
        section, index = enrollment.location(person)
        paths = []
        for number, image in enumerate(enrollment.images_for(person)):
            name = f"photos/{person.id}/{number:03d}-{_UNSAFE.sub('_', image.name)[-100:]}"
            field = f"{section}[{index}].images"
            photos[name] = read_regular_file(image, MAX_PHOTO_BYTES, field=field, what="photo")
            paths.append(name)
        raw[section][index]["images"] = paths
    text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode("utf-8")
    contents = {ENROLLMENT_NAME: text, **photos}
    manifest = Manifest(
        site=site,
        version=int(time.time()) if version is None else version,
        created_at=round(time.time(), 3),
        files=tuple(
            BundleFile(path, len(data), hashlib.sha256(data).hexdigest())
            for path, data in contents.items()
        ),
    )
    payload = json.dumps(manifest.to_json(), separators=(",", ":")).encode()
    headers = {"typ": BUNDLE_TYP, "kid": admin_key.public().kid}
    token = _JWS.encode(payload, admin_key.ed25519(), algorithm="EdDSA", headers=headers)
    return MAGIC + token.encode("ascii") + b"\n" + b"".join(contents.values())


# -- reading -----------------------------------------------------------------------------


def read_bundle(
    data: bytes, admin_key: PublicKey, site: str, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
) -> Bundle:
    """The verified bundle in `data` for `site`; BundleRejected for anything else."""
    if len(data) > max_bytes:
        raise BundleRejected("oversize", f"{len(data)} bytes > {max_bytes}")
    token, blob = _split(data)
    manifest = _manifest(_verified_payload(token, admin_key))
    if manifest.site != site:
        raise BundleRejected("other_site", f"for site {manifest.site!r}, this is {site!r}")
    contents = _contents(manifest, blob)
    return Bundle(manifest, contents, hashlib.sha256(data).hexdigest(), len(data))


def peek_manifest(data: bytes) -> Manifest:
    """The manifest WITHOUT checking the signature (publisher and status display only)."""
    token, _ = _split(data)
    try:
        payload = base64.urlsafe_b64decode(token.split(b".")[1] + b"===")
    except (binascii.Error, ValueError, IndexError):
        raise BundleRejected("malformed", "bad base64url") from None
    return _manifest(payload)


def _split(data: bytes) -> tuple[bytes, bytes]:
    if not data.startswith(MAGIC):
        raise BundleRejected("malformed", "not a facegate bundle")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_MANIFEST_BYTES + 1)
    if end < 0:
        raise BundleRejected("truncated", "no complete manifest line")
    token = data[len(MAGIC) : end]
    if _COMPACT.fullmatch(token) is None:
        raise BundleRejected("unsigned", "the manifest is not a signed JWS")
    return token, data[end + 1 :]


def _verified_payload(token: bytes, admin_key: PublicKey) -> bytes:
    header_segment = token.split(b".", 1)[0]
    signature = token.rsplit(b".", 1)[1]
    header = _json(_b64(header_segment), "malformed")
    if header.get("alg") != "EdDSA" or not signature:
        raise BundleRejected("unsigned", f"alg {str(header.get('alg'))[:20]!r}, need EdDSA")
    if header.get("typ") != BUNDLE_TYP or not header.keys() <= {"alg", "typ", "kid"}:
        raise BundleRejected("malformed", f"header must be typ {BUNDLE_TYP}")
    try:
        decoded = _JWS.decode_complete(token, admin_key.ed25519(), algorithms=["EdDSA"])
    except PyJWTError:
        raise BundleRejected("bad_signature", "not signed by this site's admin key") from None
    payload = decoded["payload"]
    assert isinstance(payload, bytes)
    return payload


def _manifest(payload: bytes) -> Manifest:
    body = _json(payload, "malformed")
    site, version, created_at, files = (
        body.get(k) for k in ("site", "version", "created_at", "files")
    )
    if not isinstance(site, str) or not is_valid_site(site):
        raise BundleRejected("malformed", "site")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise BundleRejected("malformed", "version must be a non-negative integer")
    if isinstance(created_at, bool) or not isinstance(created_at, int | float):
        raise BundleRejected("malformed", "created_at must be a number")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise BundleRejected("malformed", f"files must list 1..{MAX_FILES} files")
    entries = tuple(_file(entry, first=i == 0) for i, entry in enumerate(files))
    if len({e.path for e in entries}) != len(entries):
        raise BundleRejected("malformed", "a path is listed twice")
    return Manifest(site, version, float(created_at), entries)


def _file(entry: Any, *, first: bool) -> BundleFile:
    if not isinstance(entry, dict):
        raise BundleRejected("malformed", "a file entry is not an object")
    path, size, sha = entry.get("path"), entry.get("size"), entry.get("sha256")
    wanted = (path == ENROLLMENT_NAME) if first else (
        isinstance(path, str) and _PATH.fullmatch(path) is not None
        and ".." not in PurePosixPath(path).parts
    )  # fmt: skip
    if not wanted:
        raise BundleRejected("malformed", f"file path {str(path)[:80]!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_PHOTO_BYTES:
        raise BundleRejected("malformed", f"size of {path}")
    if not isinstance(sha, str) or _SHA256.fullmatch(sha) is None:
        raise BundleRejected("malformed", f"sha256 of {path}")
    assert isinstance(path, str)
    return BundleFile(path, size, sha)


def _contents(manifest: Manifest, blob: bytes) -> dict[str, bytes]:
    expected = sum(f.size for f in manifest.files)
    if len(blob) < expected:
        raise BundleRejected("truncated", f"{len(blob)} of {expected} file bytes")
    if len(blob) > expected:
        raise BundleRejected("tampered", f"{len(blob) - expected} bytes beyond the manifest")
    contents: dict[str, bytes] = {}
    offset = 0
    for entry in manifest.files:
        data = blob[offset : offset + entry.size]
        offset += entry.size
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BundleRejected("tampered", f"{entry.path} does not match its sha256")
        contents[entry.path] = data
    try:
        contents[ENROLLMENT_NAME].decode("utf-8")
    except UnicodeDecodeError:
        raise BundleRejected("malformed", "enrollment.yaml is not UTF-8") from None
    return contents


def _b64(segment: bytes) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise BundleRejected("malformed", "bad base64url") from None


def _json(data: bytes, reason: str) -> dict[str, object]:
    try:
        return load_json_object(data)
    except JsonRejected as exc:
        raise BundleRejected(reason, str(exc)) from None
