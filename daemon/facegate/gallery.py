"""The enrolled-people gallery on disk: one file, fully validated on load, written atomically.

The gallery is what the daemon matches against: per-embedding rows (the enrolled images) and
per-person rows (the mean template the matcher uses, plus a snapshot of the person's policy
from enrollment.yaml). See docs/gallery.md for the decisions and measured numbers.

File layout (schema 1), little-endian, one file so one rename replaces it atomically:

    offset 0   16 bytes  magic b"FACEGATE-GALLERY"
    16         u64       header length H
    24         u32       CRC-32 of the header
    28         4 bytes   zero
    32         H bytes   header, UTF-8 JSON: schema, fingerprint, created, enrollment_sha256,
                         schedules, quality_measure (optional), file_size,
                         arrays: [{name, dtype, shape, offset,
                         crc32: CRC-32 of each 16 MiB chunk}]
    ...                  each array raw in C order at a 64-byte aligned offset

The embedding size D is the width of the `embedding` array in the header (128 for FaceNet,
whatever the embedder model outputs otherwise); `template` must have the same width.

Not .npz: a zip member cannot be memory-mapped and np.load copies it through Python-level
chunks (0.23 to 0.46 s for the 256 MB of 100k people x 5, before any validation); this
layout is mapped in place and checked on all cores (docs/gallery.md has the numbers).
No dtype is ever `object`, so nothing is unpickled: a hostile file can only be refused.
"""

from __future__ import annotations

import json
import logging
import math
import mmap
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt

from facegate.errors import GalleryError
from facegate.matching import Matcher, build_templates
from facegate.storage import atomic_write
from facegate.vision.types import EMBEDDING_DIM, FloatArray

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
MAGIC: Final = b"FACEGATE-GALLERY"
_PREFIX: Final = struct.Struct("<16sQI4x")
_ALIGN: Final = 64
_MAX_HEADER_BYTES: Final = 16 << 20
#: Arrays are checksummed in chunks of this size, so the chunks can be checked in parallel.
_CRC_CHUNK: Final = 16 << 20
#: Stored embeddings are unit length to float32 precision; anything further is corruption.
UNIT_TOLERANCE: Final = 1e-3
FIX_COMMAND: Final = "run `facegate enroll` to rebuild it"

AnyArray = npt.NDArray[Any]

# name -> dtype (None: a string column, any width) and row kind: "row" per embedding,
# "person" per person. `embedding`/`template` are (n, D); `image_sha256` is (n, 32).
_COLUMNS: Final[dict[str, tuple[str | None, str]]] = {
    "embedding": ("<f4", "row"),
    "person": ("<i4", "row"),
    "image_sha256": ("|u1", "row"),
    "source": (None, "row"),
    "face_px": ("<f4", "row"),
    "sharpness": ("<f4", "row"),
    "yaw_deg": ("<f4", "row"),
    "embedded_at": ("<f8", "row"),
    "person_id": (None, "person"),
    "template": ("<f4", "person"),
    "name": (None, "person"),
    "doors": (None, "person"),
    "schedule": (None, "person"),
    "valid_from": (None, "person"),
    "valid_until": (None, "person"),
    "disabled": ("|b1", "person"),
}
#: Columns with a second dimension: None is the gallery's embedding size D.
_WIDE: Final[dict[str, int | None]] = {"embedding": None, "template": None, "image_sha256": 32}
_STRING_DTYPE: Final = re.compile(r"[<|][US]\d{1,5}")


@dataclass(frozen=True, slots=True)
class PersonPolicy:
    """A person's access policy as enrollment.yaml said at the last `facegate enroll`.

    `doors` ("*",) means every door; dates are ISO 8601 strings exactly as enrolled.
    """

    id: str
    name: str
    doors: tuple[str, ...]
    schedule: str | None = None
    valid_from: str | None = None
    valid_until: str | None = None
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class GalleryEntry:
    """One enrolled image: whose it is, where it came from, its quality and embedding."""

    person_id: str
    source: str
    image_sha256: str
    face_px: float
    sharpness: float
    yaw_deg: float
    embedded_at: float
    embedding: FloatArray


