"""scripts/install-pi.sh staged with --root into a temp dir: idempotent, keeps user edits.

--root skips what needs the live system (apt, useradd, chown, venv, systemctl) and prints
it instead, so these tests check files and modes; intended owners are checked in the
printed actions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from facegate.keys import KeyType, PrivateKey, load_private_key, load_public_key

ROOT: Final = Path(__file__).resolve().parent.parent
SCRIPT: Final = ROOT / "scripts" / "install-pi.sh"
KEY: Final = "etc/facegate/unlock.key"
PUB: Final = "etc/facegate/unlock.pub"

Snapshot = dict[str, tuple[str, int, str]]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A stand-in `make models` output: two small files and a built.json with extras."""
    out = tmp_path / "built-models"
    out.mkdir()
    files = {
        "facenet_int8.tflite": os.urandom(3000),
        "face_detection_short_range.tflite": os.urandom(1000),
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    built = {
        "schema": 1,
        "files": {
            n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in files.items()
        },
    }
    (out / "built.json").write_text(json.dumps(built, indent=2))
    return out


def install(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def snapshot(root: Path, *, with_mtime: bool = False) -> Snapshot:
    """relative path -> (kind, mode, sha256 / link target); the key's content left out."""
    out: Snapshot = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if path.is_symlink():
            out[rel] = ("link", mode, os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", mode, "")
        else:
            digest = "" if rel in (KEY, PUB) else _sha256(path)
            out[rel] = ("file", mode, digest + (f"@{st.st_mtime_ns}" if with_mtime else ""))
    return out


def test_root_install_twice_gives_identical_tree(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "root"
    first = install("--root", str(root), "--models-from", str(models))
    tree = snapshot(root)
    key = (root / KEY).read_text()

    second = install("--root", str(root), "--models-from", str(models))
    assert snapshot(root) == tree
    assert (root / KEY).read_text() == key, "re-run must not replace the signing key"
    assert "keeping existing signing key" in second.stdout
    assert "+ install" not in second.stdout, second.stdout  # nothing rewritten

    expected = {
        "opt/facegate": ("dir", 0o755),
        "opt/facegate/models/facenet_int8.tflite": ("file", 0o644),
        "opt/facegate/models/face_detection_short_range.tflite": ("file", 0o644),
        "opt/facegate/models/built.json": ("file", 0o644),
        "etc/facegate": ("dir", 0o750),
        "etc/facegate/facegate.yaml": ("file", 0o640),
        "etc/facegate/enrollment.yaml": ("file", 0o640),
        KEY: ("file", 0o600),
        PUB: ("file", 0o644),
        "var/lib/facegate": ("dir", 0o750),
        "etc/systemd/system/facegate.service": ("file", 0o644),
        "opt/facegate/share/mosquitto/acl": ("file", 0o644),
        "opt/facegate/share/mosquitto/gen-test-certs.sh": ("file", 0o755),
    }
    for rel, (kind, mode) in expected.items():
        assert rel in tree, rel
        assert tree[rel][:2] == (kind, mode), (rel, oct(tree[rel][1]))
    for name in ("facenet_int8.tflite", "face_detection_short_range.tflite"):
        assert _sha256(root / "opt/facegate/models" / name) == _sha256(models / name)
    unit = root / "etc/systemd/system/facegate.service"
    assert unit.read_bytes() == (ROOT / "systemd/facegate.service").read_bytes()
    # An Ed25519 pair that facegate reads: the private key signs, the .pub verifies.
    private = load_private_key(root / KEY, KeyType.ED25519)
    assert load_public_key(root / PUB) == private.public()

    # Owners: staged files belong to whoever ran the script; the live owners are printed.
    assert {p.lstat().st_uid for p in root.rglob("*")} == {os.getuid()}
    for line in (
        f"chown root:facegate {root}/etc/facegate/facegate.yaml",
        f"chown facegate:facegate {root}/etc/facegate/unlock.key",
        f"chown facegate:facegate {root}/var/lib/facegate",
        "useradd --system",
        "systemctl enable facegate.service",
    ):
        assert line in first.stdout, line


def test_installed_config_points_at_installed_paths(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "root"
    install("--root", str(root), "--models-from", str(models))
    example = (ROOT / "config/facegate.yaml").read_text().splitlines()
    installed = (root / "etc/facegate/facegate.yaml").read_text().splitlines()
    assert len(installed) == len(example)
    changed = [(a, b) for a, b in zip(example, installed, strict=True) if a != b]
    for before, after in changed:  # only path lines, and only to installed locations
        assert "../models" in before and ("/opt/facegate/models" in after or "picamera2" in after)
    assert (root / "etc/facegate/enrollment.yaml").read_bytes() == (
        ROOT / "config/enrollment.yaml"
    ).read_bytes()


def test_user_edits_survive_a_rerun(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "root"
    install("--root", str(root), "--models-from", str(models))
    cfg = root / "etc/facegate/facegate.yaml"
    enrollment = root / "etc/facegate/enrollment.yaml"
    key = root / KEY
    cfg.write_text(cfg.read_text() + "# edited by the owner\n")
    enrollment.write_text("people: []\n")
    key.write_text(PrivateKey.generate(KeyType.ED25519).to_file_text())
    edited = {p: p.read_bytes() for p in (cfg, enrollment, key)}

    out = install("--root", str(root), "--models-from", str(models)).stdout
    assert {p: p.read_bytes() for p in edited} == edited
    assert "keeping existing /etc/facegate/facegate.yaml" in out


def test_rerun_repairs_installed_files(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "root"
    install("--root", str(root), "--models-from", str(models))
    tree = snapshot(root)
    unit = root / "etc/systemd/system/facegate.service"
    unit.write_text("tampered\n")
    (root / "opt/facegate/models/facenet_int8.tflite").unlink()
    (root / "etc/facegate").chmod(0o755)
    install("--root", str(root), "--models-from", str(models))
    assert snapshot(root) == tree


def test_dry_run_changes_nothing(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "root"
    out = install("--dry-run", "--root", str(root), "--models-from", str(models)).stdout
    assert not root.exists()
    for action in (
        f"[dry-run] install -d -m 0750 {root}/etc/facegate",
        f"[dry-run] install -m 0644 {models}/facenet_int8.tflite",
        f"{root}/etc/systemd/system/facegate.service",
        f"[dry-run] generate {root}/{KEY}",
        "[dry-run] install -m 0640",
        "systemctl daemon-reload",
        "nothing was changed",
    ):
        assert action in out, action

    install("--root", str(root), "--models-from", str(models))
    (root / "opt/facegate/models/built.json").unlink()
    (root / "etc/facegate/facegate.yaml").chmod(0o644)
    before = snapshot(root, with_mtime=True)
    out = install("--dry-run", "--root", str(root), "--models-from", str(models)).stdout
    assert snapshot(root, with_mtime=True) == before
    assert "[dry-run] install -m 0644" in out and "built.json" in out


def test_dry_run_on_the_live_system_only_prints(tmp_path: Path, models: Path) -> None:
    """No --root: the privileged steps appear in the output and nothing is touched."""
    before = {p: p.exists() for p in (Path("/opt/facegate"), Path("/etc/facegate"))}
    out = install("--dry-run", "--models-from", str(models), "--no-broker").stdout
    assert {p: p.exists() for p in before} == before
    assert "[skipped" not in out
    for action in ("systemctl daemon-reload", "systemctl enable facegate.service"):
        assert f"[dry-run] {action}" in out
    if not Path("/opt/facegate/venv/bin/facegate").exists():
        assert "[dry-run] python3 -m venv --system-site-packages /opt/facegate/venv" in out
        pip = [
            ln for ln in out.splitlines() if ln.startswith("[dry-run] /opt/facegate/venv/bin/pip")
        ]
        assert pip and "install" in pip[0] and "[pi" in pip[0].replace("\\", ""), out
    if subprocess.run(["id", "-u", "facegate"], capture_output=True, check=False).returncode:
        assert "[dry-run] useradd --system" in out


def test_bad_model_checksum_stops_before_copying(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "root"
    (models / "face_detection_short_range.tflite").write_bytes(b"not the built model")
    proc = install("--root", str(root), "--models-from", str(models), check=False)
    assert proc.returncode != 0
    assert "face_detection_short_range.tflite: sha256" in proc.stderr
    assert list((root / "opt/facegate/models").glob("*")) == []


def test_missing_built_json_is_an_error(tmp_path: Path, models: Path) -> None:
    (models / "built.json").unlink()
    proc = install("--root", str(tmp_path / "root"), "--models-from", str(models), check=False)
    assert proc.returncode != 0 and "built.json" in proc.stderr


@pytest.mark.parametrize("script", ["install-pi.sh", "gen-test-certs.sh"])
def test_shell_scripts_are_clean(script: str) -> None:
    path = ROOT / "scripts" / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    proc = subprocess.run([shellcheck, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_runtime_requirements_are_aarch64_wheels_for_bookworm_and_trixie() -> None:
    """Issue 17: the Pi installs from wheels only, on CPython 3.11 and 3.13 (metadata only).

    The two resolutions wait on PyPI, not the CPU: they run side by side."""
    script = ROOT / "scripts" / "check_pi_wheels.py"
    runs = {
        python: subprocess.Popen(
            [sys.executable, str(script), "--python", python],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for python in ("3.11", "3.13")
    }
    outputs = []
    for python, proc in runs.items():
        try:
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            proc.kill()
        assert proc.returncode == 0, stdout + stderr[-3000:]
        assert f"Python {python} (aarch64):" in stdout
        outputs.append(stdout)
    for stdout in outputs:
        assert "ai_edge_litert" in stdout and "manylinux_2_27_aarch64" in stdout
