"""`facegate verify | identify | evaluate` as a user runs them, real images: through the CLI
entry point in-process, and one test as a real subprocess.

In-process calls share the session's engine (FaceEngine.load with its exact arguments
returns it: 0.1-0.2 CPU-s a call), and tests whose subject is the probe image match it
against a gallery of the same references (`--gallery`, enrolled once per module) instead of
embedding the references again at every call; `--refs` keeps its own tests."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CELEB, REPO, celeb_image
from facegate.cli import main
from facegate.enroll import PhotoEncoder, enroll
from facegate.errors import BadInputError
from facegate.gallery import Gallery
from facegate.imageio import load_image
from facegate.vision.engine import FaceEngine

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")


def facegate_process(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "facegate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )


def facegate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The same command through its entry point in-process (no interpreter start and
    imports per call); test_verify_match_and_no_match runs the process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def usable_train_images(engine: FaceEngine, person: str, count: int) -> list[Path]:
    """The first `count` train images of `person` that hold exactly one usable face."""
    found = []
    for path in sorted((CELEB / "train" / person).glob("*.jpg")):
        try:
            engine.encode_one(load_image(path), path)
        except BadInputError:
            continue
        found.append(path)
        if len(found) == count:
            break
    return found


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Path:
    """<id>/ folders with three train images each, and one <id>.jpg single reference."""
    root = tmp_path_factory.mktemp("refs")
    for person in PEOPLE[:4]:
        (root / person).mkdir()
        for path in usable_train_images(engine, person, 3):
            shutil.copy(path, root / person / path.name)
    shutil.copy(usable_train_images(engine, "mindy_kaling", 1)[0], root / "mindy.jpg")
    return root


@pytest.fixture(autouse=True)
def _share_the_engine(share_the_engine: None) -> None:
    pass


@pytest.fixture(scope="module")
def gallery(refs: Path, engine: FaceEngine) -> Path:
    """The same references enrolled once into a gallery file (as `facegate enroll` does:
    the photo gate), for tests whose subject is the probe, not the references."""
    enrollment = refs.parent / "refs-enrollment.yaml"
    lines = ["people:"]
    for person in PEOPLE[:4]:
        lines.append(f"  - {{id: {person}, images: ['{refs / person}/'], doors: ['*']}}")
    lines.append(f"  - {{id: mindy, images: ['{refs / 'mindy.jpg'}'], doors: ['*']}}")
    enrollment.write_text("\n".join(lines) + "\n")
    path = refs.parent / "refs.fgg"
    assert enroll(enrollment, path, PhotoEncoder(engine)).embedded == 13
    assert Gallery.load(path, engine.fingerprint).person_ids == (*PEOPLE[:4], "mindy")
    return path


def assert_clean_error(result: subprocess.CompletedProcess[str], path: Path, words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert words in result.stderr.lower()


def test_verify_match_and_no_match(refs: Path) -> None:
    ok = facegate_process(
        "verify", celeb_image("madonna"), "--as", "madonna", "--refs", refs, "--json"
    )
    assert ok.returncode == 0, ok.stderr
    body = json.loads(ok.stdout)
    assert body["match"] is True and body["distance"] < 0.9
    no = facegate_process("verify", celeb_image("elton_john"), "--as", "madonna", "--refs", refs)
    assert no.returncode == 1
    assert no.stdout.startswith("NO MATCH")


def test_verify_unknown_identity_is_bad_input(refs: Path) -> None:
    result = facegate("verify", celeb_image("madonna"), "--as", "nobody", "--refs", refs)
    assert result.returncode == 2 and "not enrolled" in result.stderr


def test_identify_known_single_file_reference_and_stranger(refs: Path, tmp_path: Path) -> None:
    known = facegate("identify", celeb_image("jerry_seinfeld", index=2), "--refs", refs, "--json")
    assert known.returncode == 0, known.stderr
    assert [f["identity"] for f in json.loads(known.stdout)["faces"]] == ["jerry_seinfeld"]
    single = facegate("identify", celeb_image("mindy_kaling"), "--refs", refs, "--json")
    assert json.loads(single.stdout)["faces"][0]["identity"] == "mindy"
    # A gallery without ben_afflek: he must come out unknown, exit 1.
    partial = tmp_path / "refs"
    shutil.copytree(refs, partial)
    shutil.rmtree(partial / "ben_afflek")
    stranger = facegate("identify", celeb_image("ben_afflek"), "--refs", partial, "--json")
    assert stranger.returncode == 1
    face = json.loads(stranger.stdout)["faces"][0]
    assert face["identity"] is None and face["match"] is False


def test_identify_two_faces_gives_two_results(gallery: Path, tmp_path: Path) -> None:
    both = Image.new("RGB", (640, 400), (120, 120, 120))
    both.paste(Image.open(celeb_image("madonna")).convert("RGB").resize((300, 380)), (10, 10))
    both.paste(Image.open(celeb_image("elton_john")).convert("RGB").resize((300, 380)), (330, 10))
    path = tmp_path / "two.png"
    both.save(path)
    result = facegate("identify", path, "--gallery", gallery, "--json")
    assert result.returncode == 0, result.stderr
    names = sorted(str(f["identity"]) for f in json.loads(result.stdout)["faces"])
    assert names == ["elton_john", "madonna"]


def _variants(tmp_path: Path) -> dict[str, Path]:
    """The same face saved the ways people's files really come."""
    source = Image.open(celeb_image("madonna", index=2)).convert("RGB")
    out: dict[str, Path] = {}
    out["rgba"] = tmp_path / "rgba.png"
    # An exported cut-out: opaque face, transparent border.
    rgba = source.convert("RGBA")
    alpha = Image.new("L", source.size, 0)
    alpha.paste(255, (8, 8, source.width - 8, source.height - 8))
    rgba.putalpha(alpha)
    rgba.save(out["rgba"])
    out["palette"] = tmp_path / "palette.png"
    source.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(out["palette"])
    out["gray"] = tmp_path / "gray.jpg"
    source.convert("L").save(out["gray"])
    # Pixels stored rotated; EXIF orientation 6 says "rotate 90 CW to view".
    out["exif"] = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    source.transpose(Image.Transpose.ROTATE_90).save(out["exif"], exif=exif)
    out["huge"] = tmp_path / "huge.jpg"
    source.resize((source.width * 12, source.height * 12)).save(out["huge"], quality=80)
    return out


