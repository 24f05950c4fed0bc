"""`facegate check-config`: what the daemon needs on disk, checked before it starts."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from facegate.cli import main
from facegate.vision.engine import MODEL_FILES
from scenes import empty_frame, write_config, write_enrollment, write_folder, write_key


def make_site(root: Path) -> Path:
    write_key(root / "hmac.key")
    write_enrollment(root / "enrollment.yaml", {"ben_afflek": ["front"]})
    write_folder(root / "camera", [empty_frame()])
    (root / "journal").mkdir()
    return write_config(
        root / "facegate.yaml", port=1883, cameras=[{"door": "front", "source": "camera/"}]
    )


def test_a_complete_site_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_site(tmp_path)
    assert main(["check-config", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "OK (front; 1 people" in out
    assert "no gallery yet" in err  # a warning, not an error: `run` builds it


@pytest.mark.parametrize(
    ("breakage", "field"),
    [
        ("camera", "cameras[0].source"),
        ("key", "signing_key_file"),
        ("journal", "journal"),
        ("models", "models.dir"),
    ],
)
def test_each_missing_piece_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: str, field: str
) -> None:
    config = make_site(tmp_path)
    if breakage == "camera":
        shutil.rmtree(tmp_path / "camera")
    elif breakage == "key":
        (tmp_path / "hmac.key").unlink()
    elif breakage == "journal":
        (tmp_path / "journal").rmdir()
        (tmp_path / "journal").write_text("a file where the journal folder should be\n")
    elif breakage == "models":
        text = config.read_text()
        config.write_text(text.replace("models: {dir: '", f"models: {{dir: '{tmp_path}/none"))
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_a_bad_per_door_key_names_its_camera(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_site(tmp_path)
    text = config.read_text().replace(
        "source: 'camera/'", "source: 'camera/', signing_key_file: front.key"
    )
    assert "front.key" in text
    config.write_text(text)
    (tmp_path / "front.key").write_text("not hex\n")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "front.key" in err and "cameras[0].signing_key_file" in err and "not hex" in err


@pytest.mark.parametrize(("landmarks", "message"), [("absent", "model file missing"),
                                                    ("a folder", "unreadable")])  # fmt: skip
def test_a_missing_or_unreadable_landmark_model_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models_dir: Path,
    landmarks: str, message: str,
) -> None:  # fmt: skip
    """The daemon cannot align faces without the landmark model: refuse before it starts."""
    config = make_site(tmp_path)
    partial = tmp_path / "models"
    partial.mkdir()
    for name in (MODEL_FILES["detector_short"], MODEL_FILES["int8"]):
        (partial / name).symlink_to(models_dir / name)
    if landmarks == "a folder":
        (partial / MODEL_FILES["landmarks"]).mkdir()
    text = re.sub(r"models: \{dir: '[^']*'", f"models: {{dir: '{partial}'", config.read_text())
    config.write_text(text)
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{partial / MODEL_FILES['landmarks']}: {message}" in err
    assert "models.dir" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("front_key", "warned"),
    [("copy of shared", True), ("copy of garage", True), ("its own", False)],
)
def test_a_per_door_key_that_repeats_another_key_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], front_key: str, warned: bool
) -> None:
    """Per-door keys only help when they differ: a copied key file protects nothing."""
    config = make_site(tmp_path)
    write_key(tmp_path / "garage.key")
    source = {"copy of shared": "hmac.key", "copy of garage": "garage.key"}.get(front_key)
    if source is None:
        write_key(tmp_path / "front.key")
    else:
        shutil.copy(tmp_path / source, tmp_path / "front.key")
    text = config.read_text().replace(
        "  - {door: 'front', source: 'camera/'}",
        "  - {door: 'front', source: 'camera/', signing_key_file: front.key}\n"
        "  - {door: 'garage', source: 'camera/', signing_key_file: garage.key}",
    )
    assert "garage.key" in text
    config.write_text(text)
    assert main(["check-config", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert ("can forge this door's unlocks" in err) is warned
