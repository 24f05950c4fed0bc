"""The session's engine for in-process CLI calls (the CLI loads one at every call)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from facegate.vision.engine import EmbedderKind, FaceEngine


def shared_load(engine: FaceEngine, models_dir: Path) -> Callable[..., FaceEngine]:
    """FaceEngine.load that returns `engine`, already loaded, when called with its models
    folder, the int8 embedder and the default gate, whatever the thread count (a speed knob:
    the session engine runs one); any other arguments load for real. The CLI loads an engine
    at every in-process call that embeds (0.1-0.2 CPU-s)."""
    real_load = FaceEngine.load

    def load(
        folder: Path, embedder: EmbedderKind = "int8", threads: int = 2, *args: Any, **kw: Any
    ) -> FaceEngine:
        if (Path(folder).resolve(), embedder, args, kw) == (models_dir.resolve(), "int8", (), {}):
            return engine
        return real_load(folder, embedder, threads, *args, **kw)

    return load


@contextmanager
def sharing(engine: FaceEngine, models_dir: Path) -> Iterator[None]:
    """Within: FaceEngine.load is `shared_load(engine, models_dir)`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FaceEngine, "load", shared_load(engine, models_dir))
        yield
