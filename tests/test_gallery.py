"""The gallery file: round trip, fail-closed loading, atomic replacement under SIGKILL."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import astuple, replace
from pathlib import Path

import numpy as np
import pytest

from facegate.errors import GalleryError
from facegate.gallery import Gallery, GalleryEntry, PersonPolicy
from facegate.storage import atomic_write, atomic_write_bytes, backup_path
from facegate.vision.types import l2_normalize

FP_A = "a" * 64
FP_B = "b" * 64
FIX = "facegate enroll"


def make_gallery(
    n_people: int = 3, per_person: int = 3, seed: int = 0, fingerprint: str = FP_A
) -> Gallery:
    """People whose embeddings scatter around one random centre each."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.normal(size=(n_people, 128)).astype(np.float32))
    people = [
        PersonPolicy(f"p{i:05d}", f"Person {i}", ("front",) if i % 2 else ("*",))
        for i in range(n_people)
    ]
    entries = [
        GalleryEntry(
            person_id=people[i].id,
            source=f"img/{people[i].id}/{j}.jpg",
            image_sha256=hashlib.sha256(f"{seed}/{i}/{j}".encode()).hexdigest(),
            face_px=100.0 + j,
            sharpness=50.0,
            yaw_deg=5.0,
            embedded_at=1.7e9 + j,
            embedding=l2_normalize((centres[i] + 0.2 * rng.normal(size=128)).astype(np.float32)),
        )
        for i in range(n_people)
        for j in range(per_person)
    ]
    return Gallery.build(fingerprint=fingerprint, people=people, entries=entries)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "gallery.fgg"
    make_gallery().save(path)
    return path


def assert_refused(path: Path, *, fingerprint: str = FP_A, match: str = "") -> GalleryError:
    with pytest.raises(GalleryError) as info:
        Gallery.load(path, fingerprint)
    message = str(info.value)
    assert FIX in message and str(path) in message, message
    assert match in message, message
    return info.value


# --- round trip ------------------------------------------------------------------------------


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    original = Gallery.build(
        fingerprint=FP_A,
        people=[
            PersonPolicy("zoe", "Zoë Ünicode", ("front", "garage"), "office", None, None, True),
            PersonPolicy("adam", "Adam", ("*",), None, "2024-01-01T00:00:00+01:00", None, False),
        ],
        entries=[
            GalleryEntry("zoe", "imgs/zoë.jpg", "1" * 64, 80.5, 33.0, 4.0, 1.5e9, _unit(1)),
            GalleryEntry("adam", "a.png", "2" * 64, 120.0, 90.0, 12.5, 1.6e9, _unit(2)),
            GalleryEntry("zoe", "imgs/2.jpg", "3" * 64, 81.0, 34.0, 0.0, 1.5e9, _unit(3)),
        ],
        schedules={"office": {"timezone": "Europe/Berlin", "windows": []}},
        enrollment_sha256="4" * 64,
    )
    path = tmp_path / "g.fgg"
    original.save(path)
    loaded = Gallery.load(path, FP_A)

    assert loaded.person_ids == ("adam", "zoe")  # sorted: rows are grouped by person
    assert loaded.people == original.people
    assert loaded.person("zoe") == PersonPolicy(
        "zoe", "Zoë Ünicode", ("front", "garage"), "office", None, None, True
    )
    assert loaded.person("nobody") is None
    assert [_row(e) for e in loaded.entries()] == [_row(e) for e in original.entries()]
    assert [e.source for e in loaded.entries()] == ["a.png", "imgs/zoë.jpg", "imgs/2.jpg"]
    np.testing.assert_array_equal(loaded.embeddings, original.embeddings)
    np.testing.assert_array_equal(loaded.templates, original.templates)
    assert loaded.schedules == original.schedules
    assert (loaded.fingerprint, loaded.enrollment_sha256) == (FP_A, "4" * 64)
    assert loaded.created == original.created
    assert not loaded.embeddings.flags.writeable


def test_matcher_identifies_by_mean_template(saved: Path) -> None:
    gallery = Gallery.load(saved, FP_A)
    matcher = gallery.matcher()
    for i, person in enumerate(gallery.person_ids):
        probe = gallery.templates[i]
        assert matcher.identify(probe, threshold=0.5).identity == person
        assert matcher.verify(probe, person, threshold=0.5).accepted
    assert gallery.matcher() is matcher


