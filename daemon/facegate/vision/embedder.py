"""FaceNet embedder: aligned 160x160 RGB face -> unit-length 128-D vector."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from facegate.vision.align import FACE_PX
from facegate.vision.runtime import dequantize, load_interpreter, quantize
from facegate.vision.types import EMBEDDING_DIM, FloatArray, ImageArray, l2_normalize


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prewhiten(face: ImageArray, out: FloatArray) -> FloatArray:
    """Per-image standardisation, as FaceNet was trained: (x - mean) / max(std, 1/sqrt(n))."""
    np.copyto(out, face, casting="unsafe")
    mean = out.mean()
    std = max(float(out.std()), 1.0 / np.sqrt(out.size))
    out -= mean
    out /= std
    return out


class FaceNetEmbedder:
    """Runs the float32 or full-integer int8 FaceNet TFLite model."""

    def __init__(self, model_path: Path, threads: int = 2) -> None:
        self.model_path = model_path
        self.fingerprint = file_sha256(model_path)
        self._interpreter = load_interpreter(model_path, threads)
        self._in = self._interpreter.get_input_details()[0]
        self._out = self._interpreter.get_output_details()[0]
        if tuple(self._in["shape"]) != (1, FACE_PX, FACE_PX, 3):
            raise ValueError(f"{model_path}: expected input (1, {FACE_PX}, {FACE_PX}, 3)")
        if int(self._out["shape"][-1]) != EMBEDDING_DIM:
            raise ValueError(f"{model_path}: expected a {EMBEDDING_DIM}-D output")
        self._float = np.zeros((FACE_PX, FACE_PX, 3), dtype=np.float32)
        self._tensor = np.zeros((1, FACE_PX, FACE_PX, 3), dtype=self._in["dtype"])

    @property
    def quantized(self) -> bool:
        return bool(self._tensor.dtype != np.float32)

    def embed(self, face: ImageArray) -> FloatArray:
        """Unit embedding of one aligned face (a new array the caller may keep)."""
        prewhiten(face, self._float)
        if self.quantized:
            quantize(self._float, self._in, self._tensor[0])
        else:
            self._tensor[0] = self._float
        self._interpreter.set_tensor(self._in["index"], self._tensor)
        self._interpreter.invoke()
        raw = dequantize(self._interpreter.get_tensor(self._out["index"])[0], self._out)
        return l2_normalize(np.array(raw, dtype=np.float32))
