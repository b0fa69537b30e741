"""Check OptimizedModel YAML the way the API server will, and say what is wrong where.

``optiserve validate`` and the API server (with the generated CRD) accept the same objects:
the models are validated strictly (no ``"5"`` for an integer, as in JSON), integers must fit
int64, ``metadata`` is checked as the server checks it on create (``generateName`` alone
included), and of ``status`` only unknown keys are refused, as the server ignores the rest of
it on create. ``tests/unit/test_schema_agreement.py`` (generated specs)
and ``tests/cluster/test_validate_agrees_with_apiserver.py`` (the real API server) hold the
two to that. Files are read through :mod:`optiserve.safe_yaml`, so hostile input ends in one
line, in bounded time and memory.

Every problem of a document is reported at once: after the field errors, the cross-field
rules are checked again on the document without the fields found invalid, so a rule broken
elsewhere in the spec is not hidden behind a typo (rules that read a dropped field are not
checked, to report nothing that the fix of the typo could change).
"""

from __future__ import annotations

import copy
import functools
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from optiserve.api import OptimizedModel, OptimizedModelStatus, formats
from optiserve.api.rules import SKIP_RULES, CelRule, RuledModel
from optiserve.crd import models_by_name
from optiserve.safe_yaml import UnreadableYaml, as_json, load_documents, read_text, shorten

# One line per problem; a file with more stops here (a generated file can hold thousands).
MAX_PROBLEMS_PER_FILE = 50

_RULE_LINE = re.compile(r"^\[(?P<field>[^\]]+)\] (?P<message>.*)$")
_UNION_TAGS = {"int": int, "str": str, "constrained-int": int, "constrained-str": str}
# What a pattern means, in words (the regular expressions themselves help nobody).
_PATTERN_HELP = {
    formats.DNS1035_LABEL: "a DNS label: lower-case letters, digits and '-', starting with a "
    "letter (it names the Deployment, Service and Job)",
    formats.DNS1123_LABEL: "a DNS label: lower-case letters, digits and '-'",
    formats.QUANTITY: "a quantity that is not negative, like 500m, 2Gi or 4",
    formats.POSITIVE_QUANTITY_OR_DURATION: "a number above zero (50, 1.5k) or, for queueTime, "
    "a duration (50ms, 500us)",
    formats.IMAGE_REFERENCE: "an image reference like registry.example.com/team/image:tag",
    formats.RELATIVE_PATH: "a relative path (no leading '/', no empty segment)",
}


@dataclass(frozen=True)
class Problem:
    source: str  # "file.yaml#2" (document number, from 1)
    path: str  # "spec.optimization.quantization.calibration"
    message: str

    def __str__(self) -> str:
        return (
            f"{self.source}: {self.path}: {self.message}"
            if self.path
            else (f"{self.source}: {self.message}")
        )