class Gallery:
    """An immutable, validated gallery; build it with `build` or `load`, write it with `save`."""

    def __init__(self, meta: Mapping[str, Any], arrays: Mapping[str, AnyArray]) -> None:
        """Wrap already-laid-out columns; raises GalleryError unless every invariant holds."""
        self._meta = dict(meta)
        self._arrays = dict(arrays)
        self._matcher: Matcher | None = None
        self._people: tuple[PersonPolicy, ...] | None = None
        self._index: dict[str, int] | None = None
        _check_meta(self._meta)
        _check_arrays(self._arrays)

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        *,
        fingerprint: str,
        people: Sequence[PersonPolicy],
        entries: Sequence[GalleryEntry],
        schedules: Mapping[str, Any] | None = None,
        enrollment_sha256: str = "",
        embedding_dim: int | None = None,
        quality_measure: str = "",
    ) -> Gallery:
        """A gallery from enrolled people and their images; every person needs >= 1 entry.

        `embedding_dim` is the embedder's output size (Embedder.dim): every entry must have
        it; None takes it from the entries (FaceNet's 128 for a gallery without any).
        `quality_measure` names how the entries' face_px and sharpness were measured, so
        that enrollment re-measures images stored under another measure.
        """
        ordered = sorted(people, key=lambda p: p.id)
        index = {p.id: i for i, p in enumerate(ordered)}
        if len(index) != len(ordered):
            raise ValueError("person ids must be unique")
        unknown = {e.person_id for e in entries} - index.keys()
        if unknown:
            raise ValueError(f"entries for people not in the gallery: {sorted(unknown)}")
        rows = sorted(entries, key=lambda e: index[e.person_id])
        arrays = {**_row_columns(rows, index, embedding_dim), **_person_columns(ordered)}
        if len(set(arrays["person"].tolist())) != len(ordered):
            raise ValueError("every person needs at least one embedding")
        identities, templates = build_templates(arrays["embedding"], [e.person_id for e in rows])
        if identities != [p.id for p in ordered]:
            raise ValueError("template order does not match person order")
        arrays["template"] = templates
        meta = {
            "schema": SCHEMA_VERSION,
            "fingerprint": fingerprint,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "enrollment_sha256": enrollment_sha256,
            "schedules": dict(schedules or {}),
            "quality_measure": quality_measure,
        }
        return cls(meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], expected_fingerprint: str | None) -> Gallery:
        """Read and validate a gallery; fail closed with a GalleryError naming the fix.

        `expected_fingerprint` None skips the model check (enroll reads any gallery to reuse
        what it can); the daemon always passes its engine's fingerprint (embedder, landmark
        model and alignment).
        """
        where = Path(path)
        buf = _map_file(where)
        try:
            meta, arrays = _parse(buf)
            if expected_fingerprint is not None:
                _check_fingerprint(meta, expected_fingerprint)
            gallery = cls(meta, {name: _detach(name, array) for name, array in arrays.items()})
        except GalleryError as exc:
            raise GalleryError(f"{where}: {exc}") from None
        logger.debug(
            "loaded gallery %s: %d people, %d embeddings",
            where,
            len(gallery),
            gallery.num_embeddings,
        )
        return gallery

    def save(self, path: str | os.PathLike[str], *, backup: bool = True) -> None:
        """Write atomically, mode 0600, keeping the previous file as `<name>.bak`."""
        header, layout = self._layout()

        def write(file: BinaryIO) -> None:
            file.write(_PREFIX.pack(MAGIC, len(header), zlib.crc32(header)))
            file.write(header)
            position = _PREFIX.size + len(header)
            for offset, array in layout:
                file.write(b"\0" * (offset - position))
                file.write(_as_bytes(array))
                position = offset + array.nbytes

        atomic_write(path, write, mode=0o600, backup=backup)
        logger.info(
            "wrote gallery %s (%d people, %d embeddings)", path, len(self), self.num_embeddings
        )

    def _layout(self) -> tuple[bytes, list[tuple[int, AnyArray]]]:
        """The header bytes and (offset, array) pairs; offsets depend on the header's length."""
        names = list(_COLUMNS)
        arrays = [np.ascontiguousarray(self._arrays[name]) for name in names]
        crcs = _chunk_crcs(dict(zip(names, arrays, strict=True)))
        descriptors: list[dict[str, Any]] = [
            {"name": n, "dtype": a.dtype.str, "shape": list(a.shape), "crc32": crcs[n]}
            for n, a in zip(names, arrays, strict=True)
        ]
        # Offsets are written into the header, which shifts them: iterate until it is stable.
        start = 0
        while True:
            offsets, offset = [], _align(start)
            for array in arrays:
                offsets.append(offset)
                offset = _align(offset + array.nbytes)
            for descriptor, at in zip(descriptors, offsets, strict=True):
                descriptor["offset"] = at
            end = offsets[-1] + arrays[-1].nbytes
            header = json.dumps(
                {**self._meta, "file_size": end, "arrays": descriptors}, sort_keys=True
            ).encode()
            if _align(_PREFIX.size + len(header)) <= start:
                return header, list(zip(offsets, arrays, strict=True))
            start = _align(_PREFIX.size + len(header))

    # --- reading -----------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return str(self._meta["fingerprint"])

    @property
    def created(self) -> str:
        return str(self._meta["created"])

    @property
    def enrollment_sha256(self) -> str:
        return str(self._meta["enrollment_sha256"])

    @property
    def quality_measure(self) -> str:
        """How the entries' sharpness was measured ("" in galleries older than the key)."""
        return str(self._meta.get("quality_measure", ""))

    @property
    def schedules(self) -> dict[str, Any]:
        """The `schedules:` section of enrollment.yaml at enroll time (JSON-shaped)."""
        return dict(self._meta["schedules"])

    @property
    def embedding_dim(self) -> int:
        """D, the length of every embedding and template (the embedder's output size)."""
        return int(self._arrays["embedding"].shape[1])

    @property
    def embeddings(self) -> FloatArray:
        """(N, D) unit embeddings, grouped by person (read-only)."""
        return self._readonly("embedding")

    @property
    def templates(self) -> FloatArray:
        """(K, D) unit mean templates, one per person in `person_ids` order (read-only)."""
        return self._readonly("template")

    @property
    def person_ids(self) -> tuple[str, ...]:
        return tuple(self._arrays["person_id"].tolist())

    @property
    def num_embeddings(self) -> int:
        return len(self._arrays["embedding"])

    def __len__(self) -> int:
        return len(self._arrays["person_id"])

    def matcher(self) -> Matcher:
        """The matcher over this gallery's per-person templates (built once)."""
        if self._matcher is None:
            self._matcher = Matcher(self.person_ids, self.templates)
        return self._matcher

    @property
    def people(self) -> tuple[PersonPolicy, ...]:
        """Every person's policy, in `person_ids` order (decoded on first use)."""
        if self._people is None:
            a = self._arrays
            self._people = tuple(
                PersonPolicy(
                    id=pid,
                    name=name,
                    doors=tuple(json.loads(doors)),
                    schedule=schedule or None,
                    valid_from=valid_from or None,
                    valid_until=valid_until or None,
                    disabled=disabled,
                )
                for pid, name, doors, schedule, valid_from, valid_until, disabled in zip(
                    *(a[n].tolist() for n in _PERSON_POLICY_COLUMNS), strict=True
                )
            )
        return self._people

    def person(self, person_id: str) -> PersonPolicy | None:
        """One person's policy, or None if they are not in the gallery."""
        if self._index is None:
            self._index = {pid: i for i, pid in enumerate(self.person_ids)}
        i = self._index.get(person_id)
        return None if i is None else self.people[i]

    def entries(self) -> Iterator[GalleryEntry]:
        """Every enrolled image, grouped by person (builds one object per row: not for 1e5)."""
        a = self._arrays
        ids = self.person_ids
        for i in range(self.num_embeddings):
            yield GalleryEntry(
                person_id=ids[int(a["person"][i])],
                source=bytes(a["source"][i]).decode("utf-8"),
                image_sha256=bytes(a["image_sha256"][i]).hex(),
                face_px=float(a["face_px"][i]),
                sharpness=float(a["sharpness"][i]),
                yaw_deg=float(a["yaw_deg"][i]),
                embedded_at=float(a["embedded_at"][i]),
                embedding=self.embeddings[i],
            )

    def same_content(self, other: Gallery) -> bool:
        """Equal in everything but the creation time: rewriting it would only rotate the
        backup away."""
        ignore = {"created"}
        mine = {k: v for k, v in self._meta.items() if k not in ignore}
        theirs = {k: v for k, v in other._meta.items() if k not in ignore}
        return mine == theirs and all(
            self._arrays[name].dtype == other._arrays[name].dtype
            and np.array_equal(self._arrays[name], other._arrays[name])
            for name in _COLUMNS
        )

    def _readonly(self, name: str) -> FloatArray:
        view: FloatArray = self._arrays[name].view()
        view.flags.writeable = False
        return view


