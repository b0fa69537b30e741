"""Read YAML from users with bounded time and memory, and the API server's view of the data.

``optiserve validate`` and ``optiserve render`` read files anyone may hand them: binary files,
UTF-16, a billion-laughs bomb, a 5000-digit number. Every such input ends here in one
:class:`UnreadableYaml` with a one-line reason, before anything grows with the input:

* at most :data:`MAX_FILE_BYTES` are read: the API server's own request limit (3 MiB), so
  nothing larger could ever be applied;
* the text must be UTF-8 (a UTF-8 byte order mark is allowed), as kubectl sends it;
* the event stream is checked before any Python object is built: nesting at most
  :data:`MAX_DEPTH` deep, at most :data:`MAX_NODES` nodes *after alias expansion* (an alias
  counts as everything it repeats, so ``&a [*b, *b, ...]`` bombs stop at the limit, not at
  gigabytes), no recursive alias, and no number longer than :data:`MAX_NUMBER_CHARS`
  characters (no int64 or float64 needs more);
* values are read as sigs.k8s.io/yaml reads them for kubectl: timestamps stay strings, and
  integer or boolean mapping keys become strings.

libyaml (``CSafeLoader``) does the parsing when PyYAML has it, the pure-Python loader otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 3 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_NUMBER_CHARS = 100
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_EXACT_FLOAT = float(1 << 53)

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader without YAML 1.1 timestamps: kubectl keeps them as strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


class UnreadableYaml(ValueError):
    """The input is not YAML this tool reads; the message is one line."""


def shorten(text: str, limit: int = 80) -> str:
    """``text`` on one line, cut to ``limit`` characters, so no message echoes a huge value."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_text(path: Path) -> str:
    """The file as text: at most :data:`MAX_FILE_BYTES`, UTF-8."""
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise UnreadableYaml(
            f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the API server's request limit"
        )
    return decode(data)


def decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnreadableYaml("UTF-16 text; save it as UTF-8")
    if b"\x00" in data:
        odd_nuls = data[1::2].count(0) > len(data) // 4
        even_nuls = data[0::2].count(0) > len(data) // 4
        if odd_nuls or even_nuls:
            raise UnreadableYaml("UTF-16 text without a byte order mark; save it as UTF-8")
        raise UnreadableYaml(f"a binary file (NUL byte at offset {data.index(0)}), not YAML")
    try:
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UnreadableYaml(
            f"not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} (line {line})"
        ) from None


def _yaml_error(err: yaml.YAMLError) -> UnreadableYaml:
    if isinstance(err, yaml.MarkedYAMLError):
        what = err.problem or err.context or "invalid"
        where = err.problem_mark or err.context_mark
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        return UnreadableYaml(f"not valid YAML: {shorten(str(what))}{at}")
    return UnreadableYaml(f"not valid YAML: {shorten(str(err))}")


def _line(mark: Any) -> str:
    """`` (line N)`` of a libyaml or pure-Python mark, or nothing without one."""
    return f" (line {mark.line + 1})" if mark is not None else ""


@dataclass
class _Open:
    anchor: str | None
    nodes: int


def check_structure(text: str) -> None:
    """Refuse deep, huge, self-referencing or bomb-like YAML before constructing anything."""
    loader = _Loader(text)
    total = 0
    sizes: dict[str, int] = {}
    stack: list[_Open] = []

    def count(nodes: int, where: Any) -> None:
        nonlocal total
        total += nodes
        if stack:
            stack[-1].nodes += nodes
        if total > MAX_NODES:
            raise UnreadableYaml(
                f"more than {MAX_NODES} YAML nodes once aliases are expanded{_line(where)}; "
                "an OptimizedModel needs a few hundred"
            )

    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise UnreadableYaml(
                        f"nested deeper than {MAX_DEPTH} levels{_line(event.start_mark)}"
                    )
                count(1, event.start_mark)
                stack.append(_Open(event.anchor, 1))
            elif isinstance(event, yaml.CollectionEndEvent):
                done = stack.pop()
                if done.anchor is not None:
                    sizes[done.anchor] = done.nodes
            elif isinstance(event, yaml.ScalarEvent):
                _check_number(loader, event)
                count(1, event.start_mark)
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                if any(o.anchor == event.anchor for o in stack):
                    raise UnreadableYaml(
                        f"recursive alias *{shorten(str(event.anchor), 40)}"
                        f"{_line(event.start_mark)}"
                    )
                count(sizes.get(str(event.anchor), 1), event.start_mark)
    except yaml.YAMLError as err:
        raise _yaml_error(err) from None
    finally:
        loader.dispose()


def _check_number(loader: Any, event: yaml.ScalarEvent) -> None:
    if event.style or len(event.value) <= MAX_NUMBER_CHARS:
        return
    if loader.resolve(yaml.ScalarNode, event.value, (True, False)) in _NUMBER_TAGS:
        raise UnreadableYaml(
            f"a number of {len(event.value)} characters{_line(event.start_mark)}; "
            "the API server takes 64-bit numbers"
        )


def load_documents(text: str) -> list[Any]:
    """Every non-empty document of ``text``, after :func:`check_structure`."""
    check_structure(text)
    loader = _Loader(text)
    try:
        documents = []
        while loader.check_data():
            document = loader.get_data()
            if document is not None:
                documents.append(document)
        return documents
    except yaml.YAMLError as err:
        raise _yaml_error(err) from None
    finally:
        loader.dispose()


def load_file(path: Path) -> list[Any]:
    return load_documents(read_text(path))


@dataclass(frozen=True)
class JsonProblem:
    path: str
    message: str


def as_json(value: Any, path: str = "") -> tuple[Any, list[JsonProblem]]:
    """``value`` as the JSON kubectl sends, and what the API server could not decode.

    Integer and boolean keys become strings (sigs.k8s.io/yaml does so); integers must fit
    int64, floats must be finite (JSON has no NaN or infinity), and an integral float up to
    2^53 is an integer, as go-openapi's validation counts it.
    """
    problems: list[JsonProblem] = []
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _json_key(key)
            out[name], found = as_json(item, f"{path}.{name}" if path else name)
            problems += found
        return out, problems
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            converted, found = as_json(item, f"{path}[{index}]")
            items.append(converted)
            problems += found
        return items, problems
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value, problems
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT_FLOAT:
        # The API server decodes 4.0 as a float64 and takes it where an integer is due.
        return int(value), problems
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        digits = len(str(abs(value)))
        problems.append(JsonProblem(path, f"integer of {digits} digits is beyond int64"))
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append(JsonProblem(path, f"{value} is not a JSON number"))
    elif not isinstance(value, int | float):
        problems.append(JsonProblem(path, f"a YAML {type(value).__name__} has no JSON form"))
    return value, problems


def _json_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)
