from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiserve.crd import CRD_FILE, crd, crd_yaml

from .apiserver_model import admit
from .specs import INVALID, minimal


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crd_matches_the_models() -> None:
    committed = Path(CRD_FILE).read_text()
    assert committed == crd_yaml(), "crds/ drifted from src/optiserve/api: run `make crd`"


def test_chart_carries_the_same_crd() -> None:
    chart_copy = Path("charts/optiserve/crds/optiserve.io_optimizedmodels.yaml")
    assert chart_copy.read_text() == Path(CRD_FILE).read_text()


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{path}[{i}]")
    return found


def test_schema_is_structural() -> None:
    text = json.dumps(_schema())
    for forbidden in ("$ref", "anyOf", "oneOf", "allOf", '"nullable"', '"title"'):
        assert forbidden not in text
    for path, node in _walk(_schema()):
        if path.endswith("/properties") or path.endswith("x-kubernetes-validations"):
            continue
        if "properties" in node or "items" in node:
            assert node.get("type") in ("object", "array"), path


def test_crd_has_status_scale_and_printer_columns() -> None:
    version = crd()["spec"]["versions"][0]
    assert "status" in version["subresources"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.serving.replicas"
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == [
        "Phase",
        "Precision",
        "Speedup",
        "Baseline",
        "URL",
        "Ready",
        "Stable",
        "Canary",
        "Weight",
        "Age",
    ]
    assert crd()["spec"]["names"]["shortNames"] == ["om"]


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {"type", "status", "reason"}


def test_minimal_spec_is_admitted() -> None:
    assert admit(_schema(), minimal()) == []


@pytest.mark.parametrize(("what", "obj", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_schema_refuses_each_invalid_spec_naming_the_field(
    what: str, obj: dict[str, Any], field: str
) -> None:
    problems = admit(_schema(), obj)
    assert problems, what
    assert any(field in p for p in problems), problems


def test_crd_yaml_round_trips() -> None:
    assert yaml.safe_load(crd_yaml()) == crd()


def test_metrics_printer_columns_read_fields_the_schema_has() -> None:
    columns = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    metrics = _schema()["properties"]["status"]["properties"]["metrics"]["properties"]
    read = [c for c in columns if c["jsonPath"].startswith(".status.metrics.")]
    assert [c["jsonPath"] for c in read] == [".status.metrics.speedup", ".status.metrics.baseline"]
    for column in read:
        assert column["jsonPath"].rsplit(".", 1)[1] in metrics and column["description"]


def test_every_spec_and_status_field_is_described_for_kubectl_explain() -> None:
    """`kubectl explain om.spec...` shows each field's description: none may be missing."""
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, child in (node.get("properties") or {}).items():
            if "description" not in child:
                missing.append(f"{path}.{name}")
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    for part in ("spec", "status"):
        walk(_schema()["properties"][part], part)
    assert missing == []