_PERSON_POLICY_COLUMNS: Final = (
    "person_id",
    "name",
    "doors",
    "schedule",
    "valid_from",
    "valid_until",
    "disabled",
)


# --- building columns ------------------------------------------------------------------------


def _row_columns(
    rows: Sequence[GalleryEntry], index: Mapping[str, int], dim: int | None
) -> dict[str, AnyArray]:
    digests = b"".join(bytes.fromhex(e.image_sha256) for e in rows)
    return {
        "embedding": _embedding_matrix(rows, dim),
        "person": np.array([index[e.person_id] for e in rows], dtype=np.int32),
        "image_sha256": np.frombuffer(digests, dtype=np.uint8).reshape(len(rows), 32).copy(),
        "source": _bytes_column([e.source.encode("utf-8") for e in rows]),
        "face_px": np.array([e.face_px for e in rows], dtype=np.float32),
        "sharpness": np.array([e.sharpness for e in rows], dtype=np.float32),
        "yaw_deg": np.array([e.yaw_deg for e in rows], dtype=np.float32),
        "embedded_at": np.array([e.embedded_at for e in rows], dtype=np.float64),
    }


def _embedding_matrix(rows: Sequence[GalleryEntry], dim: int | None) -> FloatArray:
    """(N, D) float32 from the entries; D from `dim`, else the first entry, else FaceNet's."""
    if dim is None:
        dim = len(rows[0].embedding) if rows else EMBEDDING_DIM
    sizes = {np.shape(e.embedding) for e in rows} - {(dim,)}
    if sizes:
        raise ValueError(f"embeddings must all have shape ({dim},), found {sorted(sizes)}")
    return np.array([e.embedding for e in rows], dtype=np.float32).reshape(len(rows), dim)


