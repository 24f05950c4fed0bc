"""Where scripts/install-pi.sh puts things on a device: one definition for every default.

A leaf: imports nothing from facegate, so config, vision and the CLI can all use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: Code, virtualenv and models (PREFIX in install-pi.sh).
INSTALL_PREFIX: Final = Path("/opt/facegate")
#: The built .tflite files with their built.json, copied from a `make models` run.
INSTALLED_MODELS_DIR: Final = INSTALL_PREFIX / "models"
#: facegate.yaml, enrollment.yaml, keys (root:facegate, 0750).
CONFIG_DIR: Final = Path("/etc/facegate")
DEFAULT_CONFIG: Final = CONFIG_DIR / "facegate.yaml"
#: What the daemon writes: the gallery and the event journal (owned by the facegate user).
STATE_DIR: Final = Path("/var/lib/facegate")
DEFAULT_GALLERY: Final = STATE_DIR / "gallery.fgg"
DEFAULT_JOURNAL: Final = STATE_DIR / "journal"
