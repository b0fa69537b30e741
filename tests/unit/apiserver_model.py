"""What the API server does with a CRD schema, modelled for fast unit tests.

The cluster tier checks the real kube-apiserver; this module lets a property-based test run
thousands of objects through the same three steps in seconds: structural defaulting (the
generator's own, which also fills the CRD's object defaults), OpenAPI validation with strict
field checking (unknown fields refused, as with ``kubectl apply --validate=strict``), and the
``x-kubernetes-validations`` CEL rules, evaluated by a real CEL interpreter (cel-python).
"""

from __future__ import annotations

from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel

from optiserve.crd import structural_defaults


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 structural schema -> Draft 4 JSON Schema with unknown fields refused."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes") or key in ("default", "description"):
            continue
        if key == "properties":
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in node and "additionalProperties" not in node and out.get("properties"):
        # metadata is the only free-form object; everything else is closed.
        out["additionalProperties"] = False
    return out


_ENV = celpy.Environment()


def failed_rules(schema: dict[str, Any], value: Any, path: str = "") -> list[tuple[str, str]]:
    """(fieldPath, message) of every CEL rule that does not hold, anywhere in ``value``."""
    failures: list[tuple[str, str]] = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = _ENV.program(_ENV.compile(rule["rule"]))
        if not bool(program.evaluate({"self": json_to_cel(value)})):
            failures.append((path + rule.get("fieldPath", ""), rule["message"]))
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                failures += failed_rules(sub, value[name], f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                failures += failed_rules(extra, item, f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            failures += failed_rules(schema["items"], item, f"{path}[{i}]")
    return failures


def admit(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Problems the API server would report for ``obj``; empty when it would be stored."""
    problems: list[str] = []
    for error in jsonschema.Draft4Validator(to_json_schema(schema)).iter_errors(obj):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "additionalProperties":
            known = error.schema.get("properties", {})
            problems += [f"{path}.{k}: unknown field" for k in error.instance if k not in known]
        else:
            problems.append(f"{path}: {error.message}")
    if problems:
        return problems
    defaulted = structural_defaults(schema, obj)
    return [f"{path}: {message}" for path, message in failed_rules(schema, defaulted)]