def _person_columns(people: Sequence[PersonPolicy]) -> dict[str, AnyArray]:
    return {
        "person_id": _str_column([p.id for p in people]),
        "name": _str_column([p.name for p in people]),
        "doors": _str_column([json.dumps(list(p.doors)) for p in people]),
        "schedule": _str_column([p.schedule or "" for p in people]),
        "valid_from": _str_column([p.valid_from or "" for p in people]),
        "valid_until": _str_column([p.valid_until or "" for p in people]),
        "disabled": np.array([p.disabled for p in people], dtype=np.bool_),
    }


def _str_column(values: Sequence[str]) -> AnyArray:
    # An explicit width: numpy would pick "<U0" for an empty list, which fromfile rejects.
    width = max((len(v) for v in values), default=0) or 1
    return np.array(values, dtype=f"<U{width}")


def _bytes_column(values: Sequence[bytes]) -> AnyArray:
    width = max((len(v) for v in values), default=0) or 1
    return np.array(values, dtype=f"|S{width}")


# --- parsing and validation ------------------------------------------------------------------


def _map_file(path: Path) -> npt.NDArray[np.uint8]:
    """The whole file as a read-only memory map, prefaulted in one call (MAP_POPULATE).

    Copying 350 MB into the heap costs 0.25 to 1.5 s in page faults; a mapping of the page
    cache costs milliseconds. Safe because facegate only ever replaces the file by rename,
    which leaves a mapped inode untouched; `load` still copies what matching uses.
    """
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                return np.zeros(0, dtype=np.uint8)
            mapped = mmap.mmap(
                file.fileno(), 0, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ
            )
    except FileNotFoundError:
        raise GalleryError(f"{path}: no gallery here: run `facegate enroll` to create it") from None
    except OSError as exc:
        raise GalleryError(f"{path}: cannot read the gallery ({exc.strerror})") from None
    return np.frombuffer(mapped, dtype=np.uint8)


_POPULATE: Final = getattr(mmap, "MAP_POPULATE", 0)


