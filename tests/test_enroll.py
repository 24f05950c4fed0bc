"""`facegate enroll` with the real models on the 5-celebrity train images.

Every bad input must exit 2 naming the image and leave the gallery byte-identical.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegate.cli import main
from facegate.enroll import EnrollReport, PhotoEncoder, enroll
from facegate.errors import BadInputError, ConfigError, ManyFacesError, NoFaceError
from facegate.gallery import Gallery
from facegate.imageio import load_image
from facegate.vision.engine import FaceEngine
from facegate.vision.quality import QualityGate
from facegate.vision.types import FaceEncoding, ImageArray
from shared_engine import sharing

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna")
PER_PERSON = 4


class CountingEngine:
    """The real engine, counting how often enrollment asks it to embed an image."""

    def __init__(self, engine: FaceEngine) -> None:
        self.engine = engine
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        return self.engine.fingerprint

    @property
    def gate(self) -> QualityGate:
        return self.engine.gate

    def encode_one(self, image: ImageArray, source: str | Path) -> FaceEncoding:
        self.calls += 1
        return self.engine.encode_one(image, source)


@dataclass(frozen=True)
class CleanImage:
    path: Path
    face_px: float


@dataclass(frozen=True)
class CleanPhotos:
    """One person's train images that hold exactly one usable face: the first ones in sorted
    order (as many as the tests take) and the last one."""

    first: list[CleanImage]
    last: CleanImage

    def __getitem__(self, index: int) -> CleanImage:
        return self.first[index]


def _clean_image(engine: FaceEngine, path: Path) -> CleanImage | None:
    try:
        face = engine.encode_one(load_image(path), path)
    except BadInputError:
        return None
    return CleanImage(path, face.quality.face_px)


@pytest.fixture(scope="session")
def clean(engine: FaceEngine, celeb_dir: Path) -> dict[str, CleanPhotos]:
    """Per person, train images holding exactly one usable face (the set has a few that do
    not: group photos, tiny faces). Only the first PER_PERSON + 1 and the last such image
    are looked for (the tests use no other): 28 images embedded instead of all 93."""
    found: dict[str, CleanPhotos] = {}
    for person in PEOPLE:
        paths = sorted((celeb_dir / "train" / person).glob("*.jpg"))
        first: list[CleanImage] = []
        for path in paths:
            if len(first) == PER_PERSON + 1:
                break
            if (image := _clean_image(engine, path)) is not None:
                first.append(image)
        last = next(
            image for path in reversed(paths) if (image := _clean_image(engine, path)) is not None
        )
        assert len(first) == PER_PERSON + 1, person
        found[person] = CleanPhotos(first, last)
    return found


@dataclass
class Site:
    """A folder with an enrollment.yaml, its images and the gallery path."""

    root: Path
    enrollment: Path
    gallery: Path

    def write(self, people: dict[str, list[str]], extra: str = "") -> None:
        lines = ["people:"]
        for person, images in people.items():
            lines += [f"  - id: {person}", f"    images: {json.dumps(images)}", '    doors: ["*"]']
        self.enrollment.write_text("\n".join(lines) + "\n" + extra)

    def snapshot(self) -> dict[str, bytes]:
        """Every file in the gallery's folder, byte for byte."""
        return {p.name: p.read_bytes() for p in sorted(self.gallery.parent.iterdir())}


def new_site(root: Path, clean: dict[str, CleanPhotos]) -> Site:
    for person in PEOPLE:
        folder = root / "imgs" / person
        folder.mkdir(parents=True)
        for image in clean[person].first[:PER_PERSON]:
            shutil.copy(image.path, folder / image.path.name)
    (root / "var").mkdir()
    result = Site(root, root / "enrollment.yaml", root / "var" / "gallery.fgg")
    result.write({p: [f"imgs/{p}/"] for p in PEOPLE})
    return result


@pytest.fixture
def site(tmp_path: Path, clean: dict[str, CleanPhotos]) -> Site:
    """PER_PERSON clean images per person copied into imgs/<person>/, all enrolled."""
    return new_site(tmp_path, clean)


@pytest.fixture(autouse=True)
def _share_the_engine(share_the_engine: None) -> None:
    pass