def test_real_world_image_formats_are_recognised(gallery: Path, tmp_path: Path) -> None:
    original = facegate(
        "verify", celeb_image("madonna", index=2), "--as", "madonna", "--gallery", gallery,
        "--json",
    )  # fmt: skip
    baseline = json.loads(original.stdout)["distance"]
    for name, path in _variants(tmp_path).items():
        result = facegate("verify", path, "--as", "madonna", "--gallery", gallery, "--json")
        assert result.returncode == 0, (name, result.stdout, result.stderr)
        # The same face, however it was stored: nearly the same embedding.
        assert abs(json.loads(result.stdout)["distance"] - baseline) < 0.15, name


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("tiny.png", "too small"),
        ("noface.png", "no face"),
        ("truncated.jpg", "truncated"),
        ("notes.jpg", "not an image"),
        ("missing.jpg", "not found"),
    ],
)
def test_bad_probe_images_fail_clearly(
    gallery: Path, tmp_path: Path, name: str, words: str
) -> None:
    path = tmp_path / name
    if name == "tiny.png":
        Image.open(celeb_image("madonna")).convert("RGB").resize((20, 24)).save(path)
    elif name == "noface.png":
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(90, 110, (480, 640, 3), dtype=np.uint8)).save(path)
    elif name == "truncated.jpg":
        data = celeb_image("madonna").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif name == "notes.jpg":
        path.write_text("this is not a picture\n")
    result = facegate("identify", path, "--gallery", gallery)
    assert_clean_error(result, path, words)


def test_bad_reference_is_skipped_with_a_warning_naming_the_image(
    refs: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "refs"
    shutil.copytree(refs, broken)
    bad = broken / "madonna" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0garbage")
    result = facegate("identify", celeb_image("madonna"), "--refs", broken, "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert str(bad) in warning and "image" in warning
    assert json.loads(result.stdout)["faces"][0]["identity"] == "madonna"


def test_evaluate_json_meets_the_targets(celeb_dir: Path, tmp_path: Path) -> None:
    plot = tmp_path / "roc.png"
    result = facegate("evaluate", celeb_dir, "--json", "--plot", plot)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("eer", "threshold_eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "top1"):
        assert key in report
    assert report["top1"] == 1.0
    assert report["eer"] <= 0.04
    assert report["tar_at_far_1e-3"] >= 0.85
    assert report["pairs_genuine"] > 800 and report["pairs_impostor"] > 3000
    assert plot.stat().st_size > 10_000
    assert Image.open(plot).size[0] > 400