def _parse(buf: npt.NDArray[np.uint8]) -> tuple[dict[str, Any], dict[str, AnyArray]]:
    if len(buf) < _PREFIX.size or bytes(buf[: len(MAGIC)]) != MAGIC:
        raise GalleryError(
            f"not a facegate gallery (empty, truncated or another file): {FIX_COMMAND}"
        )
    _, header_len, header_crc = _PREFIX.unpack(bytes(buf[: _PREFIX.size]))
    end = _PREFIX.size + header_len
    if header_len > _MAX_HEADER_BYTES or end > len(buf):
        raise GalleryError(f"the gallery is truncated: {FIX_COMMAND}")
    header_bytes = bytes(buf[_PREFIX.size : end])
    if zlib.crc32(header_bytes) != header_crc:
        raise GalleryError(f"the gallery header is corrupt (checksum mismatch): {FIX_COMMAND}")
    try:
        meta = json.loads(header_bytes)
        if not isinstance(meta, dict):
            raise TypeError("header is not an object")
        file_size = int(meta.pop("file_size"))
        descriptors = meta.pop("arrays")
    except (ValueError, TypeError, KeyError) as exc:
        raise GalleryError(f"the gallery header is invalid ({exc}): {FIX_COMMAND}") from None
    _check_schema(meta)
    if file_size != len(buf):
        raise GalleryError(
            f"the gallery is truncated or has trailing data ({len(buf)} bytes, "
            f"expected {file_size}): {FIX_COMMAND}"
        )
    return meta, _arrays_from(buf, descriptors)


def _arrays_from(buf: npt.NDArray[np.uint8], descriptors: Any) -> dict[str, AnyArray]:
    if not isinstance(descriptors, list):
        raise GalleryError(f"the gallery header has no array list: {FIX_COMMAND}")
    arrays: dict[str, AnyArray] = {}
    expected: dict[str, list[int]] = {}
    for descriptor in descriptors:
        try:
            name, array, crcs = _array_view(buf, descriptor)
        except (ValueError, TypeError, KeyError) as exc:
            raise GalleryError(
                f"the gallery has a bad array entry ({exc}): {FIX_COMMAND}"
            ) from None
        arrays[name], expected[name] = array, crcs
    actual = _chunk_crcs(arrays)
    for name in arrays:
        if actual[name] != expected[name]:
            raise GalleryError(
                f"the gallery's {name!r} data is corrupt (checksum mismatch): {FIX_COMMAND}"
            )
    return arrays


def _array_view(buf: npt.NDArray[np.uint8], descriptor: Any) -> tuple[str, AnyArray, list[int]]:
    name = str(descriptor["name"])
    dtype_str = str(descriptor["dtype"])
    expected, _ = _COLUMNS[name]
    if dtype_str != expected and not (expected is None and _STRING_DTYPE.fullmatch(dtype_str)):
        raise ValueError(f"{name}: dtype {dtype_str!r}")
    dtype = np.dtype(dtype_str)
    shape = tuple(int(n) for n in descriptor["shape"])
    offset = int(descriptor["offset"])
    nbytes = math.prod(shape) * dtype.itemsize
    if (
        offset < _PREFIX.size
        or offset % _ALIGN
        or offset + nbytes > len(buf)
        or min(shape, default=0) < 0
    ):
        raise ValueError(f"{name}: offset {offset} / shape {shape} outside the file")
    array = buf[offset : offset + nbytes].view(dtype).reshape(shape)
    return name, array, [int(crc) for crc in descriptor["crc32"]]


def _detach(name: str, array: AnyArray) -> AnyArray:
    """Per-person columns (templates, policy) move to the heap: matching then never reads
    the file again, even if someone truncates it in place. Per-image rows stay mapped."""
    return array.copy() if _COLUMNS.get(name, ("", "row"))[1] == "person" else array


def _check_schema(meta: Mapping[str, Any]) -> None:
    if meta.get("schema") != SCHEMA_VERSION:
        raise GalleryError(
            f"gallery schema {meta.get('schema')!r}, this facegate reads schema "
            f"{SCHEMA_VERSION}: {FIX_COMMAND}"
        )


def _check_meta(meta: Mapping[str, Any]) -> None:
    _check_schema(meta)
    fingerprint = meta.get("fingerprint")
    if not isinstance(fingerprint, str) or not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
        raise GalleryError(f"the gallery has no valid model fingerprint: {FIX_COMMAND}")
    if not isinstance(meta.get("schedules"), dict):
        raise GalleryError(f"the gallery's schedules are invalid: {FIX_COMMAND}")
    for key in ("created", "enrollment_sha256"):
        if not isinstance(meta.get(key), str):
            raise GalleryError(f"the gallery's {key!r} is invalid: {FIX_COMMAND}")


