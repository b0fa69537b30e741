"""Make pybind11-stubgen's stubs of tensorrt_bindings valid for mypy --strict (stubs.sh runs it).

The generator copies names from the C++ docstrings verbatim: a parameter named ``in`` (a Python
keyword), parameters without a default after one with a default, ``= None`` defaults on
non-optional types, ``...`` for a type it could not name, TensorRT's ``bool`` data type
shadowing the builtin in annotations. The package's pure-Python helpers (``nptype``,
``volume``) get types, and the stub's import of ``tensorrt_libs`` (optiserve's loader,
untyped) goes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HELPERS = {
    "def nptype(trt_type):": "def nptype(trt_type: tensorrt.DataType) -> type[typing.Any]:",
    "def volume(iterable):": "def volume(iterable: typing.Iterable[typing.SupportsInt]) -> int:",
    "def _itemsize(trt_type):": "def _itemsize(trt_type: tensorrt.DataType) -> float | None:",
    "def common_enter(this):": "def common_enter(this: typing.Any) -> typing.Any:",
    "def common_exit(this, exc_type, exc_value, traceback):": (
        "def common_exit("
        "this: typing.Any, exc_type: typing.Any, exc_value: typing.Any, traceback: typing.Any"
        ") -> None:"
    ),
}


# Protocols the bindings implement at run time that introspection cannot see: Dims iterates
# through __getitem__/__len__, IHostMemory exports the buffer protocol (pybind11 def_buffer).
# tests/optimizer/test_tensorrt.py checks both against the real module or engine.
ADDED_MEMBERS = {
    "class Dims:": "    def __iter__(self) -> typing.Iterator[int]: ...",
    "class IHostMemory:": "    def __buffer__(self, flags: int, /) -> memoryview: ...",
}


def split_params(text: str) -> list[str]:
    """Top-level comma split (brackets nest)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def fix_params(params: list[str]) -> list[str]:
    fixed, defaulted = [], False
    for param in params:
        param = re.sub(r"^in:", "in_:", param)
        param = re.sub(r":\s*\.\.\.$", ": typing.Any", param)  # a type stubgen could not name
        if "=" in param and not param.startswith("*"):
            name_type, default = param.split("=", 1)
            if default.strip() == "None" and ":" in name_type and "None" not in name_type:
                name, annotation = name_type.split(":", 1)
                param = f"{name}: {annotation.strip()} | None = None"
            defaulted = True
        elif defaulted and param not in ("*", "/") and not param.startswith("*"):
            param = f"{param} = ..."
        fixed.append(param)
    return fixed


def fix_line(line: str) -> str:
    # The module defines `bool: DataType` (TensorRT's bool type), which shadows the builtin in
    # every annotation below it.
    if not line.startswith("bool:"):
        line = re.sub(r"(?<![\w.'\"])bool\b(?![\w'\"])", "builtins.bool", line)
    line = re.sub(r"-> \.\.\.:", "-> typing.Any:", line)
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*(->.*)?:\s*)$", line)
    if not match:
        return line
    head, params, tail = match.groups()[:3]
    return head + ", ".join(fix_params(split_params(params))) + tail


def main(root: Path) -> None:
    for path in sorted(root.rglob("*.pyi")):
        lines = path.read_text().splitlines()
        out = []
        for line in lines:
            if line.strip() == "import tensorrt_libs as tensorrt_libs":
                continue
            out.append(HELPERS.get(line, fix_line(line)))
            if line in ADDED_MEMBERS:
                out.append(ADDED_MEMBERS[line])
        text = "\n".join(out)
        for module in ("typing", "builtins"):
            if f"\nimport {module}\n" not in text:
                out.insert(1, f"import {module}")
        path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
