"""values.yaml and values.schema.json, without helm: every key documented, the schema and the
file describe the same keys, the defaults validate, and the schema refuses unknown keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.helm import CHART

VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"


def _values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(VALUES.read_text())
    return loaded


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def _key_lines(text: str) -> Iterator[tuple[int, str, int]]:
    """(line number, key, indent) of every mapping key line of a block-style YAML file."""
    for number, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        yield number, stripped.split(":", 1)[0], len(line) - len(line.lstrip())


def test_every_key_has_a_comment_above_it_or_its_parent_block() -> None:
    lines = VALUES.read_text().splitlines()
    undocumented = []
    for number, key, indent in _key_lines(VALUES.read_text()):
        previous = lines[number - 1].strip() if number else ""
        # A key is documented by the comment right above it (helm-docs' convention).
        if not previous.startswith("#"):
            undocumented.append(f"{key} (line {number + 1}, indent {indent})")
    assert undocumented == []


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        if sub.get("type") == "object" and "properties" in sub:
            paths |= _schema_paths(sub, path + ".")
    return paths


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Paths of values.yaml, descending only where the schema lists properties (free-form maps
    such as resources or nodeSelector end the walk)."""
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths.add(path)
        sub = (schema.get("properties") or {}).get(key) or {}
        if isinstance(value, dict) and "properties" in sub and sub.get("type") == "object":
            paths |= _value_paths(value, sub, path + ".")
    return paths


def test_schema_and_values_describe_the_same_keys() -> None:
    schema = _schema()
    assert _value_paths(_values(), schema) == _schema_paths(schema)


def _objects(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if schema.get("type") == "object" and "properties" in schema:
        yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            yield from _objects(sub, f"{path}.{key}")
    for key, sub in (schema.get("definitions") or {}).items():
        yield from _objects(sub, f"#/definitions/{key}")


def test_every_object_with_properties_refuses_unknown_keys() -> None:
    loose = [
        path for path, node in _objects(_schema()) if node.get("additionalProperties") is not False
    ]
    assert loose == []


def test_the_defaults_validate() -> None:
    jsonschema.validate(_values(), _schema())


@pytest.mark.parametrize(
    "change",
    [
        {"replicaCounts": 1},
        {"image": {"repository": "x", "tagg": "1"}},
        {"metrics": {"serviceMonitor": {"enable": True}}},
        {"optimizer": {"image": {"repository": "x", "tag": "latest"}}},
        {"resources": {"request": {"cpu": "1"}}},
    ],
)
def test_the_schema_refuses(change: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**_values(), **change}, _schema())


def test_chart_version_and_app_version_follow_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject
    assert chart["version"] == "0.1.0"


def test_crds_are_optiserves_only() -> None:
    """kopf's peering CRDs are no longer shipped: several replicas elect a leader on a Lease."""
    names = [
        doc["metadata"]["name"]
        for path in sorted((CHART / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert names and set(names) == {"optimizedmodels.optiserve.io"}, names
