"""What the API server does with a CRD schema, modelled for fast unit tests.

The cluster tier checks the real kube-apiserver; this module lets a property-based test run
thousands of objects through the same steps in seconds: JSON decoding (integers are int64;
an integral float counts as an integer), ``metadata`` checked as ``ObjectMeta`` on create,
``status`` dropped on create (the status subresource owns it), structural defaulting (the
generator's own, which also fills the CRD's object defaults), OpenAPI validation with strict
field checking (unknown fields refused, as with ``kubectl apply --validate=strict``), and the
``x-kubernetes-validations`` CEL rules, evaluated by a real CEL interpreter (cel-python).

The metadata checks below are written after k8s.io/apimachinery's validation, apart from
``optiserve.api``'s, so that the property test compares two implementations, not one.
"""

from __future__ import annotations

import re
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel

from optiserve.crd import structural_defaults


def to_json_schema(node: dict[str, Any], name: str = "") -> dict[str, Any]:
    """OpenAPI v3 structural schema -> Draft 4 JSON Schema with unknown fields refused."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes") or key in ("default", "description"):
            continue
        if key == "properties":
            out[key] = {k: to_json_schema(v, k) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("x-kubernetes-int-or-string"):
        # minimum applies to the integers, pattern and maxLength to the strings.
        numeric = {k: out.pop(k) for k in ("minimum", "maximum") if k in out}
        textual = {k: out.pop(k) for k in ("pattern", "maxLength") if k in out}
        out["anyOf"] = [{"type": "integer", **numeric}, {"type": "string", **textual}]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and out.get("properties")
        and name != "metadata"  # ObjectMeta's own keys are checked by metadata_problems
    ):
        out["additionalProperties"] = False
    return out


# k8s.io/apimachinery/pkg/util/validation
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_OBJECT_META_KEYS = {
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
}  # fmt: skip
TOTAL_ANNOTATION_SIZE = 256 * 1024


def is_qualified_name(value: str) -> bool:
    parts = value.split("/")
    if len(parts) == 2:
        prefix, name = parts
        if not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return False
    elif len(parts) == 1:
        name = parts[0]
    else:
        return False
    return 0 < len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _QUALIFIED_NAME.fullmatch(value) is not None)


def metadata_problems(meta: Any) -> list[str]:
    """What ObjectMeta decoding and validation refuse on create (the CRD checks the name)."""
    if not isinstance(meta, dict):
        return ["metadata: must be an object"]
    problems = [f"metadata.{k}: unknown field" for k in meta if k not in _OBJECT_META_KEYS]
    namespace = meta.get("namespace", "default")
    if not isinstance(namespace, str) or not _DNS1123_LABEL.fullmatch(namespace):
        problems.append("metadata.namespace: not a DNS-1123 label")  # no such namespace
    labels = meta.get("labels", {})
    if not isinstance(labels, dict):
        return [*problems, "metadata.labels: must be an object"]
    for key, value in labels.items():
        if not is_qualified_name(key) or not isinstance(value, str) or not is_label_value(value):
            problems.append(f"metadata.labels: invalid label {key!r}")
    annotations = meta.get("annotations", {})
    if not isinstance(annotations, dict):
        return [*problems, "metadata.annotations: must be an object"]
    for key, value in annotations.items():
        if not is_qualified_name(key.lower()) or not isinstance(value, str):
            problems.append(f"metadata.annotations: invalid annotation {key!r}")
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())
    if size > TOTAL_ANNOTATION_SIZE:
        problems.append("metadata.annotations: Too long: must have at most 262144 bytes")
    return problems


def json_problems(value: Any, path: str = "") -> list[str]:
    """What decoding the request body refuses: integers beyond int64."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in json_problems(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in json_problems(v, f"{path}[{i}]")]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return [f"{path}: integer beyond int64"]
    return []


def unknown_fields(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Keys of ``value`` the structural ``schema`` does not declare (strict decoding)."""
    if isinstance(value, list) and "items" in schema:
        return [p for i, v in enumerate(value) for p in unknown_fields(schema["items"], v, path)]
    if not isinstance(value, dict) or "properties" not in schema:
        return []
    found = []
    for key, item in value.items():
        if key in schema["properties"]:
            found += unknown_fields(schema["properties"][key], item, f"{path}.{key}")
        else:
            found.append(f"{path}.{key}: unknown field")
    return found


def _is_integer(checker: Any, instance: Any) -> bool:
    # go-openapi: a float64 with an integral value up to 2^53 is an integer.
    if isinstance(instance, bool):
        return False
    if isinstance(instance, float):
        return instance.is_integer() and abs(instance) <= 2**53
    return isinstance(instance, int)


_VALIDATOR = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


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
    problems = json_problems(obj) + metadata_problems(obj.get("metadata", {}))
    # Strict decoding refuses unknown fields everywhere, status included; then create drops
    # status before validating.
    problems += unknown_fields(schema["properties"]["status"], obj.get("status"), "status")
    obj = {k: v for k, v in obj.items() if k != "status"}
    for error in _VALIDATOR(to_json_schema(schema)).iter_errors(obj):
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