def copy_site(site: Site, root: Path) -> Site:
    """A copy of a prepared site (images are keyed by their bytes: the same gallery)."""
    shutil.copytree(site.root, root)
    return Site(root, root / site.enrollment.name, root / "var" / site.gallery.name)


@dataclass
class CliSite:
    """A site enrolled once by `facegate enroll` (16 images embedded) and what it printed,
    then what `facegate enroll --json` printed right after (nothing left to do)."""

    site: Site
    table: str
    json: str


@pytest.fixture(scope="module")
def cli_site(
    tmp_path_factory: pytest.TempPathFactory,
    clean: dict[str, CleanPhotos],
    models_dir: Path,
    engine: FaceEngine,
) -> CliSite:
    """Built once; tests that need an enrolled site but do not check the enrolling take a
    copy instead of enrolling again."""
    site = new_site(tmp_path_factory.mktemp("cli"), clean)
    table, report = io.StringIO(), io.StringIO()
    with sharing(engine, models_dir):
        with contextlib.redirect_stdout(table):
            assert run_cli(site, models_dir) == 0
        with contextlib.redirect_stdout(report):
            assert run_cli(site, models_dir, "--json") == 0
    return CliSite(site, table.getvalue(), report.getvalue())


@dataclass
class EngineSite:
    """A site enrolled through `enroll` with the bare engine over a corrupt gallery file
    (rebuilt from the images), and the report of that enrollment."""

    site: Site
    report: EnrollReport


@pytest.fixture(scope="module")
def engine_site(
    tmp_path_factory: pytest.TempPathFactory, clean: dict[str, CleanPhotos], engine: FaceEngine
) -> EngineSite:
    """Built once (its gallery records the engine's own gate's measure): the corrupt-gallery
    test checks its report, the tests that start from such a gallery take a copy."""
    site = new_site(tmp_path_factory.mktemp("engine"), clean)
    site.gallery.write_bytes(b"not a gallery")
    return EngineSite(site, enroll(site.enrollment, site.gallery, engine))


@pytest.fixture(scope="module")
def grown_site(
    tmp_path_factory: pytest.TempPathFactory,
    cli_site: CliSite,
    models_dir: Path,
    engine: FaceEngine,
) -> Site:
    """The CLI-enrolled site cut to three people, then all four again: a gallery and its
    .bak. Built once; tests get a copy (images are keyed by their bytes, so the copy is the
    same gallery)."""
    site = copy_site(cli_site.site, tmp_path_factory.mktemp("grown") / "site")
    with contextlib.redirect_stdout(io.StringIO()), sharing(engine, models_dir):
        site.write({p: [f"imgs/{p}/"] for p in PEOPLE[:3]})
        assert run_cli(site, models_dir) == 0
        site.write({p: [f"imgs/{p}/"] for p in PEOPLE})
        assert run_cli(site, models_dir) == 0  # now a .bak exists too: both must survive
    assert "gallery.fgg.bak" in site.snapshot()
    assert Gallery.load(site.gallery, None).num_embeddings == 16
    return site


def run_cli(site: Site, models_dir: Path, *flags: str) -> int:
    return main(
        [
            "enroll",
            "--enrollment",
            str(site.enrollment),
            "--gallery",
            str(site.gallery),
            "--models",
            str(models_dir),
            *flags,
        ]
    )


# --- the happy paths -------------------------------------------------------------------------


