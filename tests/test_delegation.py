"""Every model runs whole in XNNPACK, and the int8 embedder is int8 all the way (issue 17,
item 3): on a Pi 5 that is what makes XNNPACK's int8 dot-product kernels do the work."""

from __future__ import annotations

from pathlib import Path

import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from facegate.vision.engine import MODEL_FILES
from facegate.vision.runtime import delegation_report, load_interpreter


@pytest.mark.parametrize("role", sorted(MODEL_FILES))
def test_every_node_of_every_model_is_taken_by_xnnpack(models_dir: Path, role: str) -> None:
    report = delegation_report(load_interpreter(models_dir / MODEL_FILES[role], 2))
    assert report.fully_delegated, (role, report)


def test_the_int8_embedder_has_no_float_island(models_dir: Path) -> None:
    report = delegation_report(load_interpreter(models_dir / MODEL_FILES["int8"], 2))
    assert report.tensor_types <= {"int8", "int32"}, report.tensor_types  # int32: biases


def test_the_check_sees_a_model_run_without_the_delegate(models_dir: Path) -> None:
    interpreter = Interpreter(
        model_path=str(models_dir / MODEL_FILES["int8"]),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    report = delegation_report(interpreter)
    assert report.partitions == 0 and not report.fully_delegated
