"""`facegate check-config`: what the daemon needs on disk, checked before it starts."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from facegate.cli import main
from facegate.keys import KeyType, PrivateKey
from facegate.vision.engine import MODEL_FILES
from scenes import (
    empty_frame,
    write_config,
    write_enrollment,
    write_folder,
    write_key,
    write_unlock_key,
)


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


def ed25519_site(root: Path) -> Path:
    """A site signing with mqtt.signing (ed25519) and unlock.key / unlock.pub."""
    write_unlock_key(root / "unlock.key")
    write_enrollment(root / "enrollment.yaml", {"ben_afflek": ["front"]})
    write_folder(root / "camera", [empty_frame()])
    (root / "journal").mkdir()
    return write_config(
        root / "facegate.yaml", port=1883, cameras=[{"door": "front", "source": "camera/"}],
        signing={"algorithm": "ed25519", "key_file": "unlock.key"},
    )  # fmt: skip


def test_the_old_signing_key_file_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(make_site(tmp_path))]) == 0
    assert "docs/migration-jws.md" in capsys.readouterr().err
    (tmp_path / "new").mkdir()
    assert main(["check-config", "--config", str(ed25519_site(tmp_path / "new"))]) == 0
    assert "migration" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key_file", "algorithm", "message"),
    [
        ("unlock.pub", "ed25519", "is a public key; signing needs the private key"),
        ("hmac.key", "ed25519", "set algorithm hs256"),
        ("unlock.key", "hs256", "not an HS256 hex secret"),
        ("camera", "ed25519", "is a directory"),
        ("fifo", "ed25519", "is a FIFO"),
        ("missing.key", "ed25519", "not found"),
    ],
)
def test_a_key_that_cannot_sign_as_configured_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key_file: str,
    algorithm: str,
    message: str,
) -> None:
    """check-config refuses (exit 2, file and field named) a public key where the private
    one is needed, a key of the other algorithm, and files that are not readable keys."""
    config = ed25519_site(tmp_path)
    write_key(tmp_path / "hmac.key")
    os.mkfifo(tmp_path / "fifo")
    text = config.read_text().replace(
        "signing: {algorithm: 'ed25519', key_file: 'unlock.key'}",
        f"signing: {{algorithm: '{algorithm}', key_file: '{key_file}'}}",
    )
    assert key_file in text
    config.write_text(text)
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and "mqtt.signing.key_file" in err and key_file in err, err
    assert "Traceback" not in err


def test_a_door_may_sign_hs256_while_the_others_use_ed25519(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ed25519_site(tmp_path)
    (tmp_path / "garage.key").write_text(PrivateKey.generate(KeyType.HS256).to_file_text())
    (tmp_path / "garage.key").chmod(0o600)
    text = config.read_text().replace(
        "  - {door: 'front', source: 'camera/'}",
        "  - {door: 'front', source: 'camera/'}\n"
        "  - {door: 'garage', source: 'camera/', signing_key_file: garage.key,"
        " signing_algorithm: hs256}",
    )
    config.write_text(text)
    assert main(["check-config", "--config", str(config)]) == 0, capsys.readouterr().err
    (tmp_path / "garage.key").write_text((tmp_path / "unlock.key").read_text())
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cameras[1].signing_key_file" in err and "not an HS256 hex secret" in err


@pytest.mark.parametrize(
    ("admin", "outcome"),
    [("admin.pub", "ok"), ("admin.key", "private key"), ("unlock.pub", "is an unlock key"),
     ("none.pub", "not found")],
)  # fmt: skip
def test_fleet_admin_key_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], admin: str, outcome: str
) -> None:
    config = ed25519_site(tmp_path)
    write_unlock_key(tmp_path / "admin.key")
    config.write_text(config.read_text() + f"fleet: {{site: hq, admin_public_key_file: {admin}}}\n")
    code = main(["check-config", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == (2 if outcome in ("private key", "not found") else 0), err
    if outcome != "ok":
        assert outcome in err and admin in err