def test_enroll_reuse_change_and_remove(
    site: Site, engine: FaceEngine, clean: dict[str, CleanPhotos], celeb_dir: Path
) -> None:
    counting = CountingEngine(engine)
    first = enroll(site.enrollment, site.gallery, counting)
    assert (first.embedded, first.reused, counting.calls) == (16, 0, 16)
    assert [(p.person_id, p.images_used) for p in first.people] == [(p, 4) for p in PEOPLE]
    gallery = Gallery.load(site.gallery, engine.fingerprint)
    assert gallery.person_ids == PEOPLE and gallery.num_embeddings == 16
    matcher = gallery.matcher()
    hits = 0
    for person in PEOPLE:
        probe = sorted((celeb_dir / "val" / person).glob("*.jpg"))[0]
        face = engine.encode_one(load_image(probe), probe)
        assert face.embedding is not None
        hits += matcher.identify(face.embedding, threshold=2.0).candidate == person
    assert hits >= 3, "mean templates of 4 images should find most val probes"

    counting.calls = 0
    before = site.snapshot()
    again = enroll(site.enrollment, site.gallery, counting)
    assert (again.embedded, again.reused, counting.calls) == (0, 16, 0)
    assert not again.changed and not again.written  # up to date: file and backup kept
    assert site.snapshot() == before
    np.testing.assert_array_equal(
        Gallery.load(site.gallery, engine.fingerprint).embeddings, gallery.embeddings
    )

    changed = site.root / "imgs" / "madonna" / clean["madonna"][0].path.name
    shutil.copy(clean["madonna"][PER_PERSON].path, changed)  # same name, new content
    after_change = enroll(site.enrollment, site.gallery, counting)
    assert (after_change.embedded, counting.calls) == (1, 1)

    site.write({p: [f"imgs/{p}/"] for p in PEOPLE if p != "elton_john"})
    after_remove = enroll(site.enrollment, site.gallery, counting)
    assert after_remove.removed == ("elton_john",)
    assert (after_remove.embedded, counting.calls) == (0, 1)
    assert "elton_john" not in Gallery.load(site.gallery, engine.fingerprint).person_ids


def test_cli_prints_a_table_and_json(cli_site: CliSite) -> None:
    """What the module's CLI-enrolled site printed: enrolling, then re-running with --json."""
    table = cli_site.table
    assert "madonna" in table and "4 people, 16 images embedded" in table
    report = json.loads(cli_site.json)
    assert (report["embedded"], report["reused"], report["enrolled"]) == (0, 16, 4)
    assert (report["changed"], report["written"]) == (False, False)
    assert cli_site.site.gallery.stat().st_mode & 0o777 == 0o600


def test_check_writes_nothing(
    site: Site, cli_site: CliSite, tmp_path: Path, models_dir: Path
) -> None:
    assert run_cli(site, models_dir, "--check") == 0
    assert not site.gallery.exists()
    site = copy_site(cli_site.site, tmp_path / "enrolled")  # the same site, enrolled
    before = site.snapshot()
    site.write({p: [f"imgs/{p}/"] for p in PEOPLE[:2]})
    assert run_cli(site, models_dir, "--check") == 0
    assert site.snapshot() == before


def test_gallery_of_another_model_is_re_embedded(
    engine_site: EngineSite, tmp_path: Path, engine: FaceEngine
) -> None:
    site = copy_site(engine_site.site, tmp_path / "site")
    counting = CountingEngine(engine)
    old = Gallery.load(site.gallery, engine.fingerprint)
    other = Gallery.build(
        fingerprint="f" * 64,
        people=old.people,
        entries=list(old.entries()),
    )
    other.save(site.gallery)
    counting.calls = 0
    report = enroll(site.enrollment, site.gallery, counting)
    assert counting.calls == 16 and any("another model" in w for w in report.warnings)
    assert Gallery.load(site.gallery, engine.fingerprint).num_embeddings == 16


def test_corrupt_gallery_is_rebuilt(engine_site: EngineSite, engine: FaceEngine) -> None:
    """The module's engine-enrolled site was enrolled over b"not a gallery"."""
    report = engine_site.report
    assert report.embedded == 16 and any("unusable" in w for w in report.warnings)
    Gallery.load(engine_site.site.gallery, engine.fingerprint)


# --- bad input: exit 2, the image and field named, the gallery untouched ---------------------


def _non_image(site: Site, clean: dict[str, CleanPhotos]) -> Path:
    path = site.root / "bad" / "notes.jpg"
    path.write_text("this is not a photo\n")
    return path


def _truncated_jpeg(site: Site, clean: dict[str, CleanPhotos]) -> Path:
    path = site.root / "bad" / "truncated.jpg"
    path.write_bytes(clean["madonna"].last.path.read_bytes()[:3000])
    return path


def _grey(site: Site, clean: dict[str, CleanPhotos]) -> Path:
    path = site.root / "bad" / "grey.png"
    Image.new("RGB", (320, 240), (128, 128, 128)).save(path)
    return path