def test_same_content_ignores_only_the_creation_time(saved: Path) -> None:
    loaded = Gallery.load(saved, FP_A)
    rebuilt = Gallery.build(fingerprint=FP_A, people=loaded.people, entries=list(loaded.entries()))
    assert rebuilt.same_content(loaded)
    assert not make_gallery(seed=5).same_content(loaded)
    renamed = [
        replace(p, name="Someone else") if i == 0 else p for i, p in enumerate(loaded.people)
    ]
    assert not Gallery.build(
        fingerprint=FP_A, people=renamed, entries=list(loaded.entries())
    ).same_content(loaded)


def test_empty_gallery_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "g.fgg"
    Gallery.build(fingerprint=FP_A, people=[], entries=[]).save(path)
    gallery = Gallery.load(path, FP_A)
    assert len(gallery) == 0 and gallery.num_embeddings == 0
    assert not gallery.matcher().identify(_unit(0), 0.9).accepted


def test_build_refuses_inconsistent_input() -> None:
    person = PersonPolicy("a", "A", ("*",))
    entry = GalleryEntry("a", "a.jpg", "0" * 64, 1.0, 1.0, 0.0, 0.0, _unit(0))
    with pytest.raises(ValueError, match="unique"):
        Gallery.build(fingerprint=FP_A, people=[person, person], entries=[entry])
    with pytest.raises(ValueError, match="not in the gallery"):
        Gallery.build(fingerprint=FP_A, people=[], entries=[entry])
    with pytest.raises(ValueError, match="at least one"):
        Gallery.build(fingerprint=FP_A, people=[person], entries=[])
    with pytest.raises(GalleryError, match="not finite unit"):
        bad = GalleryEntry("a", "a.jpg", "0" * 64, 1.0, 1.0, 0.0, 0.0, 2 * _unit(0))
        Gallery.build(fingerprint=FP_A, people=[person], entries=[bad])


# --- fail closed -----------------------------------------------------------------------------


def test_another_model_is_refused(saved: Path) -> None:
    error = assert_refused(saved, fingerprint=FP_B, match="built with another model")
    assert "run `facegate enroll` to rebuild it" in str(error)


