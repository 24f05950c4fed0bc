"""Bundles over MQTT: topics, whole or chunked messages, and reassembly on the device.

`<prefix>/site/<site>/enrollment` (retained, QoS 1) holds either the whole bundle (it
starts with the bundle magic) or, when the bundle is larger than the broker takes in one
message, a small JSON head ``{"chunked": 1, "sha256", "size", "chunks"}`` whose chunks
are retained on ``<prefix>/site/<site>/enrollment/<sha256[:16]>/<index>``. The head is
not trusted: the reassembled bytes are checked against its sha256 and then, as any
bundle, against the admin's signature.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Final

from facegate.fleet.bundle import MAGIC, BundleRejected
from facegate.mqtt.signing import JsonRejected, load_json_object

logger = logging.getLogger(__name__)

MAX_CHUNKS: Final = 100_000
CHUNK_KEY_CHARS: Final = 16


def bundle_topic(prefix: str, site: str) -> str:
    return f"{prefix}/site/{site}/enrollment"


def chunk_topic(prefix: str, site: str, sha256: str, index: int) -> str:
    return f"{bundle_topic(prefix, site)}/{sha256[:CHUNK_KEY_CHARS]}/{index}"


def ack_topic(prefix: str, site: str, device: str) -> str:
    return f"{prefix}/site/{site}/{device}/enrollment/ack"


def split_bundle(data: bytes, max_message_bytes: int) -> tuple[bytes, list[bytes]]:
    """(the message for the bundle topic, its chunks): whole when it fits, else a head."""
    if len(data) <= max_message_bytes:
        return data, []
    size = max(1, max_message_bytes)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    head = {
        "chunked": 1,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "chunks": len(chunks),
    }
    return json.dumps(head).encode(), chunks


@dataclass(frozen=True)
class Head:
    sha256: str
    size: int
    chunks: int


class Reassembler:
    """Collects the retained head and chunks (in any order) into one bundle; bounded."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._head: Head | None = None
        self._chunks: dict[str, dict[int, bytes]] = {}  # sha256[:16] -> index -> bytes
        self._buffered = 0

    def head(self, payload: bytes) -> bytes | None:
        """The bundle topic's message: a whole bundle (returned), a head, or refused."""
        if payload.startswith(MAGIC) or not payload.startswith(b"{"):
            self._head = None
            return payload  # read_bundle judges it (a stray text is refused there)
        head = _parse_head(payload)
        if head.size > self._max_bytes:
            raise BundleRejected("oversize", f"{head.size} bytes > {self._max_bytes}")
        self._head = head
        # Chunks of any other bundle are stale now.
        key = head.sha256[:CHUNK_KEY_CHARS]
        self._chunks = {key: self._chunks.get(key, {})}
        self._buffered = sum(len(c) for c in self._chunks[key].values())
        return self._complete()

    def chunk(self, key: str, index: int, payload: bytes) -> bytes | None:
        head = self._head
        if head is not None and key != head.sha256[:CHUNK_KEY_CHARS]:
            return None  # an old bundle's chunk (cleared by the next publish)
        if head is not None and not 0 <= index < head.chunks:
            raise BundleRejected("tampered", f"chunk {index} of {head.chunks}")
        if self._buffered + len(payload) > self._max_bytes:
            self._chunks.clear()  # chunks before their head, beyond any bundle we take
            self._buffered = 0
            raise BundleRejected("oversize", "chunks beyond fleet.max_bundle_bytes")
        previous = self._chunks.setdefault(key, {}).get(index)
        self._buffered += len(payload) - (len(previous) if previous else 0)
        self._chunks[key][index] = payload
        return self._complete()

    def _complete(self) -> bytes | None:
        head = self._head
        if head is None:
            return None
        parts = self._chunks.get(head.sha256[:CHUNK_KEY_CHARS], {})
        if len(parts) < head.chunks:
            return None
        data = b"".join(parts[i] for i in range(head.chunks))
        self._chunks.clear()
        self._buffered = 0
        self._head = None
        if len(data) < head.size:
            raise BundleRejected("truncated", f"{len(data)} of {head.size} bytes in the chunks")
        if len(data) != head.size or hashlib.sha256(data).hexdigest() != head.sha256:
            raise BundleRejected("tampered", "the chunks do not match their head")
        return data


def _parse_head(payload: bytes) -> Head:
    try:
        body = load_json_object(payload)
    except JsonRejected as exc:
        raise BundleRejected("malformed", f"bundle head: {exc}") from None
    sha, size, chunks = body.get("sha256"), body.get("size"), body.get("chunks")
    if body.get("chunked") != 1 or not isinstance(sha, str) or len(sha) != 64:
        raise BundleRejected("malformed", "bundle head")
    for value in (size, chunks):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BundleRejected("malformed", "bundle head sizes")
    assert isinstance(size, int) and isinstance(chunks, int)
    if chunks > MAX_CHUNKS:
        raise BundleRejected("oversize", f"{chunks} chunks")
    return Head(sha, size, chunks)
