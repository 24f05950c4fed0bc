"""Load a TFLite interpreter from the first runtime available.

Order (DESIGN.md): ai_edge_litert (XNNPACK, numpy 2), then tflite_runtime, then
tensorflow.lite. FACEGATE_TFLITE_RUNTIME forces one, for benchmarks.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from facegate.errors import ModelError
from facegate.memory import MADV_DONTNEED, libc_madvise

logger = logging.getLogger(__name__)

# (runtime name, module to import, attribute path of the Interpreter class in it)
RUNTIMES: Final = (
    ("ai_edge_litert", "ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow", "tensorflow", "lite.Interpreter"),
)


def _interpreter_class() -> tuple[str, Any]:
    forced = os.environ.get("FACEGATE_TFLITE_RUNTIME")
    for name, module_name, attribute in RUNTIMES:
        if forced and forced != name:
            continue
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        for part in attribute.split("."):
            found = getattr(found, part)
        return name, found
    wanted = forced or "ai-edge-litert, tflite-runtime or tensorflow"
    raise ModelError(f"no TFLite runtime importable ({wanted}): pip install ai-edge-litert")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a model file: the fingerprint that ties a gallery to its models."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def runtime_name() -> str:
    """Name of the runtime load_interpreter() will use."""
    return _interpreter_class()[0]


def load_interpreter(path: Path, threads: int) -> Any:
    """An allocated interpreter for the model file at `path`, with `threads` CPU threads."""
    if not path.is_file():
        raise ModelError(f"{path}: model file missing; build it with `make models`")
    name, interpreter_cls = _interpreter_class()
    try:
        interpreter = interpreter_cls(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: not a loadable TFLite model ({exc})") from exc
    logger.info("loaded %s with %s (%d threads)", path.name, name, threads)
    if _one_partition_for_all(*_partitions(interpreter)):
        released = release_file_pages(path)
        logger.debug("%s: %.1f MB of the mapped model file released", path.name, released / 2**20)
    return interpreter


def release_file_pages(path: Path) -> int:
    """Drop this process's resident pages of every read-only mapping of the file `path`;
    returns the bytes advised (0 off Linux or when nothing maps it).

    The interpreter maps its model file (read-only, shared). Once XNNPACK has packed the
    weights into its own buffers (allocate_tensors), the mapping is no longer read, yet it
    stays resident: the int8 FaceNet is 23 MB of it. The pages of a read-only shared file
    mapping are the file's own, so dropping them loses nothing: a page touched again is
    read back from the file."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    target = str(path.resolve())
    advise = libc_madvise()
    released = 0
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        # Only read-only shared ones: a private mapping may hold private copies of changed
        # pages (mprotect then write), which dropping would silently undo.
        if len(fields) < 6 or fields[5] != target or fields[1][1:4:2] != "-s":
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if advise is not None and advise(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
    return released


def check_input_shape(
    interpreter: Any, path: Path, expected: tuple[int, ...], role: str
) -> dict[str, Any]:
    """The first input's details if its shape is `expected`; else a ModelError naming the
    file, its role and both shapes (a model file put in another model's place)."""
    detail: dict[str, Any] = interpreter.get_input_details()[0]
    found = tuple(int(n) for n in detail["shape"])
    if found != expected:
        raise ModelError(
            f"{path}: not a {role} model: expected input shape {expected}, found {found}"
            f"{_outputs_text(interpreter)}"
        )
    return detail


def output_by_shape(interpreter: Any, last_dim: int, path: Path, role: str) -> int:
    """Index of the output tensor whose last dimension is `last_dim` (never trust order)."""
    for detail in interpreter.get_output_details():
        if int(detail["shape"][-1]) == last_dim:
            return int(detail["index"])
    raise ModelError(
        f"{path}: not a {role} model: expected an output of shape (..., {last_dim})"
        f"{_outputs_text(interpreter)}"
    )


def _outputs_text(interpreter: Any) -> str:
    shapes = [tuple(int(n) for n in d["shape"]) for d in interpreter.get_output_details()]
    return f" (outputs {', '.join(map(str, shapes))})"


def quantize(values: np.ndarray, detail: dict[str, Any], out: np.ndarray) -> None:
    """Write float `values` into the integer tensor buffer `out` using its scale/zero point."""
    scale, zero = detail["quantization"]
    info = np.iinfo(out.dtype)
    np.clip(np.rint(values / scale + zero), info.min, info.max, out=values)
    out[...] = values


def dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float view of an integer output tensor (identity for float tensors)."""
    if values.dtype == np.float32:
        return values
    scale, zero = detail["quantization"]
    return np.asarray((values.astype(np.float32) - zero) * scale, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class DelegationReport:
    """How a loaded model runs: XNNPACK partitions, nodes left to the reference kernels,
    and the tensor types (an int8 model with a float tensor has a float island)."""

    partitions: int
    undelegated: tuple[str, ...]  # op names of nodes that run outside every partition
    tensor_types: frozenset[str]

    @property
    def fully_delegated(self) -> bool:
        return _one_partition_for_all(self.partitions, self.undelegated)


def delegation_report(interpreter: Any) -> DelegationReport:
    """What XNNPACK took of an allocated interpreter's graph, with its tensor types."""
    partitions, undelegated = _partitions(interpreter)
    types = frozenset(np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details())
    return DelegationReport(partitions, undelegated, types)


def _one_partition_for_all(partitions: int, undelegated: tuple[str, ...]) -> bool:
    """Fully delegated: one XNNPACK partition and no node left outside it."""
    return partitions == 1 and not undelegated


def _partitions(interpreter: Any) -> tuple[int, tuple[str, ...]]:
    """The number of XNNPACK partitions and the op names of nodes outside them.

    The Python API has no execution plan, so this reads the node list (the original nodes
    plus one DELEGATE node per partition) from the wrapper's node accessors, which TFLite's
    own underscored `_get_ops_details` uses too (that one also fetches every tensor's
    details: 10x slower, 80 ms of each engine load): a node runs outside the delegate
    exactly when a partition consumes its output or a graph output comes from it."""
    raw = interpreter._interpreter
    nodes = [
        (raw.NodeName(i), raw.NodeInputs(i), raw.NodeOutputs(i)) for i in range(raw.NumNodes())
    ]
    partitions = [(inputs, outputs) for name, inputs, outputs in nodes if name == "DELEGATE"]
    inside_in = {int(t) for inputs, _ in partitions for t in inputs}
    inside_out = {int(t) for _, outputs in partitions for t in outputs}
    graph_out = {int(d["index"]) for d in interpreter.get_output_details()}
    undelegated = tuple(
        name
        for name, _, outputs in nodes
        if name != "DELEGATE"
        and any(int(t) in inside_in or (int(t) in graph_out and int(t) not in inside_out)
                for t in outputs)
    )  # fmt: skip
    return len(partitions), undelegated