def _format_loc(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _wanted_union_member(err: dict[str, Any]) -> bool:
    """Of the int-or-string union's two errors, keep the one for the type the user wrote."""
    loc = err["loc"]
    tag = loc[-1] if loc else None
    if tag not in _UNION_TAGS:
        return True
    value = err["input"]
    if isinstance(value, bool) or not isinstance(value, int | str):
        return _UNION_TAGS[tag] is str  # neither: one "should be a string" is enough
    return isinstance(value, _UNION_TAGS[tag])


def _messages(err: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, message) pairs for one pydantic error; a rule error may hold several lines."""
    loc = [p for p in err["loc"] if p not in _UNION_TAGS]
    path = _format_loc(loc)
    message = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind == "value_error" and message.startswith("["):
        out = []
        for line in message.splitlines():
            rule = _RULE_LINE.match(line)
            if rule:
                out.append((f"{path}.{rule['field']}" if path else rule["field"], rule["message"]))
        return out
    value = err.get("input")
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "string_pattern_mismatch":
        pattern = str(err.get("ctx", {}).get("pattern", ""))
        wanted = _PATTERN_HELP.get(pattern, f"something matching {shorten(pattern, 60)}")
        message = f"{shorten(repr(value), 60)} is not {wanted}"
    elif kind in ("literal_error", "int_type", "string_type", "float_type", "bool_type"):
        message = f"{message}; got {shorten(repr(value), 60)}"
    return [(path, shorten(message, 300))]


def _rule_problems(errors: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        pm
        for e in errors
        if e["type"] == "value_error" and str(e["msg"]).startswith("Value error, [")
        for pm in _messages(e)
    }


@functools.cache
def _rules_by_message() -> dict[tuple[str, str], CelRule]:
    rules: dict[tuple[str, str], CelRule] = {}
    for model in models_by_name(OptimizedModel).values():
        if issubclass(model, RuledModel):
            for rule in model.rules:
                rules[rule.key] = rule
    return rules


_CEL_MEMBERS = {"all", "exists", "matches", "startsWith", "endsWith", "contains", "size"}


def _fields_read(rule: CelRule) -> list[str]:
    """The fields a rule reads, relative to its object (``self.a.b.all(...)`` -> ``a.b``)."""
    fields = []
    for chain in re.findall(r"self\.([A-Za-z0-9_.]+)", rule.cel):
        parts = chain.split(".")
        cut = next((i for i, p in enumerate(parts) if p in _CEL_MEMBERS), len(parts))
        fields.append(".".join(parts[:cut]))
    return fields


def _overlaps(a: str, b: str) -> bool:
    """One field path is the other or inside it."""
    return a == b or any(
        x.startswith(y) and x[len(y)] in ".[" for x, y in ((a, b), (b, a)) if len(x) > len(y)
    )


def _drop(document: Any, loc: Sequence[int | str]) -> list[int | str]:
    """Remove the value at ``loc`` from ``document``: the innermost mapping entry holding it
    (a whole list for one bad item, so the field's default applies); returns what it removed.
    """
    node: Any = document
    holder: dict[str, Any] | None = None
    key: int | str | None = None
    removed: list[int | str] = []
    walked: list[int | str] = []
    for part in loc:
        if isinstance(node, dict) and part in node:
            holder, key, removed = node, part, [*walked, part]
        elif not (isinstance(node, list) and isinstance(part, int) and part < len(node)):
            break
        walked.append(part)
        node = node[part]
    if holder is not None and key in holder:
        del holder[str(key)]
    return removed


def _hidden_rule_problems(
    document: dict[str, Any], errors: Sequence[dict[str, Any]]
) -> list[tuple[str, str]]:
    """Rule problems that the field errors kept pydantic from checking (see the module doc).

    Each round takes the problems found so far as fixed: fields found invalid are dropped
    (their defaults apply), rules already reported are skipped; a rule that reads a dropped
    field is not reported, since the fix of that field decides it.
    """
    found: list[tuple[str, str]] = []
    seen = _rule_problems(errors)
    skip = set(_rule_keys(errors))
    dropped: list[str] = []
    remaining: Sequence[Any] = errors
    trimmed = copy.deepcopy(document)
    for _ in range(8):  # each round uncovers the rules of enclosing objects, so depth bounds it
        fields = [
            e
            for e in remaining
            if e["type"] != "missing" and not str(e["msg"]).startswith("Value error, [")
        ]
        for err in fields:
            loc = [p for p in err["loc"] if p not in _UNION_TAGS]
            dropped.append(_format_loc(_drop(trimmed, loc) or loc))
        try:
            OptimizedModel.model_validate(trimmed, strict=True, context={SKIP_RULES: skip})
            break
        except ValidationError as exc:
            remaining = exc.errors()
        new_rules = False
        for err in remaining:
            if not str(err["msg"]).startswith("Value error, ["):
                continue
            base = _format_loc(err["loc"])
            for path, message in _messages(dict(err)):
                key = (path.removeprefix(base).lstrip("."), message)
                rule = _rules_by_message().get(key)
                if rule is not None and key not in skip:
                    skip.add(key)
                    new_rules = True
                read = [f"{base}.{f}" if base else f for f in _fields_read(rule)] if rule else []
                touched = any(_overlaps(d, r) for d in dropped for r in read)
                if (path, message) not in seen and not touched:
                    seen.add((path, message))
                    found.append((path, message))
        if not fields and not new_rules:
            break
    return found


def _rule_keys(errors: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(field relative to its object, message) of every rule error, as ``_rules_by_message``."""
    keys = []
    for err in errors:
        if str(err["msg"]).startswith("Value error, ["):
            base = _format_loc(err["loc"])
            for path, message in _messages(err):
                key = (path.removeprefix(base).lstrip("."), message)
                if key in _rules_by_message():
                    keys.append(key)
    return keys


def unknown_fields(model: type[BaseModel], value: Any, path: str) -> list[str]:
    """Paths of keys in ``value`` that ``model`` (and its nested models) do not have."""
    if not isinstance(value, dict):
        return []
    fields = {(f.alias or name): f.annotation for name, f in model.model_fields.items()}
    found = []
    for key, item in value.items():
        if key not in fields:
            found.append(f"{path}.{key}")
            continue
        for nested in _nested_models(fields[key]):
            items = item if isinstance(item, list) else [item]
            for index, element in enumerate(items):
                where = f"{path}.{key}[{index}]" if isinstance(item, list) else f"{path}.{key}"
                found += unknown_fields(nested, element, where)
    return found


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _nested_models(arg)]


# The API server names an object with only generateName by appending 5 random characters
# (to the first 58) before it checks the name; validate checks this stand-in the same way.
GENERATED_SUFFIX = "zzzzz"
_GENERATE_NAME_KEEP = 58


def _stand_in_for_a_generated_name(document: dict[str, Any]) -> None:
    meta = document.get("metadata")
    if isinstance(meta, dict) and "name" not in meta and isinstance(meta.get("generateName"), str):
        meta["name"] = meta["generateName"][:_GENERATE_NAME_KEEP] + GENERATED_SUFFIX


def has_generated_name(model: OptimizedModel) -> bool:
    """The name is a stand-in: the API server will generate the real one."""
    prefix = model.metadata.generate_name
    return prefix is not None and model.metadata.name == (
        prefix[:_GENERATE_NAME_KEEP] + GENERATED_SUFFIX
    )


def display_name(model: OptimizedModel) -> str:
    if has_generated_name(model):
        return f"{model.metadata.generate_name}<generated>"
    return model.metadata.name


def validate_object(obj: Any, source: str) -> tuple[OptimizedModel | None, list[Problem]]:
    if not isinstance(obj, dict):
        return None, [Problem(source, "", f"expected a mapping, got {type(obj).__name__}")]
    document, json_problems = as_json(obj)
    # The API server drops status on create (it is the status subresource's), after its
    # strict decoding has refused unknown fields in it: so does this.
    status = document.pop("status", None)
    problems = [Problem(source, p.path, p.message) for p in json_problems]
    problems += [
        Problem(source, p, "unknown field")
        for p in unknown_fields(OptimizedModelStatus, status, "status")
    ]
    _stand_in_for_a_generated_name(document)
    try:
        model = OptimizedModel.model_validate(document, strict=True)
    except ValidationError as exc:
        errors = [e for e in exc.errors() if _wanted_union_member(dict(e))]
        problems += [Problem(source, p, m) for e in errors for p, m in _messages(dict(e))]
        hidden = _hidden_rule_problems(document, [dict(e) for e in errors])
        problems += [Problem(source, p, m) for p, m in hidden]
        return None, problems
    return (None if problems else model), problems


def validate_text(text: str, name: str) -> tuple[list[OptimizedModel], list[Problem]]:
    try:
        documents = load_documents(text)
    except UnreadableYaml as err:
        return [], [Problem(name, "", str(err))]
    return _validate_documents(documents, name)


def _validate_documents(
    documents: list[Any], name: str
) -> tuple[list[OptimizedModel], list[Problem]]:
    if not documents:
        return [], [Problem(name, "", "no YAML document found")]
    models: list[OptimizedModel] = []
    problems: list[Problem] = []
    for index, document in enumerate(documents, start=1):
        model, found = validate_object(document, f"{name}#{index}")
        problems.extend(found)
        if model is not None:
            models.append(model)
    if len(problems) > MAX_PROBLEMS_PER_FILE:
        more = len(problems) - MAX_PROBLEMS_PER_FILE
        problems = [*problems[:MAX_PROBLEMS_PER_FILE], Problem(name, "", f"{more} more problems")]
    return models, problems


def validate_files(paths: Iterable[Path]) -> tuple[list[OptimizedModel], list[Problem]]:
    models: list[OptimizedModel] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            documents = load_documents(read_text(path))
        except OSError as exc:
            problems.append(Problem(str(path), "", f"cannot read: {exc.strerror or exc}"))
            continue
        except UnreadableYaml as err:
            problems.append(Problem(str(path), "", str(err)))
            continue
        found_models, found_problems = _validate_documents(documents, str(path))
        models.extend(found_models)
        problems.extend(found_problems)
    return models, problems


def report_problems(problems: list[Problem], consequence: str = "") -> bool:
    """Print every problem to stderr, then a count; True when there was any."""
    for problem in problems:
        print(problem, file=sys.stderr)
    if len(problems) > 1:  # one problem stays one line
        print(f"{len(problems)} problems found{consequence}", file=sys.stderr)
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
