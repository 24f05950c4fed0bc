"""YAML in, validated frozen pydantic models out; every error names file, line and key path.

The document is composed once, from libyaml's events (PyYAML's C parser: ten times faster than
its pure-Python scanner) by PyYAML's Python composer with our limits: the node tree gives each
key path its line and lets us refuse duplicate keys (PyYAML silently keeps the last one), then
the same tree is constructed with safe_load semantics. Every step is bounded, so a hostile or
broken file can only ever be a ConfigError: the file size (MAX_YAML_BYTES), the nesting depth
(MAX_DEPTH) and the node count with aliases expanded (MAX_NODES, "billion laughs").
Validation never touches the network, devices or other files; afterwards every relative
`Path` in the result is anchored at the directory of the YAML file ("paths in a YAML file
are relative to that file").
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml._yaml import CParser
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from facegate.errors import BadInputError, ConfigError
from facegate.files import MIB, read_regular_text

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
# facegate.yaml and enrollment.yaml are a few KiB; 500 people take about 100 KiB.
MAX_YAML_BYTES: Final = MIB
# Real files nest 5 levels deep; PyYAML composes recursively and hits Python's recursion limit
# at about 490 levels, so the depth is refused well before that.
MAX_DEPTH: Final = 64
# Nodes once every alias is expanded (each time it is reached, as the constructor and pydantic
# see them): an enrollment of 500 people is about 10,500; a 400-byte alias bomb is millions.
# The composer stops at the same count: 100,000 plain nodes take about 0.5 s to compose here.
MAX_NODES: Final = 100_000


class ConfigValidationError(ConfigError):
    """A config file is invalid; `lines` holds one `FILE:LINE: key.path: message` per error.

    The first error is in `source`/`line`/`field`; str(error) is all lines, one per error.
    """

    def __init__(self, source: str | Path, errors: list[tuple[int, str, str]]) -> None:
        line, field, message = errors[0]
        self.lines = tuple(f"{source}:{ln}: {fld}: {msg}" for ln, fld, msg in errors)
        rest = "".join("\n" + text for text in self.lines[1:])
        super().__init__(source, message + rest, field=field, line=line)


class ConfigFileError(ConfigError):
    """The config file itself cannot be read: missing, not a regular file, too large, not UTF-8.

    check-config tells this apart from an error inside the file to name the key that gave the
    path (`enrollment:` in facegate.yaml)."""


class _Loader(Composer, CParser, SafeConstructor, Resolver):
    """SafeLoader without YAML 1.1 base-60 numbers, with a depth limit and located errors.

    libyaml parses (its reader refuses control characters, its parser keeps its own stack);
    the Python composer comes first in the MRO so that every node passes `compose_node`
    below, where the limits are (libyaml's own composer would recurse in C, unbounded).
    """

    def __init__(self, stream: str, path: Path) -> None:
        CParser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._path = path
        self._depth = 0
        self._nodes = 0
        self._loc: list[str | int] = []  # the key path being composed, for errors

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # PyYAML recurses once per level: refuse deep nesting before Python's stack runs out,
        # and stop composing a huge flat file early (about 5 us and 700 bytes per node).
        if self._depth >= MAX_DEPTH:
            self._refuse(f"nested more than {MAX_DEPTH} levels deep")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            self._refuse(f"more than {MAX_NODES} YAML nodes")
        # `index` is the item number in a sequence, the key node for a mapping value.
        part: object = index.value if isinstance(index, yaml.ScalarNode) else index
        pushed = False
        if isinstance(part, str | int):
            self._loc.append(part)
            pushed = True
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        except yaml.MarkedYAMLError as exc:
            self.refuse_libyaml_depth(exc)
            raise
        finally:
            self._depth -= 1
            if pushed:
                self._loc.pop()

    def _refuse(self, message: str, line: int | None = None) -> NoReturn:
        if line is None:
            event = self.peek_event()  # the node being refused
            line = int(event.start_mark.line) + 1 if event and event.start_mark else None
        raise ConfigError(self._path, message, field=short_loc(tuple(self._loc)), line=line)

    def refuse_libyaml_depth(self, exc: yaml.MarkedYAMLError) -> None:
        """libyaml stops at 1,000 open brackets while looking ahead for a `[a]: b` key,
        before our composer gets to MAX_DEPTH: the same refusal, at the key being composed."""
        if exc.problem == "exceeded maximum nesting depth" and exc.problem_mark is not None:
            self._refuse(f"nested more than {MAX_DEPTH} levels deep", exc.problem_mark.line + 1)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's scalar constructors raise bare ValueError/KeyError/AttributeError on values
        # their own resolver let through (`0x_`, `!!bool maybe`, `!!timestamp x`, 5,000 digits).
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError):
            tag = str(node.tag).rsplit(":", 1)[-1]
            value = _describe(node.value) if isinstance(node.value, str) else "this node"
            problem = f"cannot read {value} as {tag}"
            raise ConstructorError(None, None, problem, node.start_mark) from None


# YAML 1.1 reads `22:00` as the integer 1320 (sexagesimal); schedules need the string.
# Copy the resolver table so SafeLoader itself stays untouched.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int",)]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
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
        return SafeConstructor.construct_yaml_timestamp(loader, node)  # type: ignore[arg-type]
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


def require_unique(keys: Sequence[str], key: str, message: Callable[[int], str]) -> None:
    """Refuse the first repeated key, pointing at `(its index, key)`; `message` gets the
    index where it was first given."""
    first: dict[str, int] = {}
    for index, value in enumerate(keys):
        if value in first:
            raise located_error((index, key), message(first[value]), value)
        first[value] = index


def read_text(path: Path) -> str:
    """The file as UTF-8 text, or ConfigFileError saying why not (at most MAX_YAML_BYTES read)."""
    try:
        return read_regular_text(path, MAX_YAML_BYTES)
    except BadInputError as exc:
        raise ConfigFileError(path, exc.detail, field=exc.field, line=exc.line) from None


def parse_yaml(path: Path, text: str) -> tuple[Any, LineMap]:
    """Parse `text` (from `path`): the data and a map of key path -> 1-based line."""
    walker = _Walker(path)
    loader: _Loader | None = None
    try:
        loader = _Loader(text, path)  # the reader refuses control characters right here
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(path, "top level must be a mapping of keys", line=_line(node))
        walker.lines[()] = _line(node)
        walker.walk(node, ())  # before constructing: it refuses what would not fit in memory
        return loader.construct_document(node), walker.lines
    except yaml.MarkedYAMLError as exc:
        if loader is not None:  # libyaml can stop before the first node: `[[[[...`
            loader.refuse_libyaml_depth(exc)
        raise _located(path, exc, walker.lines) from None
    except yaml.reader.ReaderError as exc:
        # libyaml counts the position in UTF-8 bytes.
        line = text.encode()[: exc.position].count(b"\n") + 1
        message = f"character U+{exc.character:04X} is not allowed in YAML"
        raise ConfigError(path, message, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"YAML error: {exc}") from None
    except RecursionError:  # the limits above should make this unreachable; never a crash
        raise ConfigError(path, "YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _located(path: Path, exc: yaml.MarkedYAMLError, lines: LineMap) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = " ".join(p for p in (exc.context, exc.problem) if p)
    kind = "YAML value error" if isinstance(exc, ConstructorError) else "YAML syntax error"
    return ConfigError(path, f"{kind}: {problem}", field=_key_on_line(lines, line), line=line)


def _key_on_line(lines: LineMap, line: int | None) -> str | None:
    """The deepest key path given on `line` (constructor errors only carry a line)."""
    found = [loc for loc, at in lines.items() if at == line and loc]
    return format_loc(max(found, key=len)) if found else None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Walker:
    """Records the line of every key path; refuses duplicate keys, cycles, NUL characters
    and documents that would be too deep or too large once their aliases are expanded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: LineMap = {}
        self.nodes = 0

    def walk(
        self, node: yaml.Node, loc: Loc, above: frozenset[int] = frozenset(), record: bool = True
    ) -> None:
        """Walk `node` at `loc` below the nodes `above`; `record` False: count and check only."""
        self._enter(node, loc, above)
        above = above | {id(node)}
        if isinstance(node, yaml.MappingNode):
            self._walk_mapping(node, loc, above, record)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                if record:
                    self.lines[(*loc, index)] = _line(item)
                self.walk(item, (*loc, index), above, record)

    def _walk_mapping(
        self, node: yaml.MappingNode, loc: Loc, above: frozenset[int], record: bool
    ) -> None:
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                # Merge keys (<<) and complex keys have no line of their own to report, but
                # the constructor expands what they hold all the same: count it.
                self.walk(key_node, loc, above, record=False)
                self.walk(value_node, loc, above, record=False)
                continue
            key = str(key_node.value)
            self._enter(key_node, (*loc, key), above)
            if key in first_seen:
                raise self._error(
                    f"duplicate key {key!r} (first given on line {first_seen[key]})",
                    (*loc, key),
                    key_node,
                )
            first_seen[key] = _line(key_node)
            if record:
                self.lines[(*loc, key)] = _line(key_node)
            self.walk(value_node, (*loc, key), above, record)

    def _enter(self, node: yaml.Node, loc: Loc, above: frozenset[int]) -> None:
        if id(node) in above:  # `&a [*a]` composes into a cycle; nothing could validate it
            raise self._error("recursive YAML alias", loc, node)
        if len(above) >= MAX_DEPTH:  # aliases can nest deeper than the text does
            raise self._error(f"nested more than {MAX_DEPTH} levels deep", loc, node)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            message = f"YAML expands to more than {MAX_NODES} nodes (alias bomb?)"
            raise self._error(message, loc, node)
        self._check_scalar(node, loc)

    def _check_scalar(self, node: yaml.Node, loc: Loc) -> None:
        # No path, topic or name can hold a NUL: the OS and MQTT would cut or refuse it later.
        if isinstance(node, yaml.ScalarNode) and "\x00" in node.value:
            raise self._error("NUL character in a value", loc, node)

    def _error(self, message: str, loc: Loc, node: yaml.Node) -> ConfigError:
        return ConfigError(self.path, message, field=short_loc(loc), line=_line(node))


def format_loc(loc: Loc) -> str:
    """`("cameras", 0, "fps")` -> `cameras[0].fps`; the empty path is `(top level)`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def short_loc(loc: Loc, keep: int = 8) -> str:
    """`format_loc` of at most the first `keep` parts (a 64-level path is no help to read)."""
    return format_loc(loc) if len(loc) <= keep else format_loc(loc[:keep]) + "..."


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
    # TODO(issue 11): move up to the module's imports (no cycle: facegate.redact is
    # stdlib-only); local only while the rest of loader.py is edited in parallel.
    from facegate.redact import redact_url

    # Never echo a password given inside a URL (rtsp://user:secret@cam/, ?pwd=secret).
    text = redact_url(repr(value))
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
    # os.path.expanduser leaves `~nosuchuser/x` as it is (Path.expanduser raises
    # RuntimeError): check-config then names the path it cannot find.
    expanded = Path(os.path.expanduser(value))
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