def test_missing_gallery_names_the_fix(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nope.fgg", match="no gallery")


@pytest.mark.parametrize("keep", [0, 5, 16, 31, 40, 200, -4000, -1])
def test_truncated_file_is_refused(saved: Path, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    assert_refused(saved)


def test_trailing_garbage_is_refused(saved: Path) -> None:
    saved.write_bytes(saved.read_bytes() + b"\0")
    assert_refused(saved, match="trailing")


@pytest.mark.parametrize("where", [0, 20, 100, 0.5, 0.9, -1])
def test_flipped_byte_is_refused(saved: Path, where: float) -> None:
    """Any flipped byte: magic, header length or CRC, header, embeddings, person table."""
    data = bytearray(saved.read_bytes())
    at = int(where * len(data)) if isinstance(where, float) else where
    data[at] ^= 0x40
    saved.write_bytes(bytes(data))
    assert_refused(saved)


def test_sign_flip_in_embeddings_is_refused(saved: Path) -> None:
    """A flipped sign bit keeps the vector unit length: only the checksum catches it."""
    gallery = Gallery.load(saved, FP_A)
    data = bytearray(saved.read_bytes())
    needle = gallery.embeddings[1].tobytes()
    at = bytes(data).index(needle) + 3  # the high byte of the first float32
    data[at] ^= 0x80
    saved.write_bytes(bytes(data))
    assert_refused(saved, match="'embedding' data is corrupt")


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage" * 100, b"\xff\xd8\xff\xe0" + os.urandom(5000), b"PK\x03\x04" + b"\0" * 64],
    ids=["empty", "text", "jpeg-ish", "zip-ish"],
)
def test_garbage_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "g.fgg"
    path.write_bytes(content)
    assert_refused(path, match="not a facegate gallery")


def test_npz_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "g.fgg"
    with path.open("wb") as file:
        np.savez(file, embeddings=np.zeros((2, 128), np.float32))
    assert_refused(path, match="not a facegate gallery")


def _tampered(mutate: Callable[[Gallery], None], tmp_path: Path) -> Path:
    """A gallery file with valid checksums but bad content, as a buggy writer could make."""
    gallery = make_gallery()
    mutate(gallery)
    path = tmp_path / "g.fgg"
    gallery.save(path)
    return path


@pytest.mark.parametrize(
    ("name", "mutate", "match"),
    [
        ("nan", lambda g: g._arrays["embedding"].__setitem__((1, 5), np.nan), "not finite unit"),
        ("inf", lambda g: g._arrays["template"].__setitem__((0, 0), np.inf), "not finite unit"),
        ("scaled", lambda g: g._arrays["embedding"].__imul__(1.5), "not finite unit"),
        ("zero", lambda g: g._arrays["embedding"].__setitem__(0, 0.0), "not finite unit"),
        ("schema", lambda g: g._meta.__setitem__("schema", 2), "schema 2"),
        ("person", lambda g: g._arrays["person"].__setitem__(0, 7), "do not map"),
        (
            "duplicate-id",
            lambda g: g._arrays["person_id"].__setitem__(1, g._arrays["person_id"][0]),
            "not unique",
        ),
        ("fingerprint", lambda g: g._meta.__setitem__("fingerprint", "xyz"), "fingerprint"),
    ],
)
def test_invalid_content_is_refused(
    tmp_path: Path, name: str, mutate: Callable[[Gallery], None], match: str
) -> None:
    path = _tampered(mutate, tmp_path)
    expected = None if name == "fingerprint" else FP_A
    with pytest.raises(GalleryError, match=match) as info:
        Gallery.load(path, expected)
    assert FIX in str(info.value)


def test_columns_must_match_the_schema() -> None:
    gallery = make_gallery()
    with pytest.raises(GalleryError, match="columns are wrong"):
        Gallery(gallery._meta, {**gallery._arrays, "evil": np.zeros(3)})


# --- embedding size ------------------------------------------------------------------------


def _resized(gallery: Gallery, dim: int) -> Gallery:
    """The gallery as an embedder with `dim` outputs would make it: vectors cut or zero-padded
    to `dim` and made unit again."""
    arrays = dict(gallery._arrays)
    for name in ("embedding", "template"):
        vectors = arrays[name][:, :dim]
        vectors = np.pad(vectors, ((0, 0), (0, dim - vectors.shape[1])))
        arrays[name] = l2_normalize(np.ascontiguousarray(vectors, dtype=np.float32))
    return Gallery(gallery._meta, arrays)


def test_a_facenet_gallery_is_128_wide(saved: Path) -> None:
    """Every gallery written so far holds 128-D FaceNet vectors; the size comes from its
    header, whose layout did not change, so they all load as before."""
    assert Gallery.load(saved, FP_A).embedding_dim == 128


@pytest.mark.parametrize("dim", [64, 512])
def test_embedding_size_is_read_from_the_file(tmp_path: Path, dim: int) -> None:
    """Another embedder's vector size round trips: nothing assumes FaceNet's 128."""
    path = tmp_path / "g.fgg"
    _resized(make_gallery(), dim).save(path)
    loaded = Gallery.load(path, FP_A)
    assert loaded.embedding_dim == dim
    assert loaded.embeddings.shape == (9, dim) and loaded.templates.shape == (3, dim)
    assert len(list(loaded.entries())[0].embedding) == dim


def test_templates_must_be_as_wide_as_the_embeddings() -> None:
    gallery = make_gallery()
    narrow = {**gallery._arrays, "template": _resized(gallery, 64)._arrays["template"]}
    with pytest.raises(GalleryError, match=r"'template' has shape \(3, 64\), not \(3, 128\)"):
        Gallery(gallery._meta, narrow)
    with pytest.raises(GalleryError, match=r"'embedding' has shape \(9,\), not \(n, D\)"):
        Gallery(gallery._meta, {**gallery._arrays, "embedding": np.zeros(9, np.float32)})


def test_build_refuses_embeddings_of_another_size() -> None:
    person = PersonPolicy("a", "A", ("*",))
    entries = [
        GalleryEntry("a", "a.jpg", "0" * 64, 1.0, 1.0, 0.0, 0.0, _unit(0)),
        GalleryEntry("a", "b.jpg", "1" * 64, 1.0, 1.0, 0.0, 0.0, _unit(1)[:64]),
    ]
    with pytest.raises(ValueError, match=r"must all have shape \(128,\), found \[\(64,\)\]"):
        Gallery.build(fingerprint=FP_A, people=[person], entries=entries)
    with pytest.raises(ValueError, match=r"must all have shape \(512,\)"):
        Gallery.build(fingerprint=FP_A, people=[person], entries=entries[:1], embedding_dim=512)


# --- writing ---------------------------------------------------------------------------------


def test_save_is_0600_and_keeps_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "g.fgg"
    make_gallery(seed=1).save(path)
    assert not backup_path(path).exists()
    first = path.read_bytes()
    make_gallery(seed=2).save(path)
    assert backup_path(path).read_bytes() == first
    assert Gallery.load(backup_path(path), FP_A).embeddings.shape == (9, 128)
    for p in (path, backup_path(path)):
        assert p.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".g.fgg.lock", "g.fgg", "g.fgg.bak"]