def _check_fingerprint(meta: Mapping[str, Any], expected: str) -> None:
    if meta.get("fingerprint") != expected:
        raise GalleryError(
            f"the gallery was built with another model (fingerprint "
            f"{str(meta.get('fingerprint'))[:12]}, this engine is {expected[:12]}): "
            f"{FIX_COMMAND}"
        )


def _check_arrays(arrays: Mapping[str, AnyArray]) -> None:
    """Every column present with the right kind and length; rows grouped by person; unit
    vectors. Costs two passes over the embeddings: the price of failing closed."""
    missing = set(_COLUMNS) - arrays.keys()
    extra = arrays.keys() - set(_COLUMNS)
    if missing or extra:
        raise GalleryError(
            f"the gallery's columns are wrong (missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}): {FIX_COMMAND}"
        )
    n_rows, n_people = len(arrays["embedding"]), len(arrays["person_id"])
    dim = _embedding_dim(arrays["embedding"])
    for name, (_, kind) in _COLUMNS.items():
        array = arrays[name]
        width = (_WIDE[name] or dim,) if name in _WIDE else ()
        shape = (n_rows if kind == "row" else n_people, *width)
        if array.shape != shape:
            raise GalleryError(
                f"the gallery's {name!r} has shape {array.shape}, not {shape}: {FIX_COMMAND}"
            )
    _check_grouping(arrays["person"], n_people)
    _check_unit(arrays["embedding"], "embeddings")
    _check_unit(arrays["template"], "templates")
    ids = arrays["person_id"]
    if not bool(np.all(ids[1:] > ids[:-1])):  # sorted and unique, in one vectorised pass
        raise GalleryError(f"the gallery's people are not unique and sorted: {FIX_COMMAND}")


def _embedding_dim(embeddings: AnyArray) -> int:
    """D from the embedding column's shape, which the header stores; (n, D) with D >= 1."""
    if embeddings.ndim != 2 or embeddings.shape[1] < 1:
        raise GalleryError(
            f"the gallery's 'embedding' has shape {embeddings.shape}, not (n, D): {FIX_COMMAND}"
        )
    return int(embeddings.shape[1])


def _check_grouping(person: AnyArray, n_people: int) -> None:
    """Rows are sorted by person and every person owns at least one row."""
    if n_people == 0 and len(person) == 0:
        return
    steps = np.diff(person)
    if (
        len(person) == 0
        or person[0] != 0
        or person[-1] != n_people - 1
        or bool(np.any((steps != 0) & (steps != 1)))
    ):
        raise GalleryError(f"the gallery's rows do not map onto its people: {FIX_COMMAND}")


def _check_unit(vectors: AnyArray, what: str) -> None:
    # NaN and inf propagate into the squared norm, so one test covers all three faults.
    norms = np.einsum("ij,ij->i", vectors, vectors)
    bad = ~(np.abs(norms - 1.0) <= 2 * UNIT_TOLERANCE)
    if bool(np.any(bad)):
        raise GalleryError(
            f"the gallery holds {int(np.count_nonzero(bad))} {what} that are not finite unit "
            f"vectors (first at row {int(np.argmax(bad))}): {FIX_COMMAND}"
        )


def _chunk_crcs(arrays: Mapping[str, AnyArray]) -> dict[str, list[int]]:
    """CRC-32 of every _CRC_CHUNK bytes of every array, on all cores: checksumming 350 MB is
    the largest cost of a load, and zlib releases the GIL."""
    chunks = [
        (name, flat[start : start + _CRC_CHUNK])
        for name, array in arrays.items()
        for flat in (_as_bytes(array),)
        for start in range(0, max(len(flat), 1), _CRC_CHUNK)
    ]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        values = pool.map(zlib.crc32, [chunk for _, chunk in chunks])
        result: dict[str, list[int]] = {name: [] for name in arrays}
        for (name, _), value in zip(chunks, values, strict=True):
            result[name].append(value)
    return result


def _as_bytes(array: AnyArray) -> memoryview:
    """A flat byte view: string dtypes do not export a buffer numpy can cast, so go via u8."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def _align(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN
