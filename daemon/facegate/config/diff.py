"""Which settings differ between two loaded configs, as key paths (`cameras[0].fps`)."""

from __future__ import annotations

from pydantic import BaseModel


def changed_paths(old: object, new: object, path: str = "") -> list[str]:
    """Key paths whose values differ; lists of models are compared item by item, and a
    list whose length changed is reported as a whole."""
    if isinstance(old, BaseModel) and type(old) is type(new):
        changed: list[str] = []
        for name in type(old).model_fields:
            below = f"{path}.{name}" if path else name
            changed += changed_paths(getattr(old, name), getattr(new, name), below)
        return changed
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            p for i, (a, b) in enumerate(zip(old, new, strict=True))
            for p in changed_paths(a, b, f"{path}[{i}]")
        ]  # fmt: skip
    return [] if old == new else [path or "(top level)"]