def _landscape_crop(site: Site, clean: dict[str, CleanPhotos]) -> Path:
    """The top strip of a portrait: hair and background, no face."""
    path = site.root / "bad" / "strip.jpg"
    with Image.open(clean["elton_john"].last.path) as img:
        img.crop((0, 0, img.width, max(40, img.height // 8))).save(path)
    return path


def _two_faces(site: Site, clean: dict[str, CleanPhotos]) -> Path:
    path = site.root / "bad" / "two.jpg"
    with Image.open(clean["ben_afflek"][0].path) as a, Image.open(clean["madonna"][0].path) as b:
        left, right = (
            im.convert("RGB").resize((400, 400 * im.height // im.width)) for im in (a, b)
        )
        canvas = Image.new("RGB", (800, max(left.height, right.height)), (255, 255, 255))
        canvas.paste(left, (0, 0))
        canvas.paste(right, (400, 0))
        canvas.save(path)
    return path


def _tiny_face(site: Site, clean: dict[str, CleanPhotos]) -> Path:
    """The whole photo scaled down: the detector still sees the face, at ~25 px."""
    image = clean["jerry_seinfeld"][0]
    path = site.root / "bad" / "tiny.jpg"
    with Image.open(image.path) as img:
        scale = 25.0 / image.face_px
        img.resize((round(img.width * scale), round(img.height * scale))).save(path)
    return path


@pytest.mark.parametrize(
    ("make", "error", "says"),
    [
        (_non_image, BadInputError, "not an image"),
        (_truncated_jpeg, BadInputError, "truncated"),
        (_grey, NoFaceError, "no face"),
        (_landscape_crop, NoFaceError, "no face"),
        (_two_faces, ManyFacesError, "2 faces"),
        (_tiny_face, BadInputError, "too small"),
    ],
    ids=["non-image", "truncated-jpeg", "grey", "landscape-strip", "two-faces", "tiny-face"],
)
def test_bad_image_changes_nothing(
    grown_site: Site,
    tmp_path: Path,
    models_dir: Path,
    engine: FaceEngine,
    clean: dict[str, CleanPhotos],
    capsys: pytest.CaptureFixture[str],
    make: object,
    error: type[BadInputError],
    says: str,
) -> None:
    shutil.copytree(grown_site.root, tmp_path / "site")
    root = tmp_path / "site"
    site = Site(root, root / grown_site.enrollment.name, root / "var" / grown_site.gallery.name)
    before = site.snapshot()
    assert "gallery.fgg.bak" in before
    (site.root / "bad").mkdir()
    bad = make(site, clean)  # type: ignore[operator]
    people = {p: [f"imgs/{p}/"] for p in PEOPLE}
    people["madonna"].append(f"bad/{bad.name}")
    site.write(people)
    capsys.readouterr()

    assert run_cli(site, models_dir) == 2
    message = capsys.readouterr().err
    assert bad.name in message and "people[3].images" in message and says in message, message
    assert site.snapshot() == before
    with pytest.raises(error):  # the photo gate, as the CLI: the 16 good images are reused
        enroll(site.enrollment, site.gallery, PhotoEncoder(engine))
    assert site.snapshot() == before

    assert run_cli(site, models_dir, "--skip-bad", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    madonna = next(p for p in report["people"] if p["person_id"] == "madonna")
    assert madonna["images_used"] == PER_PERSON
    assert [Path(r["image"]).name for r in madonna["rejected"]] == [bad.name]


@pytest.mark.parametrize(
    ("yaml_extra", "images", "says"),
    [
        ("    favourite_colour: blue\n", None, "favourite_colour"),
        ("", "imgs/madonna/missing.jpg", "missing.jpg"),
        ("", "imgs/ben_afflek/", "already enrolled for 'ben_afflek'"),
    ],
    ids=["unknown-key", "missing-image", "same-image-two-people"],
)
def test_bad_enrollment_changes_nothing(
    cli_site: CliSite,
    tmp_path: Path,
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
    yaml_extra: str,
    images: str | None,
    says: str,
) -> None:
    site = copy_site(cli_site.site, tmp_path / "site")  # enrolled
    before = site.snapshot()
    people = {p: [f"imgs/{p}/"] for p in PEOPLE}
    if images:
        people["madonna"].append(images)
    site.write(people, yaml_extra)
    capsys.readouterr()
    for flags in ((), ("--skip-bad",), ("--check",)):
        assert run_cli(site, models_dir, *flags) == 2
        message = capsys.readouterr().err
        assert says in message, message
        assert site.snapshot() == before


def test_unknown_key_names_file_and_line(site: Site, engine: FaceEngine) -> None:
    site.write({"madonna": ["imgs/madonna/"]}, "    favourite_colour: blue\n")
    with pytest.raises(ConfigError) as info:
        enroll(site.enrollment, site.gallery, engine)
    assert str(site.enrollment) in str(info.value) and info.value.line is not None
    assert not site.gallery.exists()


def test_unwritable_gallery_folder_fails_before_embedding(site: Site, engine: FaceEngine) -> None:
    counting = CountingEngine(engine)
    with pytest.raises(BadInputError, match="does not exist"):
        enroll(site.enrollment, site.root / "nowhere" / "g.fgg", counting)
    assert counting.calls == 0


def test_cli_config_gives_paths_models_and_quality_gate(
    site: Site, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def write_config(min_face_px: int) -> Path:
        config = site.root / "facegate.yaml"
        config.write_text(
            "cameras: [{door: front, source: cam.mp4}]\n"
            f"recognition: {{photos: {{min_face_px: {min_face_px}}}}}\n"
            f"models: {{dir: {json.dumps(str(models_dir))}}}\n"
            "enrollment: enrollment.yaml\n"
            "gallery: var/gallery.fgg\n"
            "mqtt: {host: 127.0.0.1, signing_key_file: hmac.key}\n"
        )
        return config

    assert main(["enroll", "--config", str(write_config(400))]) == 2  # the daemon's photo gate
    assert "too small" in capsys.readouterr().err and not site.gallery.exists()
    assert main(["enroll", "--config", str(write_config(40))]) == 0
    assert Gallery.load(site.gallery, None).num_embeddings == 16
    # --gallery overrides the config's gallery: a copy of it, cut to three people, is
    # written (the 12 images are reused, nothing embedded) and the config's one is kept.
    other = site.root / "var" / "other.fgg"
    shutil.copy(site.gallery, other)
    site.write({p: [f"imgs/{p}/"] for p in PEOPLE[:3]})
    assert main(["enroll", "--config", str(write_config(40)), "--gallery", str(other)]) == 0
    assert other.exists()
    assert Gallery.load(other, None).person_ids == PEOPLE[:3]
    assert Gallery.load(site.gallery, None).num_embeddings == 16


def test_cli_without_paths_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enroll", "--gallery", "g.fgg"]) == 2
    assert "--enrollment" in capsys.readouterr().err


def test_stricter_gate_re_checks_reused_images(
    engine_site: EngineSite, tmp_path: Path, engine: FaceEngine
) -> None:
    site = copy_site(engine_site.site, tmp_path / "site")  # enrolled with the engine's gate
    before = site.snapshot()
    counting = CountingEngine(engine)
    default_gate = engine.gate
    engine.gate = QualityGate(min_face_px=1000, min_sharpness=default_gate.min_sharpness)
    try:
        with pytest.raises(BadInputError, match="too small"):
            enroll(site.enrollment, site.gallery, counting)
    finally:
        engine.gate = default_gate
    assert counting.calls == 1 and site.snapshot() == before


def test_daemon_mode_keeps_a_resident_whose_photos_vanish(
    engine_site: EngineSite, tmp_path: Path, engine: FaceEngine
) -> None:
    """An unmounted or unreadable photo folder must not lock a resident out (keep_previous),
    while the strict default still refuses and a person removed from the YAML still goes."""
    site = copy_site(engine_site.site, tmp_path / "site")  # enrolled with the engine's gate
    before = Gallery.load(site.gallery, engine.fingerprint)
    shutil.rmtree(site.root / "imgs" / "madonna")  # the folder is gone for now
    with pytest.raises(BadInputError):
        enroll(site.enrollment, site.gallery, engine, skip_bad=True)
    kept = enroll(site.enrollment, site.gallery, engine, skip_bad=True, keep_previous=True)
    assert any("madonna" in w for w in kept.warnings)
    after = Gallery.load(site.gallery, engine.fingerprint)
    assert after.person_ids == before.person_ids
    rows = [e for e in after.entries() if e.person_id == "madonna"]
    assert len(rows) == 4
    np.testing.assert_array_equal(after.templates, before.templates)
    site.write({p: [f"imgs/{p}/"] for p in PEOPLE if p != "madonna"})
    removed = enroll(site.enrollment, site.gallery, engine, skip_bad=True, keep_previous=True)
    assert removed.removed == ("madonna",)
