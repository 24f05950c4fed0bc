"""Prove the runtime requirements install on a Raspberry Pi from wheels alone.

Resolves setup.cfg's install_requires for 64-bit Raspberry Pi OS, Bookworm (CPython 3.11)
and Trixie (CPython 3.13), with `pip install --dry-run --only-binary :all:` and the
aarch64 platform tags listed explicitly (ai-edge-litert's aarch64 wheels carry
manylinux_2_27, which pip does not infer from another machine). Only metadata is fetched.
Exit 0 when every requirement resolves to an aarch64 (or pure-Python) wheel; else 1 with
pip's reason. Usage: python scripts/check_pi_wheels.py [--python 3.11 --python 3.13]
"""

from __future__ import annotations

import argparse
import configparser
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Raspberry Pi OS 64-bit: glibc 2.36 (Bookworm) / 2.41 (Trixie); these tags cover both.
PLATFORMS = (
    "manylinux_2_34_aarch64",
    "manylinux_2_28_aarch64",
    "manylinux_2_27_aarch64",
    "manylinux_2_17_aarch64",
    "manylinux2014_aarch64",
    "linux_aarch64",
)


def runtime_requirements() -> list[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"].strip().splitlines()
    # Markers name the build machine's platform: on the Pi (aarch64) they all hold.
    return [line.split(";")[0].strip() for line in lines if line.strip()]


def resolve(python: str, requirements: list[str]) -> list[tuple[str, str, str]]:
    """(name, version, wheel file name) for everything pip would install on the Pi."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
            "--only-binary", ":all:", "--target", str(Path(tmp) / "target"),
            "--python-version", python, "--implementation", "cp", "--report", str(report),
            *(arg for tag in PLATFORMS for arg in ("--platform", tag)), *requirements,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"Python {python}: no wheel-only install:\n{done.stderr[-3000:]}")
        installs = json.loads(report.read_text())["install"]
    return [
        (i["metadata"]["name"], i["metadata"]["version"], i["download_info"]["url"].rsplit("/")[-1])
        for i in installs
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="CPython version (default 3.11, 3.13)")
    args = parser.parse_args()
    requirements = runtime_requirements()
    for python in args.python or ["3.11", "3.13"]:
        resolved = resolve(python, requirements)
        not_wheels = [f for _, _, f in resolved if not f.endswith(".whl")]
        compiled = [f for _, _, f in resolved if not f.endswith(("-none-any.whl",))]
        wrong = [f for f in compiled if "aarch64" not in f]
        if not_wheels or wrong:
            print(f"Python {python}: not aarch64 wheels: {not_wheels + wrong}")
            return 1
        print(f"Python {python} (aarch64): {len(resolved)} wheels")
        for name, version, wheel in sorted(resolved):
            print(f"  {name}=={version}  {wheel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
