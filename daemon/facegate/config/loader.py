"""YAML in, validated frozen pydantic models out; every error names file, line and key path.

The document is composed once with a SafeLoader subclass: the node tree gives each key path
its line and lets us refuse duplicate keys (PyYAML silently keeps the last one), then the
same tree is constructed with safe_load semantics. Validation never touches the network,
devices or other files; afterwards every relative `Path` in the result is anchored at the
directory of the YAML file ("paths in a YAML file are relative to that file").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml.constructor import ConstructorError

from facegate.errors import ConfigError

logger = logging.getLogger(__name__)

Loc = tuple[str | int, ...]
LineMap = dict[Loc, int]
ModelT = TypeVar("ModelT", bound=BaseModel)

# Context keys a validator may put into a PydanticCustomError (see `located_error`) to point
# at a more precise place than the field it validates, e.g. the duplicate item of a list.
AT_KEY: Final = "at"
GOT_KEY: Final = "got"
_GOT_MAX: Final = 60
_NO_INPUT_TYPES: Final = frozenset({"missing"})
_URL_PASSWORD: Final = re.compile(r"(://[^/@\s:]*:)[^/@\s]*@")


class ConfigValidationError(ConfigError):
    """A config file is invalid; `lines` holds one `FILE:LINE: key.path: message` per error.

    The first error is in `source`/`line`/`field`; str(error) is all lines, one per error.
    """

    def __init__(self, source: str | Path, errors: list[tuple[int, str, str]]) -> None:
        line, field, message = errors[0]
        self.lines = tuple(f"{source}:{ln}: {fld}: {msg}" for ln, fld, msg in errors)
        rest = "".join("\n" + text for text in self.lines[1:])
        super().__init__(source, message + rest, field=field, line=line)


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 base-60 numbers and with located timestamp errors."""


# YAML 1.1 reads `22:00` as the integer 1320 (sexagesimal); schedules need the string.
# Copy the resolver table so SafeLoader itself stays untouched.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int",)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.Node) -> date | datetime:
    # A well-formed but impossible date (2025-02-30) raises a bare ValueError in PyYAML.
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConstructorError(
            None, None, f"invalid date or time {node.value!r}: {exc}", node.start_mark
        ) from exc


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def located_error(at: Loc, message: str, got: object) -> PydanticCustomError:
    """An error for a validator that points below its own field, e.g. at `(2, "door")`."""
    # Braces would be read as template fields by pydantic-core.
    safe = message.replace("{", "(").replace("}", ")")
    return PydanticCustomError("facegate", safe, {AT_KEY: at, GOT_KEY: got})


def first_duplicate(keys: Sequence[str]) -> tuple[int, int] | None:
    """(index of the first repeated key, index where it was first given), or None."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key in first:
            return index, first[key]
        first[key] = index
    return None


def read_text(path: Path) -> str:
    """The file as UTF-8 text, or ConfigError saying why not."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, "is a directory, expected a YAML file") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(path, f"not UTF-8 text (byte {exc.start})", line=line) from None


