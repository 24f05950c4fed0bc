"""Key files: Ed25519 key pairs (PEM) and HS256 secrets (hex), loaded, checked and made.

Formats are the ones every tool reads: an Ed25519 private key is PKCS#8 PEM (what
``openssl genpkey -algorithm ed25519`` writes), its public key SubjectPublicKeyInfo PEM
(``openssl pkey -pubout``), both loaded as they are by node's ``crypto.createPublicKey``
and ``openssl pkeyutl``. An HS256 secret is hex text, as the HMAC keys always were.

Every loader raises only BadInputError naming the file and the config field, and says
what is wrong in terms of what the user holds: "this is a public key, the daemon needs
the private one" rather than a parser's message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facegate.errors import BadInputError
from facegate.files import KIB, read_regular_text

logger = logging.getLogger(__name__)

#: RFC 7518 section 3.2: an HS256 key is at least as long as the hash (256 bits).
MIN_SECRET_BYTES: Final = 32
KEY_FILE_MAX_BYTES: Final = 4 * KIB
_PEM_PRIVATE: Final = "-----BEGIN PRIVATE KEY-----"
_PEM_ENCRYPTED: Final = "-----BEGIN ENCRYPTED PRIVATE KEY-----"
_PEM_PUBLIC: Final = "-----BEGIN PUBLIC KEY-----"


class KeyType(StrEnum):
    """The kinds of key facegate signs with (config value and `facegate keys new --type`)."""

    ED25519 = "ed25519"
    HS256 = "hs256"


@dataclass(frozen=True)
class PrivateKey:
    """A key that signs: the raw 32 Ed25519 private bytes or the HS256 secret.

    Compared by value (a reload compares the keys it would load with the running ones);
    never printed (the repr hides the bytes)."""

    type: KeyType
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.type is KeyType.ED25519 and len(self.secret) != 32:
            raise ValueError("an Ed25519 private key has 32 bytes")
        if self.type is KeyType.HS256 and len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"an HS256 secret needs at least {MIN_SECRET_BYTES} bytes")

    @classmethod
    def generate(cls, key_type: KeyType) -> PrivateKey:
        if key_type is KeyType.HS256:
            return cls(key_type, secrets.token_bytes(MIN_SECRET_BYTES))
        raw = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(key_type, raw)

    def ed25519(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.secret)

    def public(self) -> PublicKey:
        """What a verifier holds: the Ed25519 public key, or (HS256) the secret itself."""
        if self.type is KeyType.HS256:
            return PublicKey(self.type, self.secret)
        return PublicKey(self.type, self.ed25519().public_key().public_bytes_raw())

    def to_file_text(self) -> str:
        """PKCS#8 PEM (Ed25519) or hex (HS256)."""
        if self.type is KeyType.HS256:
            return self.secret.hex() + "\n"
        pem = self.ed25519().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem.decode("ascii")


@dataclass(frozen=True)
class PublicKey:
    """A key that verifies: 32 raw Ed25519 public bytes, or the HS256 secret."""

    type: KeyType
    material: bytes = field(repr=False)

    def ed25519(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.material)

    @property
    def kid(self) -> str | None:
        """RFC 7638 JWK thumbprint of an Ed25519 key (None for a secret: it stays unnamed)."""
        if self.type is KeyType.HS256:
            return None
        x = _b64url(self.material)
        # Members in lexicographic order, no whitespace: the RFC's required form.
        jwk = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
        return _b64url(hashlib.sha256(jwk.encode()).digest())

    def to_file_text(self) -> str:
        """SubjectPublicKeyInfo PEM (Ed25519) or hex (HS256)."""
        if self.type is KeyType.HS256:
            return self.material.hex() + "\n"
        pem = self.ed25519().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- loading -----------------------------------------------------------------------------


def load_private_key(path: Path, key_type: KeyType, field: str | None = None) -> PrivateKey:
    """The signing key in `path`; BadInputError naming file and field if it cannot sign."""
    text = _read_key_text(path, field, "signing key file")
    if key_type is KeyType.HS256:
        key = PrivateKey(key_type, _secret(path, text, field))
    else:
        key = PrivateKey(key_type, _ed25519_private(path, text, field))
    _warn_if_readable_by_others(path)
    return key


