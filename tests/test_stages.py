"""The vision stages behind their interfaces: registries, wrong model files, what every
observation carries (mesh, crop, refusal code) and the one default models folder."""

from __future__ import annotations

import ast
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import get_args

import cv2
import numpy as np
import pytest

from conftest import REPO, celeb_image
from facegate.config import load_config
from facegate.config.app import ModelsConfig
from facegate.errors import ModelError
from facegate.imageio import load_image
from facegate.paths import INSTALLED_MODELS_DIR
from facegate.vision import engine as engine_module
from facegate.vision.align import FACE_PX
from facegate.vision.embedder import _embedding_dim
from facegate.vision.engine import (
    DETECTORS,
    EMBEDDERS,
    LANDMARKERS,
    LIVENESS_STAGES,
    MODEL_FILES,
    FaceEngine,
    required_model_files,
)
from facegate.vision.landmarks import (
    LEFT_EYE,
    MESH_POINTS,
    RIGHT_EYE,
    roi_to_frame,
    roi_transform,
)
from facegate.vision.liveness import OffLiveness
from facegate.vision.quality import QualityGate
from facegate.vision.stages import Embedder, FaceDetector, Landmarker, LivenessStage, Stage
from facegate.vision.types import (
    Detection,
    FaceEncoding,
    FaceLandmarks,
    ImageArray,
    RefusalReason,
)

#: Same photos as tests/test_quality.py: a three-quarter view, and a hair blob BlazeFace
#: takes for a second face.
TURNED_ELTON_INDEX = 6
MADONNA_WITH_HAIR_BLOB_INDEX = 18


# --- registries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "kind", "field"),
    [
        (DETECTORS, FaceDetector, "detector"),
        (LANDMARKERS, Landmarker, "landmarker"),
        (EMBEDDERS, Embedder, "embedder"),
    ],
)
def test_config_offers_exactly_the_registered_types(
    registry: Mapping[str, type[Stage]], kind: type[Stage], field: str
) -> None:
    """config/app.py is a leaf and lists the type names itself: they must stay the keys."""
    assert set(get_args(ModelsConfig.model_fields[field].annotation)) == set(registry)
    assert all(issubclass(cls, kind) and cls.model_files for cls in registry.values())


def test_defaults_are_the_models_in_use() -> None:
    models = ModelsConfig()
    assert (models.detector, models.landmarker, models.embedder) == (
        "blazeface",
        "facemesh",
        "int8",
    )
    assert required_model_files() == (
        MODEL_FILES["detector_short"],
        MODEL_FILES["landmarks"],
        MODEL_FILES["int8"],
    )
    assert set(LIVENESS_STAGES) == {"off", "passive"} and issubclass(OffLiveness, LivenessStage)


@pytest.mark.parametrize("role", ["detector", "landmarker", "liveness"])
def test_an_unknown_type_is_a_model_error(models_dir: Path, role: str) -> None:
    with pytest.raises(ModelError, match=f"unknown {role} type 'nope' \\(known: "):
        FaceEngine.load(models_dir, **{role: "nope"})  # type: ignore[arg-type]


def test_the_engine_composes_a_liveness_slot_that_does_nothing(engine: FaceEngine) -> None:
    face = engine.encode_one(load_image(celeb_image("madonna")), "madonna")
    assert isinstance(engine.liveness, OffLiveness)
    evidence = engine.liveness.observe(1, face, np.zeros((4, 4, 3), np.uint8))
    assert evidence.live is None and evidence.frames == 0
    engine.liveness.forget(1)


# --- the embedder's size and wrong model files -----------------------------------------------


def test_embedding_size_is_read_from_the_model(engine: FaceEngine) -> None:
    assert engine.embedding_dim == engine.embedder.dim == 128
    assert _embedding_dim(Path("m.tflite"), (1, 512)) == 512
    for shape in ((1, 896, 16), (2, 128), (1, 0)):
        with pytest.raises(ModelError, match=r"m.tflite: .*expected output shape \(1, N\)"):
            _embedding_dim(Path("m.tflite"), shape)


