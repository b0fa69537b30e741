"""Check OptimizedModel YAML the way the API server will, and say what is wrong where."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from optiserve.api import OptimizedModel

_RULE_FIELD = re.compile(r"^(?:Value error, )?\[(?P<field>[^\]]+)\] (?P<message>.*)$", re.S)


@dataclass(frozen=True)
class Problem:
    source: str  # "file.yaml#2" (document number, from 1)
    path: str  # "spec.optimization.quantization.calibration"
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path or '<document>'}: {self.message}"


def _format_loc(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problem_from_error(source: str, err: Any) -> Problem:
    path = _format_loc(err["loc"])
    message = str(err["msg"])
    rule = _RULE_FIELD.match(message)
    if rule:
        path = f"{path}.{rule['field']}" if path else rule["field"]
        message = rule["message"]
    elif err["type"] == "extra_forbidden":
        message = "unknown field"
    elif err["type"] == "missing":
        message = "required field is missing"
    elif err["type"] == "literal_error":
        message = f"{message}; got {err['input']!r}"
    return Problem(source, path, message)


def validate_object(obj: Any, source: str) -> tuple[OptimizedModel | None, list[Problem]]:
    if not isinstance(obj, dict):
        return None, [Problem(source, "", f"expected a mapping, got {type(obj).__name__}")]
    try:
        return OptimizedModel.model_validate(obj), []
    except ValidationError as exc:
        return None, [_problem_from_error(source, e) for e in exc.errors()]


def validate_text(text: str, name: str) -> tuple[list[OptimizedModel], list[Problem]]:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        return [], [Problem(name, "", f"not valid YAML: {exc}")]
    if not documents:
        return [], [Problem(name, "", "no YAML document found")]
    models: list[OptimizedModel] = []
    problems: list[Problem] = []
    for index, document in enumerate(documents, start=1):
        model, found = validate_object(document, f"{name}#{index}")
        problems.extend(found)
        if model is not None:
            models.append(model)
    return models, problems


def validate_files(paths: Iterable[Path]) -> tuple[list[OptimizedModel], list[Problem]]:
    models: list[OptimizedModel] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError as exc:
            problems.append(Problem(str(path), "", f"cannot read: {exc.strerror}"))
            continue
        found_models, found_problems = validate_text(text, str(path))
        models.extend(found_models)
        problems.extend(found_problems)
    return models, problems


def report_problems(problems: list[Problem], consequence: str = "") -> bool:
    """Print every problem to stderr, then a count; True when there was any."""
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found{consequence}", file=sys.stderr)
    return bool(problems)


def load_one(path: Path) -> OptimizedModel:
    """The single OptimizedModel in ``path``; raises ``InvalidSpecError`` listing the problems."""
    models, problems = validate_files([path])
    if problems:
        raise InvalidSpecError(problems)
    if len(models) != 1:
        raise InvalidSpecError([Problem(str(path), "", f"expected 1 document, got {len(models)}")])
    return models[0]


class InvalidSpecError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