def load_public_key(
    path: Path, key_type: KeyType | None = None, field: str | None = None
) -> PublicKey:
    """What a controller verifies with: an Ed25519 public key PEM or an HS256 hex secret.

    `key_type` None: decided by the file (PEM: Ed25519, hex: HS256). A private Ed25519
    key is refused: a controller that holds it could forge unlocks."""
    text = _read_key_text(path, field)
    looks_pem = text.lstrip().startswith("-----BEGIN")
    if key_type is KeyType.HS256 or (key_type is None and not looks_pem):
        if looks_pem:
            raise BadInputError(path, "is a PEM key; HS256 needs a hex secret", field=field)
        return PublicKey(KeyType.HS256, _secret(path, text, field))
    if _PEM_PRIVATE in text or _PEM_ENCRYPTED in text:
        raise BadInputError(
            path,
            "is a private key: a controller holds only the public key (the .pub file written"
            " by `facegate keys new`, or `openssl pkey -in KEY -pubout`)",
            field=field,
        )
    if not looks_pem:
        raise BadInputError(path, "is not a PEM public key (Ed25519)", field=field)
    return PublicKey(KeyType.ED25519, _ed25519_public(path, text, field))


def _read_key_text(path: Path, field: str | None, what: str = "key file") -> str:
    # A key is a few hundred bytes: a FIFO, /dev/zero or a huge file is refused unread.
    return read_regular_text(path, KEY_FILE_MAX_BYTES, field=field, what=what, encoding="ascii")


def _secret(path: Path, text: str, field: str | None) -> bytes:
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        raise BadInputError(
            path, "is a PEM key, not an HS256 hex secret (algorithm ed25519?)", field=field
        )
    try:
        secret = bytes.fromhex(stripped)
    except ValueError:
        # Never echo the content: it is (almost) a secret.
        raise BadInputError(path, "HS256 secret is not hex", field=field) from None
    if len(secret) < MIN_SECRET_BYTES:
        message = f"HS256 secret has {len(secret)} bytes, need at least {MIN_SECRET_BYTES}"
        raise BadInputError(path, message, field=field)
    return secret


def _ed25519_private(path: Path, text: str, field: str | None) -> bytes:
    if _PEM_PUBLIC in text:
        raise BadInputError(
            path,
            "is a public key; signing needs the private key (the file without .pub)",
            field=field,
        )
    if _PEM_ENCRYPTED in text:
        raise BadInputError(path, "private key is encrypted; give an unencrypted key", field=field)
    if _PEM_PRIVATE not in text:
        hint = " (an HS256 hex secret? set algorithm hs256)" if _is_hex(text) else ""
        raise BadInputError(path, f"is not a PEM private key (Ed25519){hint}", field=field)
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BadInputError(path, "is not a readable PEM private key", field=field) from None
    if not isinstance(key, Ed25519PrivateKey):
        name = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        raise BadInputError(path, f"is not an Ed25519 key ({name})", field=field)
    return key.private_bytes_raw()


def _ed25519_public(path: Path, text: str, field: str | None) -> bytes:
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BadInputError(path, "is not a readable PEM public key", field=field) from None
    if not isinstance(key, Ed25519PublicKey):
        name = type(key).__name__.removeprefix("_").replace("PublicKey", "")
        raise BadInputError(path, f"is not an Ed25519 key ({name})", field=field)
    return key.public_bytes_raw()


def _is_hex(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and all(c in "0123456789abcdefABCDEF" for c in stripped)


def _warn_if_readable_by_others(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        logger.warning("key file %s has mode %o; chmod 600 it", path, mode)


# -- writing -----------------------------------------------------------------------------


def public_key_path(private_path: Path) -> Path:
    """Where the public half goes: front.key -> front.pub, anything else -> NAME.pub."""
    if private_path.suffix == ".key":
        return private_path.with_suffix(".pub")
    return private_path.with_name(private_path.name + ".pub")


def write_new_key(key_type: KeyType, out: Path) -> tuple[PrivateKey, list[Path]]:
    """Make a key and write it (0600, never over an existing file); Ed25519 also writes
    the public key beside it (0644). Returns the key and the files written."""
    key = PrivateKey.generate(key_type)
    written = [out]
    pub_path = public_key_path(out) if key_type is KeyType.ED25519 else None
    if pub_path is not None and pub_path.exists():
        raise BadInputError(pub_path, "already exists; not overwriting a key")
    _write_exclusive(out, key.to_file_text(), 0o600)
    if pub_path is not None:
        _write_exclusive(pub_path, key.public().to_file_text(), 0o644)
        written.append(pub_path)
    return key, written


def _write_exclusive(path: Path, text: str, mode: int) -> None:
    """Create `path` with `mode` from the start (no moment of a readable secret), fsynced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise BadInputError(path, "already exists; not overwriting a key") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot create key file: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away from a public key
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
