"""Prove the runtime requirements install on a Raspberry Pi from wheels alone.

Resolves setup.cfg's install_requires for 64-bit Raspberry Pi OS, Bookworm (CPython 3.11)
and Trixie (CPython 3.13), from wheels only, for glibc 2.36 (Bookworm's; Trixie has 2.41):
`uv pip compile --only-binary :all: --python-platform aarch64-manylinux_2_36`, which writes
the wheel each package installs into a PEP 751 lock file. Only metadata is fetched.
uv rather than `pip install --dry-run`: pip parses every file link of these projects'
index pages (about 40,000), 4.3 CPU-s per Python version against uv's 0.35; both resolve
the same 22 packages. Exit 0 when every requirement resolves to an aarch64 (or
pure-Python) wheel; else 1 with the resolver's reason.
Usage: python scripts/check_pi_wheels.py [--python 3.11 --python 3.13]
"""

from __future__ import annotations

import argparse
import configparser
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Raspberry Pi OS 64-bit: glibc 2.36 (Bookworm) / 2.41 (Trixie); wheels for 2.36 serve both.
PLATFORM = "aarch64-manylinux_2_36"


def runtime_requirements() -> list[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"].strip().splitlines()
    # Markers name the build machine's platform: on the Pi (aarch64) they all hold.
    return [line.split(";")[0].strip() for line in lines if line.strip()]


def uv_command() -> str:
    """uv from this venv (`make install` puts it there), else from PATH."""
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        raise SystemExit("uv not found: pip install uv (make install does)")
    return found


def resolve(python: str, requirements: list[str]) -> list[tuple[str, str, str]]:
    """(name, version, wheel file name or "no wheel") for everything the Pi would install."""
    with tempfile.TemporaryDirectory() as tmp:
        lock = Path(tmp) / "pylock.toml"
        command = [
            uv_command(), "pip", "compile", "--quiet", "--only-binary", ":all:",
            "--python-version", python, "--python-platform", PLATFORM, "-o", str(lock), "-",
        ]  # fmt: skip
        done = subprocess.run(
            command, input="\n".join(requirements), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"Python {python}: no wheel-only install:\n{done.stderr[-3000:]}")
        packages = tomllib.loads(lock.read_text())["packages"]
    return [(p["name"], p["version"], _wheel(p.get("wheels", []))) for p in packages]


def _wheel(wheels: list[dict[str, str]]) -> str:
    """The file name of the package's first wheel for the platform; "no wheel" if none."""
    return wheels[0]["url"].rsplit("/", 1)[-1] if wheels else "no wheel"


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
