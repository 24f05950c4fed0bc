"""FaceNet embedder: aligned 160x160 RGB face -> unit-length vector (128-D for FaceNet)."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Self

import numpy as np

from facegate.errors import ModelError
from facegate.vision.align import FACE_PX
from facegate.vision.runtime import (
    check_input_shape,
    dequantize,
    file_sha256,
    load_interpreter,
    quantize,
)
from facegate.vision.stages import Embedder
from facegate.vision.types import FloatArray, ImageArray, l2_normalize

__all__ = ["FaceNetEmbedder", "FaceNetFloat32Embedder", "file_sha256", "prewhiten"]

INT8_FILE: Final = "facenet_int8.tflite"
FLOAT32_FILE: Final = "facenet_float32.tflite"


def prewhiten(face: ImageArray, out: FloatArray) -> FloatArray:
    """Per-image standardisation, as FaceNet was trained: (x - mean) / max(std, 1/sqrt(n))."""
    np.copyto(out, face, casting="unsafe")
    mean = out.mean()
    std = max(float(out.std()), 1.0 / np.sqrt(out.size))
    out -= mean
    out /= std
    return out


class FaceNetEmbedder(Embedder):
    """Embedder `type: int8`: the full-integer FaceNet TFLite model (any FaceNet-shaped
    file when built directly: 160x160x3 in, one (1, dim) vector out)."""

    model_files = (INT8_FILE,)

    def __init__(self, model_path: Path, threads: int = 2) -> None:
        self.model_path = model_path
        self.fingerprint = file_sha256(model_path)
        self._interpreter = load_interpreter(model_path, threads)
        shape = (1, FACE_PX, FACE_PX, 3)
        self._in = check_input_shape(self._interpreter, model_path, shape, "FaceNet embedder")
        self._out = self._interpreter.get_output_details()[0]
        self.dim = _embedding_dim(model_path, tuple(int(n) for n in self._out["shape"]))
        self._float = np.zeros((FACE_PX, FACE_PX, 3), dtype=np.float32)
        self._tensor = np.zeros((1, FACE_PX, FACE_PX, 3), dtype=self._in["dtype"])

    @classmethod
    def load(cls, models_dir: Path, threads: int) -> Self:
        return cls(models_dir / cls.model_files[0], threads)

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


class FaceNetFloat32Embedder(FaceNetEmbedder):
    """Embedder `type: float32`: the float FaceNet model, the accuracy reference (4x the
    size of int8, slower; never needed at a door)."""

    model_files = (FLOAT32_FILE,)


def _embedding_dim(model_path: Path, shape: tuple[int, ...]) -> int:
    """The embedding length from the output shape (1, dim); anything else is the wrong file."""
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise ModelError(
            f"{model_path}: not a FaceNet embedder model: expected output shape (1, N), "
            f"found {shape}"
        )
    return shape[1]
