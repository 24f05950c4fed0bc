"""Hide credentials inside URLs before text reaches a log line or an error message.

Camera URLs carry passwords in two places: the userinfo (`rtsp://admin:secret@cam/`) and
query or fragment parameters (`rtsp://cam/stream?user=admin&pwd=secret`). `redact_url`
masks both wherever a URL appears in a text, and leaves user names, hosts, paths and other
parameters readable, because those are what an operator needs to debug a camera.
"""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import unquote

MASK: Final = "***"

#: Parameter names are split into words (at "_", "-", ".", camelCase ...): a name holding
#: one of these words names a secret: api_key, X-Amz-Signature, client_secret, authToken.
SECRET_WORDS: Final = frozenset(
    {
        "pwd",
        "pass",
        "passwd",
        "password",
        "passphrase",
        "token",
        "key",
        "apikey",
        "secret",
        "auth",
        "sig",
        "signature",
        "credential",
        "credentials",
    }
)
#: ... and so does a name run together in lower case that ends in one of these
#: (accesstoken, clientsecret). Short words (key, pwd, sig) would match too much here.
SECRET_ENDINGS: Final = ("token", "passwd", "password", "secret", "signature", "credentials")

# A URL runs from its scheme to the next whitespace.
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
# Punctuation that closes a URL in prose or in a repr(): `'rtsp://...'`, `(see http://x).`
_CLOSING: Final = "'\"()<>[],;:.!"
# A `name=value` parameter after "?", "#", "&" or ";"; the value runs to the next of these.
_PARAM: Final = re.compile(r"(?<=[?#&;])([^?#&;=]+)=([^#&;]*)")
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD: Final = re.compile(r"[^a-z0-9]+")


def redact_url(text: str) -> str:
    """`text` with every URL's password and secret-looking parameter values masked."""
    return _URL.sub(lambda match: _redact_one(match.group()), text)


def _redact_one(url: str) -> str:
    body = url.rstrip(_CLOSING)
    scheme, separator, rest = body.partition("://")
    end = _authority_end(rest)
    authority, tail = rest[:end], rest[end:]
    return scheme + separator + _hide_password(authority) + _hide_params(tail) + url[len(body) :]


def _authority_end(rest: str) -> int:
    """Where the authority (userinfo@host:port) ends in `rest`, the URL after "://"."""
    end = _first_of(rest, "/?#")
    authority = rest[:end]
    if "@" not in authority and _has_non_port_colon(authority) and "@" in rest[end:]:
        # A raw "/", "?" or "#" in a password (it should be %-encoded) ends the authority
        # early, and the password then runs on to an "@": mask up to the last one rather
        # than leak it.
        last_at = rest.rindex("@")
        return last_at + _first_of(rest[last_at:], "/?#")
    return end


def _has_non_port_colon(authority: str) -> bool:
    _, colon, after = authority.partition(":")
    return bool(colon) and not authority.startswith("[") and not after.isdigit()


def _hide_password(authority: str) -> str:
    # The host follows the LAST "@": a raw "@" inside a password belongs to the userinfo,
    # as FFmpeg, which opens the camera, reads it.
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return authority
    user, colon, _password = userinfo.partition(":")  # a user name holds no raw ":"
    return user + (colon + MASK if colon else "") + at + host


def _hide_params(tail: str) -> str:
    start = _first_of(tail, "?#")  # the path before it is left alone
    return tail[:start] + _PARAM.sub(_mask_if_secret, tail[start:])


def _mask_if_secret(param: re.Match[str]) -> str:
    name, value = param.group(1), param.group(2)
    if value and is_secret_name(unquote(name)):
        return f"{name}={MASK}"
    return param.group()


def is_secret_name(name: str) -> bool:
    """Whether a parameter called `name` holds a secret (pwd, api_key, X-Amz-Signature ...)."""
    lowered = _CAMEL.sub("_", name).lower()
    if any(word in SECRET_WORDS for word in _NON_WORD.split(lowered)):
        return True
    return _NON_WORD.sub("", lowered).endswith(SECRET_ENDINGS)


def _first_of(text: str, characters: str) -> int:
    """Index of the first of `characters` in `text`, or len(text)."""
    return min((i for i in map(text.find, characters) if i >= 0), default=len(text))


class RedactingFilter(logging.Filter):
    """A logger filter that passes every record through `redact_url`, traceback included.

    For loggers that print text facegate did not write: a third-party exception's message
    can quote the URL it failed on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Handlers' formatters reuse exc_text as it is: format the traceback once, masked.
            record.exc_text = redact_url(_FORMATTER.formatException(record.exc_info))
        return True


_FORMATTER: Final = logging.Formatter()