def parse_yaml(path: Path, text: str) -> tuple[Any, LineMap]:
    """Parse `text` (from `path`): the data and a map of key path -> 1-based line."""
    loader = _Loader(text)
    lines: LineMap = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(path, "top level must be a mapping of keys", line=_line(node))
        lines[()] = _line(node)
        _walk(path, node, (), lines)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        kind = "YAML value error" if isinstance(exc, ConstructorError) else "YAML syntax error"
        field = _key_on_line(lines, line)
        raise ConfigError(path, f"{kind}: {problem}", field=field, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def _key_on_line(lines: LineMap, line: int | None) -> str | None:
    """The deepest key path given on `line` (constructor errors only carry a line)."""
    found = [loc for loc, at in lines.items() if at == line and loc]
    return format_loc(max(found, key=len)) if found else None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _walk(
    path: Path, node: yaml.Node, loc: Loc, lines: LineMap, above: frozenset[int] = frozenset()
) -> None:
    """Record the line of every key path below `node`; refuse duplicate keys and cycles."""
    if id(node) in above:  # `&a [*a]` composes into a cycle; nothing could validate it
        raise ConfigError(path, "recursive YAML alias", field=format_loc(loc), line=_line(node))
    above = above | {id(node)}
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # merge keys (<<) and complex keys: no line of their own to report
            key = str(key_node.value)
            if key in first_seen:
                raise ConfigError(
                    path,
                    f"duplicate key {key!r} (first given on line {first_seen[key]})",
                    field=format_loc((*loc, key)),
                    line=_line(key_node),
                )
            first_seen[key] = _line(key_node)
            lines[(*loc, key)] = _line(key_node)
            _walk(path, value_node, (*loc, key), lines, above)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = _line(item)
            _walk(path, item, (*loc, index), lines, above)


def format_loc(loc: Loc) -> str:
    """`("cameras", 0, "fps")` -> `cameras[0].fps`; the empty path is `(top level)`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def data_loc(data: Any, loc: Loc) -> Loc:
    """The part of a pydantic error location that names keys and indexes of the YAML data.

    Pydantic adds member tags (`date`, `function-after[...]`) to locations inside unions;
    they follow a scalar value, so everything after the first scalar is dropped.
    """
    kept: list[str | int] = []
    current: Any = data
    for part in loc:
        if part == "[key]":  # pydantic's marker for an invalid mapping key: the key itself
            break
        if isinstance(current, Mapping):
            kept.append(part)
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            kept.append(part)
            current = current[part]
        else:
            break
    return tuple(kept)


def nearest_line(lines: LineMap, loc: Loc) -> int:
    """The line of `loc`, or of its nearest ancestor given in the file (for missing keys)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _describe(value: Any) -> str:
    # Never echo a password given inside a URL (rtsp://user:secret@cam/).
    text = _URL_PASSWORD.sub(r"\1***@", repr(value))
    return text if len(text) <= _GOT_MAX else text[: _GOT_MAX - 3] + "..."


def error_line(data: Any, lines: LineMap, error: ErrorDetails) -> tuple[int, str, str]:
    """One pydantic error as (line, key path, `message (got VALUE)`)."""
    ctx = error.get("ctx") or {}
    at = ctx.get(AT_KEY, ())
    loc = data_loc(data, (*error["loc"], *at))
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    value = ctx.get(GOT_KEY, error["input"])
    if error["type"] not in _NO_INPUT_TYPES and not isinstance(value, Mapping | list):
        message += f" (got {_describe(value)})"
    return nearest_line(lines, loc), format_loc(loc), message


def validate(model: type[ModelT], path: Path, data: Any, lines: LineMap) -> ModelT:
    """Validate `data` as `model`; every error becomes one `FILE:LINE: key: message` line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        seen: set[tuple[int, str]] = set()
        errors: list[tuple[int, str, str]] = []
        for error in exc.errors():
            line, field, message = error_line(data, lines, error)
            if (line, field) not in seen:  # union members repeat one problem
                seen.add((line, field))
                errors.append((line, field, message))
        raise ConfigValidationError(path, errors) from None


def anchor_path(value: Path, base_dir: Path) -> Path:
    """`~` expanded; a relative path is taken relative to `base_dir`."""
    expanded = value.expanduser()
    return expanded if expanded.is_absolute() else base_dir / expanded


def anchor_paths(model: ModelT, base_dir: Path) -> ModelT:
    """A copy of `model` (recursively) whose every `Path` field is anchored at `base_dir`."""
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        anchored = _anchor_value(value, base_dir)
        if anchored is not value:
            updates[name] = anchored
    # model_copy skips validation: the anchored values are the validated ones, moved.
    return model.model_copy(update=updates) if updates else model


def _anchor_value(value: Any, base_dir: Path) -> Any:
    if isinstance(value, Path):
        return anchor_path(value, base_dir)
    if isinstance(value, BaseModel):
        return anchor_paths(value, base_dir)
    if isinstance(value, list | tuple):
        items = [_anchor_value(item, base_dir) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return type(value)(items) if changed else value
    if isinstance(value, dict):
        pairs = {key: _anchor_value(item, base_dir) for key, item in value.items()}
        changed = any(pairs[key] is not item for key, item in value.items())
        return pairs if changed else value
    return value


def load_model(model: type[ModelT], path: str | Path) -> tuple[ModelT, LineMap]:
    """Read, parse, validate and anchor one YAML file; returns the model and its line map."""
    file = Path(path).expanduser()
    text = read_text(file)
    data, lines = parse_yaml(file, text)
    result = validate(model, file, data, lines)
    base_dir = file.absolute().parent
    logger.debug("loaded %s as %s", file, model.__name__)
    return anchor_paths(result, base_dir), lines


def iter_lines(error: ConfigError) -> Iterator[str]:
    """Every `FILE:LINE: ...` line of a config error (one for plain ConfigErrors)."""
    if isinstance(error, ConfigValidationError):
        yield from error.lines
    else:
        yield str(error)