def test_atomic_write_failure_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    atomic_write_bytes(path, b"old")

    def explode(file: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, explode, backup=True)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".f.lock", "f"]


def test_leftovers_of_a_killed_writer_are_removed_and_only_those(tmp_path: Path) -> None:
    leftovers = [".g.fgg.ab_cd123.tmp", ".g.fgg.bak.x1y2z3w4.tmp"]
    others = [".g.fgg.x.abcdefgh.tmp", ".other.abcdefgh.tmp", "g.fgg.tmp"]
    for name in leftovers + others:
        (tmp_path / name).write_bytes(b"partial")
    make_gallery().save(tmp_path / "g.fgg")
    make_gallery(seed=3).save(tmp_path / "g.fgg")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".g.fgg.lock", "g.fgg", "g.fgg.bak", *others]
    )


def test_backup_survives_a_writer_killed_between_backup_and_rename(tmp_path: Path) -> None:
    """Killed there, .bak and the gallery are one inode; the next save must still work."""
    path = tmp_path / "g.fgg"
    make_gallery(seed=1).save(path)
    os.link(path, backup_path(path))
    make_gallery(seed=2).save(path)
    assert Gallery.load(backup_path(path), FP_A).same_content(make_gallery(seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".g.fgg.lock", "g.fgg", "g.fgg.bak"]


def test_atomic_write_mode_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "f"
    atomic_write_bytes(path, b"x", mode=0o640)
    assert path.stat().st_mode & 0o777 == 0o640


def _fork_writer(versions: list[Gallery], path: Path) -> int:
    """The writer: a forked child that saves the two versions in turn until it is killed.
    Forked from this process, which already holds both (a new interpreter loading numpy and
    two 10 MB galleries cost about a second of CPU per kill)."""
    pid = os.fork()
    if pid:
        return pid
    try:  # pragma: no cover - the child never returns to pytest
        n = 0
        while True:
            versions[n % 2].save(path)
            n += 1
    finally:
        os._exit(1)


def test_sigkill_during_saves_never_breaks_the_gallery(tmp_path: Path) -> None:
    """SIGKILL a process that keeps rewriting a 10 MB gallery: every kill leaves one that
    loads, and it is one of the two versions being written, whole."""
    versions = {
        fp: make_gallery(4000, 5, seed=seed, fingerprint=fp) for seed, fp in ((1, FP_A), (2, FP_B))
    }
    work = tmp_path / "work"
    work.mkdir()
    path = work / "g.fgg"
    versions[FP_A].save(path)
    rng = random.Random(4)
    mid_write = 0
    for _ in range(10):
        child = _fork_writer(list(versions.values()), path)
        time.sleep(rng.uniform(0.01, 0.5))
        os.kill(child, signal.SIGKILL)
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        mid_write += any(p.name.endswith(".tmp") for p in work.iterdir())
        gallery = Gallery.load(path, None)
        assert gallery.embeddings.tobytes() == versions[gallery.fingerprint].embeddings.tobytes()
        if backup_path(path).exists():
            assert Gallery.load(backup_path(path), None).num_embeddings == 20000
    assert mid_write >= 3, "too few kills landed during a write: the test proved little"
    versions[FP_B].save(path)  # the next writer clears what the killed ones left
    assert sorted(p.name for p in work.iterdir()) == [".g.fgg.lock", "g.fgg", "g.fgg.bak"]


def _row(entry: GalleryEntry) -> tuple[object, ...]:
    no_embedding = np.zeros(0, np.float32)
    return (*astuple(replace(entry, embedding=no_embedding))[:-1], entry.embedding.tobytes())


def _unit(seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=128).astype(np.float32))
