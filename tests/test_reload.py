"""What a SIGHUP applies live and what it reports as needing a restart (issue 12, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facegate.config import load_config
from facegate.config.diff import changed_paths
from facegate.service import ReloadEffect, reload_effect
from scenes import write_config


def config_text(tmp_path: Path, **changes: str) -> str:
    path = write_config(tmp_path / "facegate.yaml", port=1883, cameras=[{"door": "front"}])
    text = path.read_text()
    for old, new in changes.items():
        text = text.replace(old, new)
    return text


def test_changed_paths_names_every_changed_key(tmp_path: Path) -> None:
    base = tmp_path / "a.yaml"
    other = tmp_path / "b.yaml"
    base.write_text(config_text(tmp_path))
    other.write_text(
        config_text(tmp_path)
        .replace("recognition: {", "recognition: {threshold: 0.8, ")
        .replace("{door: 'front'", "{door: 'front', fps: 5, source: 'cam/'")
        + "log_level: DEBUG\n"
    )
    old, new = load_config(base), load_config(other)
    assert changed_paths(old, old) == []
    assert sorted(changed_paths(old, new)) == [
        "cameras[0].fps",
        "cameras[0].source.kind",
        "cameras[0].source.value",
        "log_level",
        "recognition.threshold",
    ]


@pytest.mark.parametrize(
    ("path", "effect"),
    [
        ("recognition.threshold", ReloadEffect.LIVE),
        ("log_level", ReloadEffect.LIVE),
        ("watchdog.stall_s", ReloadEffect.LIVE),
        ("enrollment", ReloadEffect.LIVE),
        ("cameras[1].fps", ReloadEffect.LIVE),
        ("cameras[0].mode", ReloadEffect.LIVE),
        ("cameras[0].source.value", ReloadEffect.CAMERA),
        ("cameras[2].rotate", ReloadEffect.CAMERA),
        ("cameras[0].door", ReloadEffect.RESTART),
        ("cameras[0].signing_key_file", ReloadEffect.RESTART),
        ("cameras", ReloadEffect.RESTART),
        ("models.embedder", ReloadEffect.RESTART),
        ("mqtt.host", ReloadEffect.RESTART),
        ("device", ReloadEffect.RESTART),
        ("journal", ReloadEffect.RESTART),
    ],
)
def test_each_change_has_its_effect(path: str, effect: ReloadEffect) -> None:
    assert reload_effect(path) is effect
