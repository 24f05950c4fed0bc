"""`facegate bench` building blocks on the real models and images (no timing targets here:
speeds are reported by `make bench`, not asserted; these tests check what is measured)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from facegate.bench import (
    compare_accuracy,
    facegate_embeddings,
    make_frames,
    pi_projection,
    render_markdown,
    update_readme,
)
from facegate.bench_stages import FRAME_SIZE, STAGES, run_stages, summarise
from facegate.imageio import load_image
from facegate.vision.engine import FaceEngine
from facegate.vision.runtime import runtime_name


@pytest.fixture(scope="module")
def frames(
    tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine, celeb_dir: Path
) -> list[Path]:
    return make_frames(engine, celeb_dir, tmp_path_factory.mktemp("frames"))


@pytest.fixture(scope="module")
def stage_run(models_dir: Path, frames: list[Path]) -> dict[str, Any]:
    return run_stages(models_dir, frames[:4], "int8", 2, iterations=6, empty_seconds=0.3)


def test_frames_hold_one_usable_face_each(frames: list[Path], engine: FaceEngine) -> None:
    assert len(frames) >= 20  # of 25 val photos
    for path in frames[:5]:
        with Image.open(path) as image:
            assert image.size == FRAME_SIZE
        faces = engine.encode(load_image(path))
        assert len(faces) == 1 and faces[0].embedding is not None


def test_every_stage_is_timed(stage_run: dict[str, Any]) -> None:
    stages = stage_run["stages_ms"]
    assert set(STAGES) | {"detect_align_embed"} == set(stages)
    for name, summary in stages.items():
        assert 0 < summary["min"] <= summary["p50"] <= summary["p95"], name
    # detect+align+embed is the sum of its stages, timed in the same iterations.
    parts = ("detect", "landmarks", "align", "embed")
    assert stages["detect_align_embed"]["min"] >= sum(stages[p]["min"] for p in parts) * 0.999
    assert stage_run["runtime"] == runtime_name()
    assert stage_run["threads_landmarks"] == stage_run["threads_embedder"] == 2
    assert stage_run["rss_mb"] > 50 and stage_run["fps"] > 0
    assert 0 <= stage_run["empty_scene_cpu_share"] < 1.5


def test_accuracy_counts_only_images_every_system_enrolls(
    models_dir: Path, celeb_dir: Path
) -> None:
    dataset = celeb_dir.resolve()
    int8 = facegate_embeddings(models_dir, dataset, "int8")
    enrolled = sorted(p for p, v in int8.items() if "embedding" in v)
    # A second "system" that fails on one more image: it must drop out for both.
    other = dict(int8)
    other[enrolled[0]] = {"failure": "no face found"}
    report, curves = compare_accuracy({"int8": int8, "other": other}, dataset)
    assert report["common_images"] == len(enrolled) - 1
    assert report["int8"]["pairs_genuine"] == report["other"]["pairs_genuine"]
    assert report["other"]["enroll_failures"] == report["int8"]["enroll_failures"] + 1
    assert report["int8"]["eer"] < 0.05 and report["int8"]["top1"] == 1.0
    genuine, impostor = curves["int8"]
    assert len(genuine) == report["int8"]["pairs_genuine"]
    assert len(impostor) == report["int8"]["pairs_impostor"]


def test_report_renders_without_face_recognition(stage_run: dict[str, Any], tmp_path: Path) -> None:
    """A run without the face_recognition venv still gives a complete, honest section."""
    results: dict[str, Any] = {
        "machine": "test", "cpus": 2, "date": "2026-11-23", "facegate": [stage_run],
        "gallery_match_ms": {"1k": summarise([0.1, 0.2])},
        "pi_projection": pi_projection(stage_run, None, 2), "dataset_images": 118,
    }  # fmt: skip
    section = render_markdown(results)
    for stage in (*STAGES, "detect_align_embed"):
        assert f"| {stage} ms p50 | " in section
    fps_row = next(line for line in section.splitlines() if line.startswith("| pipeline FPS |"))
    assert fps_row.endswith(" | - |")
    assert "faster per frame" not in section  # no ratio without the other system
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\ntail\n")
    update_readme(readme, section)
    once = readme.read_text()
    update_readme(readme, section)
    assert readme.read_text() == once
    assert once.startswith("# title\n") and once.endswith("\ntail\n") and "old" not in once