def models_with(tmp_path: Path, models_dir: Path, target: str, source: str) -> Path:
    """A models folder with every real file, except `target` holding a copy of `source`."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in MODEL_FILES.values():
        (folder / name).symlink_to(models_dir / name)
    (folder / target).unlink()
    shutil.copy(models_dir / source, folder / target)
    return folder


@pytest.mark.parametrize(
    ("target", "source", "expected", "found"),
    [
        ("int8", "detector_short", "(1, 160, 160, 3)", "(1, 128, 128, 3)"),
        ("landmarks", "detector_short", "(1, 192, 192, 3)", "(1, 128, 128, 3)"),
        ("detector_short", "landmarks", "(1, 128, 128, 3)", "(1, 192, 192, 3)"),
    ],
)
def test_a_model_of_the_wrong_shape_names_the_file_and_both_shapes(
    tmp_path: Path, models_dir: Path, target: str, source: str, expected: str, found: str
) -> None:
    folder = models_with(tmp_path, models_dir, MODEL_FILES[target], MODEL_FILES[source])
    with pytest.raises(ModelError) as info:
        FaceEngine.load(folder, "int8", 1, full_range_fallback=False)
    message = str(info.value)
    assert message.startswith(f"{folder / MODEL_FILES[target]}: not a ")
    assert f"expected input shape {expected}, found {found}" in message


def test_cli_refuses_a_wrong_model_with_exit_2(tmp_path: Path, models_dir: Path) -> None:
    """The detector file in the embedder's place: one line naming it, no traceback."""
    folder = models_with(tmp_path, models_dir, MODEL_FILES["int8"], MODEL_FILES["detector_short"])
    image = celeb_image("madonna")
    result = subprocess.run(
        [sys.executable, "-m", "facegate", "identify", str(image), "--refs", str(tmp_path),
         "--models", str(folder)],
        capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{folder / MODEL_FILES['int8']}: not a FaceNet embedder model" in result.stderr
    assert "expected input shape (1, 160, 160, 3), found (1, 128, 128, 3)" in result.stderr


# --- observations ----------------------------------------------------------------------------


def test_an_accepted_face_carries_its_mesh_and_the_crop_the_embedder_saw(
    engine: FaceEngine,
) -> None:
    face = engine.encode_one(load_image(celeb_image("jerry_seinfeld")), "jerry")
    assert face.refusal is None and face.quality.refusal is None and face.quality.usable
    assert face.landmarks is not None and face.crop is not None and face.embedding is not None
    mesh = face.landmarks.mesh
    assert mesh.shape == (MESH_POINTS, 3) and mesh.dtype == np.float32
    assert face.crop.shape == (FACE_PX, FACE_PX, 3) and face.crop.dtype == np.uint8
    assert not mesh.flags.writeable and not face.crop.flags.writeable
    np.testing.assert_array_equal(engine.embedder.embed(face.crop), face.embedding)


def test_the_mesh_is_in_frame_pixels(engine: FaceEngine) -> None:
    """The eye centres are the means of their mesh contours; the mesh covers the detected
    face; depth is in the same pixel scale (a face is not deeper than it is wide)."""
    face = engine.encode_one(load_image(celeb_image("madonna", index=2)), "madonna")
    assert face.landmarks is not None
    mesh, (x0, y0, x1, y1) = face.landmarks.mesh, face.detection.box
    np.testing.assert_allclose(mesh[list(RIGHT_EYE), :2].mean(0), face.landmarks.right_eye, 1e-4)
    np.testing.assert_allclose(mesh[list(LEFT_EYE), :2].mean(0), face.landmarks.left_eye, 1e-4)
    width = x1 - x0
    inside = (mesh[:, 0] > x0 - 0.3 * width) & (mesh[:, 0] < x1 + 0.3 * width)
    inside &= (mesh[:, 1] > y0 - 0.5 * width) & (mesh[:, 1] < y1 + 0.3 * width)
    assert inside.all()
    assert np.ptp(mesh[:, 0]) == pytest.approx(width, rel=0.4)
    assert 0.1 * width < np.ptp(mesh[:, 2]) < width


def test_roi_points_map_back_to_the_frame_with_depth_in_frame_pixels() -> None:
    """The mesh model sees a 192 px square turned upright around the face; its points go
    back to where they are in the frame, and depth shrinks by the same scale as x and y."""
    detection = Detection((100.0, 50.0, 300.0, 260.0), np.array([[150, 120], [250, 140]]), 0.9)
    to_roi = roi_transform(detection)
    rng = np.random.default_rng(0)
    frame = np.column_stack([rng.uniform(100, 300, 50), rng.uniform(50, 260, 50)])
    depth = rng.uniform(-40, 40, 50)
    scale = math.hypot(float(to_roi[0, 0]), float(to_roi[0, 1]))  # ROI px per frame px
    roi_xy = cv2.transform(frame[None].astype(np.float32), to_roi)[0]
    roi = np.column_stack([roi_xy, depth * scale]).astype(np.float32)
    back = roi_to_frame(roi, to_roi)
    np.testing.assert_allclose(back[:, :2], frame, atol=1e-3)
    np.testing.assert_allclose(back[:, 2], depth, atol=1e-3)


def _too_small(engine: FaceEngine) -> FaceEncoding:
    image = load_image(celeb_image("madonna", index=2))
    detection = engine.detect(image)[0]
    gate = QualityGate(min_face_px=detection.width + 1)
    small = FaceEngine(engine.detector, engine.landmarker, engine.embedder, None, gate)
    return small.encode_detection(image, detection)


def _not_a_face(engine: FaceEngine) -> FaceEncoding:
    image = load_image(celeb_image("madonna", "train", index=MADONNA_WITH_HAIR_BLOB_INDEX))
    return engine.encode(image)[1]


class EyelessLandmarker(Landmarker):
    """A landmark model that finds a face but places its eyes nowhere (NaN): a fake at the
    Landmarker seam, around the real one."""

    def __init__(self, real: Landmarker) -> None:
        self.fingerprint = real.fingerprint
        self._real = real

    @classmethod
    def load(cls, models_dir: Path, threads: int) -> EyelessLandmarker:
        raise NotImplementedError

    def locate(self, image: ImageArray, detection: Detection) -> FaceLandmarks:
        found = self._real.locate(image, detection)
        nan = (math.nan, math.nan)
        return FaceLandmarks(nan, nan, found.yaw_deg, found.face_score, found.mesh)


def _no_eyes(engine: FaceEngine) -> FaceEncoding:
    blind = FaceEngine(engine.detector, EyelessLandmarker(engine.landmarker), engine.embedder)
    return blind.encode(load_image(celeb_image("madonna", index=2)))[0]


def _blurred(engine: FaceEngine) -> FaceEncoding:
    image = load_image(celeb_image("jerry_seinfeld"))
    blurred = cv2.GaussianBlur(image, (0, 0), 4.0 * image.shape[1] / 400)
    return engine.encode(np.asarray(blurred, dtype=np.uint8))[0]


def _turned(engine: FaceEngine) -> FaceEncoding:
    return engine.encode(load_image(celeb_image("elton_john", "train", index=TURNED_ELTON_INDEX)))[
        0
    ]


#: Every refusal path, the code it must carry and whether it ran the landmarks / alignment.
REFUSALS: dict[RefusalReason, tuple[Callable[[FaceEngine], FaceEncoding], bool, bool]] = {
    RefusalReason.TOO_SMALL: (_too_small, False, False),
    RefusalReason.NOT_A_FACE: (_not_a_face, True, False),
    RefusalReason.NO_EYES: (_no_eyes, True, False),
    RefusalReason.BLURRED: (_blurred, True, True),
    RefusalReason.TURNED: (_turned, True, True),
}


def test_every_refusal_reason_has_a_path() -> None:
    assert set(REFUSALS) == set(RefusalReason)


@pytest.mark.parametrize("code", list(RefusalReason), ids=str)
def test_every_refusal_path_yields_its_code(engine: FaceEngine, code: RefusalReason) -> None:
    make, has_landmarks, has_crop = REFUSALS[code]
    face = make(engine)
    assert face.embedding is None and not face.quality.usable
    assert face.refusal is code and face.quality.refusal is code
    assert face.quality.reason  # the sentence for people stays beside the code
    assert (face.landmarks is not None) is has_landmarks
    if face.landmarks is not None:
        assert face.landmarks.mesh.shape == (MESH_POINTS, 3)
    assert (face.crop is not None) is has_crop
    if face.crop is not None:
        assert face.crop.shape == (FACE_PX, FACE_PX, 3)


def test_the_gate_gives_code_and_sentence() -> None:
    gate = QualityGate(min_face_px=80, min_sharpness=0.004, max_yaw_deg=30)
    assert gate.refusal(100, 0.03, 10) is None and gate.problem(100, 0.03, 10) == ""
    for measures, code in (
        ((50, 0.03, 10), RefusalReason.TOO_SMALL),
        ((100, 0.001, 10), RefusalReason.BLURRED),
        ((100, 0.03, 35), RefusalReason.TURNED),
        ((100, 0.03, math.nan), RefusalReason.TURNED),
    ):
        refusal = gate.refusal(*measures)
        assert refusal is not None and refusal[0] is code
        assert refusal[1] == gate.problem(*measures)


# --- one default models folder ---------------------------------------------------------------


def test_a_config_without_models_uses_the_installed_models(tmp_path: Path) -> None:
    """The installer, the CLI and a config without `models:` agree on one folder."""
    path = tmp_path / "facegate.yaml"
    path.write_text(
        "cameras:\n  - door: front\nmqtt:\n  host: 127.0.0.1\n  signing_key_file: hmac.key\n"
    )
    config = load_config(path)
    assert config.models.dir == INSTALLED_MODELS_DIR == Path("/opt/facegate/models")
    assert engine_module.INSTALLED_MODELS_DIR is INSTALLED_MODELS_DIR
    assert "PREFIX=/opt/facegate\n" in (REPO / "scripts/install-pi.sh").read_text()


# --- imports run one way -----------------------------------------------------------------------


def _facegate_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return {name for name in names if name.split(".")[0] == "facegate"}


def test_vision_knows_nothing_downstream_and_paths_is_a_leaf() -> None:
    """vision may use only itself, errors, paths and memory (madvise for model files):
    never camera, MQTT, policy, service or config; paths and memory import nothing of
    facegate."""
    package = REPO / "daemon" / "facegate"
    allowed = ("facegate.vision", "facegate.errors", "facegate.paths", "facegate.memory")
    for module in sorted((package / "vision").glob("*.py")):
        outside = {n for n in _facegate_imports(module) if not n.startswith(allowed)}
        assert outside == set(), module.name
    assert _facegate_imports(package / "paths.py") == set()
    assert _facegate_imports(package / "memory.py") == set()


def test_config_is_a_leaf() -> None:
    """config reads files and validates; it never imports the pipeline, models or I/O."""
    package = REPO / "daemon" / "facegate"
    allowed: tuple[str, ...] = (
        "facegate.config",
        "facegate.errors",
        "facegate.paths",
        "facegate.files",
    )
    allowed += ("facegate.redact",)
    for module in sorted((package / "config").glob("*.py")):
        outside = {n for n in _facegate_imports(module) if not n.startswith(allowed)}
        assert outside == set(), module.name
    for leaf in ("files.py", "redact.py", "errors.py"):
        assert _facegate_imports(package / leaf) <= {"facegate.errors"}, leaf


def test_the_pipeline_and_the_policy_know_nothing_of_cameras_mqtt_or_outputs() -> None:
    package = REPO / "daemon" / "facegate"
    forbidden = ("facegate.camera", "facegate.mqtt", "facegate.outputs", "facegate.service")
    for name in ("pipeline.py", "policy.py", "tracking.py", "decisions.py", "matching.py"):
        inside = {n for n in _facegate_imports(package / name) if n.startswith(forbidden)}
        assert inside == set(), name
