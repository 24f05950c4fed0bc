"""systemd/facegate.service: `systemd-analyze verify` is clean, exposure <= 2.0, contract keys.

`systemd-analyze` comes with the `systemd` apt package. `verify` also checks that every
Exec*= binary exists; /opt/facegate/venv/bin/facegate exists only on an installed device,
so the test verifies a copy of the unit whose facegate path points at an executable stub
in tmp_path. Nothing else in the copy changes, so any other complaint is a real one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
UNIT: Final = ROOT / "systemd" / "facegate.service"
INSTALLED_BIN: Final = "/opt/facegate/venv/bin/facegate"
MAX_EXPOSURE: Final = 2.0
ANALYZE: Final = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze missing: apt-get install systemd"
)


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


def _stubbed_unit(tmp_path: Path, extra: str = "") -> Path:
    """Copy the unit with the facegate binary pointed at an executable stub."""
    stub = tmp_path / "facegate"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text().replace(INSTALLED_BIN, str(stub))
    unit = tmp_path / "facegate.service"
    unit.write_text(text + extra)
    return unit


def _verify_output(unit: Path) -> tuple[int, list[str]]:
    proc = _analyze("verify", str(unit))
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return proc.returncode, lines


def _directives(text: str) -> dict[str, list[str]]:
    """Unit file keys -> every value given (systemd allows repeats), comments dropped."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    rc, lines = _verify_output(_stubbed_unit(tmp_path))
    assert rc == 0 and lines == [], "\n".join(lines)


@needs_analyze
def test_verify_check_is_not_vacuous(tmp_path: Path) -> None:
    # The same harness must notice a broken unit, or "clean" above proves nothing.
    rc, lines = _verify_output(_stubbed_unit(tmp_path, "\n[Service]\nNoSuchKey=1\n"))
    assert any("NoSuchKey" in ln for ln in lines), (rc, lines)


@needs_analyze
def test_security_exposure_at_most_2() -> None:
    proc = _analyze("security", "--offline=true", str(UNIT))
    out = proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert match, out
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE, out


def test_unit_contract() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["WatchdogSec"] and d["Restart"] == ["on-failure"]
    assert int(d["StartLimitBurst"][0]) >= 1 and d["StartLimitIntervalSec"]
    assert d["ExecStartPre"] == [
        f"{INSTALLED_BIN} check-config --config /etc/facegate/facegate.yaml"
    ]
    assert d["ExecStart"] == [f"{INSTALLED_BIN} run --config /etc/facegate/facegate.yaml"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["User"] == ["facegate"] and d["Group"] == ["facegate"]
    assert d["SupplementaryGroups"] == ["video"]
    assert d["StateDirectory"] == ["facegate"] and d["ConfigurationDirectory"] == ["facegate"]
    assert d["ProtectSystem"] == ["strict"]
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert d[key] == ["yes"], key
    assert d["CapabilityBoundingSet"] == [""]
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in d["SystemCallFilter"]
    assert d["DevicePolicy"] == ["closed"] and d["PrivateDevices"] == ["no"]
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-dma_heap", "/dev/vchiq"} <= allowed


_MDWE_PROBE: Final = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping was allowed: MDWE not in force")
except OSError:
    pass
import numpy as np
import cv2  # noqa: F401
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    from tflite_runtime.interpreter import Interpreter
for path in sys.argv[1:]:
    it = Interpreter(model_path=path, num_threads=2)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    it.invoke()
    print("ran", path)
"""


def test_models_run_without_writable_executable_memory() -> None:
    """MemoryDenyWriteExecute=yes must not break inference (XNNPACK, numpy, OpenCV).

    PR_SET_MDWE (Linux >= 6.3) enforces the same rule as the unit setting on this process.
    """
    models = sorted((ROOT / "models").glob("*.tflite"))
    if not models:
        pytest.skip("no models/*.tflite: run `make models`")
    proc = subprocess.run(
        [sys.executable, "-c", _MDWE_PROBE, *map(str, models)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if proc.returncode == 77:
        pytest.skip("kernel has no PR_SET_MDWE (needs Linux >= 6.3)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ran ") == len(models)
