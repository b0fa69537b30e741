"""Generate the CustomResourceDefinition from the API models.

Pydantic writes JSON Schema (2020-12); the API server wants a *structural* OpenAPI v3 schema.
This module translates one into the other: ``$ref`` inlined, ``Optional`` unwrapped, numeric
``exclusiveMinimum`` turned into the OpenAPI 3.0 boolean form, int-or-string marked, and each
model's :class:`~optiserve.api.rules.CelRule` list attached as ``x-kubernetes-validations``.
The committed ``crds/optiserve.io_optimizedmodels.yaml`` is this module's output; a unit test
fails when they differ.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from optiserve.api import resource
from optiserve.api.resource import ObjectMeta, OptimizedModelSpec
from optiserve.api.rules import RuledModel
from optiserve.api.status import Metrics, OptimizedModelStatus

CRD_FILE = "crds/optiserve.io_optimizedmodels.yaml"
_DROPPED_KEYS = {"title", "additionalProperties", "$defs"}


def models_by_name(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from ``root``, by the name pydantic uses in ``$defs``."""
    found: dict[str, type[BaseModel]] = {}
    todo: list[type[BaseModel]] = [root]
    while todo:
        model = todo.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for field in model.model_fields.values():
            todo.extend(_nested_models(field.annotation))
    return found


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _nested_models(arg)]


class _Translator:
    def __init__(self, root: type[BaseModel]) -> None:
        self.schema = root.model_json_schema(by_alias=True)
        self.defs: dict[str, Any] = self.schema.get("$defs", {})
        self.models = models_by_name(root)

    def translate(self, node: dict[str, Any], model_name: str | None = None) -> dict[str, Any]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            merged = {**self.defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
            return self.translate(merged, name)
        if "anyOf" in node:
            return self._translate_any_of(node)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS or (key == "default" and value is None):
                continue
            if key == "properties":
                out[key] = {k: self.translate(v) for k, v in value.items()}
            elif key == "items":
                out[key] = self.translate(value)
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                out[bound] = value
                out[key] = True
            elif key == "const":
                out["enum"] = [value]
            else:
                out[key] = value
        if isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = self.translate(node["additionalProperties"])
        if out.get("default") == {} and "properties" in out:
            # The API server checks a default against the schema, CEL rules included, without
            # defaulting inside it first, so an object's default spells out its nested defaults.
            out["default"] = structural_defaults(out, {})
        model = self.models.get(model_name or "")
        if model is not None and issubclass(model, RuledModel) and model.rules:
            out["x-kubernetes-validations"] = [r.as_validation() for r in model.rules]
        return out

    def _translate_any_of(self, node: dict[str, Any]) -> dict[str, Any]:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if node.get("x-kubernetes-int-or-string"):
            # The integer and the string options' own bounds sit side by side: the API server
            # applies minimum/maximum to integers and pattern/maxLength to strings.
            merged = dict(rest)
            for option in options:
                merged |= {k: v for k, v in option.items() if k != "type"}
            return self.translate(merged)
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} in a structural schema")
        return self.translate({**options[0], **rest})


def structural_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with every absent property that has a default filled in, recursively.

    This is what the API server does to an object before validating and storing it.
    """
    if isinstance(value, dict):
        result = dict(value)
        properties = schema.get("properties", {})
        for name, sub in properties.items():
            if name not in result and "default" in sub:
                result[name] = copy.deepcopy(sub["default"])
            if name in result:
                result[name] = structural_defaults(sub, result[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in result:
                if name not in properties:
                    result[name] = structural_defaults(extra, result[name])
        return result
    if isinstance(value, list) and "items" in schema:
        return [structural_defaults(schema["items"], v) for v in value]
    return value


def _name_schema() -> dict[str, Any]:
    """``metadata.name`` as the models constrain it: a DNS label every child name can carry."""
    name = ObjectMeta.model_json_schema(by_alias=True)["properties"]["name"]
    return {k: name[k] for k in ("type", "maxLength", "pattern", "description")}


def openapi_schema() -> dict[str, Any]:
    """The CRD's openAPIV3Schema for the whole object."""
    # The root model's name is passed so its own cross-field rules are attached as well.
    spec = _Translator(OptimizedModelSpec).translate(
        OptimizedModelSpec.model_json_schema(), OptimizedModelSpec.__name__
    )
    status = _Translator(OptimizedModelStatus).translate(
        # Defaulting status makes a new object read as phase Pending, observedGeneration 0,
        # so kstatus (Flux) calls it InProgress instead of Current before the operator acts.
        {**OptimizedModelStatus.model_json_schema(), "default": {}}
    )
    return {
        "type": "object",
        "description": "A model to optimize (prune, quantize, TensorRT) and serve with Triton.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Only name and generateName may be constrained here (structural schema rules);
            # the API server checks the rest of metadata itself.
            "metadata": {"type": "object", "properties": {"name": _name_schema()}},
            "spec": spec,
            "status": status,
        },
    }


def _metrics_column(title: str, field: str) -> dict[str, str]:
    """A printer column read from ``status.metrics``, named and described by the API model."""
    info = Metrics.model_fields[field]
    return {
        "name": title,
        "type": "string",
        "jsonPath": f".status.metrics.{info.alias or field}",
        "description": info.description or "",
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Precision", "type": "string", "jsonPath": ".status.artifact.precision"},
    _metrics_column("Speedup", "speedup"),
    _metrics_column("Baseline", "baseline"),
    {
        "name": "URL",
        "type": "string",
        "jsonPath": ".status.endpoint",
        "description": "Triton's HTTP endpoint: the external URL when exposed, else the "
        "in-cluster one (as KServe's URL column).",
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {
        "name": "Stable",
        "type": "string",
        "jsonPath": ".status.rollout.stableRevision",
        "description": "During a canary: the artifact the stable Deployment serves.",
    },
    {
        "name": "Canary",
        "type": "string",
        "jsonPath": ".status.rollout.canaryRevision",
        "description": "During a canary: the artifact under test.",
    },
    {
        "name": "Weight",
        "type": "integer",
        "jsonPath": ".status.rollout.weight",
        "description": "During a canary: percent of the serving pods on the canary.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.PLURAL}.{resource.GROUP}"},
        "spec": {
            "group": resource.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.KIND,
                "listKind": f"{resource.KIND}List",
                "plural": resource.PLURAL,
                "singular": resource.SINGULAR,
                "shortNames": list(resource.SHORT_NAMES),
                "categories": ["all", "optiserve"],
            },
            "versions": [
                {
                    "name": resource.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.serving.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `optiserve crd` from src/optiserve/api. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
