"""The chart's dashboards are the generated ones, and its ConfigMaps carry the sidecar label."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.chart.dashboards import DASHBOARDS, as_bool, dashboard_text, dashboards, expressions
from tests.chart.helm import parse_documents, template_text


def test_committed_dashboards_are_the_generated_ones() -> None:
    for name, content in dashboards().items():
        assert (DASHBOARDS / name).read_text() == dashboard_text(content), (
            f"{name} drifted: run python -m tests.chart.dashboards"
        )


@pytest.mark.usefixtures("helm")
def test_dashboards_render_as_sidecar_config_maps_only_when_enabled() -> None:
    def config_maps(values: dict[str, object]) -> list[dict[str, Any]]:
        return [
            d
            for d in parse_documents(template_text(values))
            if d.get("kind") == "ConfigMap" and str(d["metadata"]["name"]).endswith("-dashboard")
        ]

    assert config_maps({}) == []
    maps = config_maps({"dashboards.enabled": True, "dashboards.namespace": "monitoring"})
    assert len(maps) == len(dashboards())
    for config_map in maps:
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        (text,) = config_map["data"].values()
        assert len(expressions(json.loads(text))) >= 5


def test_as_bool_rewrites_only_comparisons_with_numbers() -> None:
    expr = 'max by (n) (m{type="Degraded"}) == 1 and on (n) x{a=~"b", c!="d"} > 0.5'
    assert as_bool(expr) == (
        'max by (n) (m{type="Degraded"}) == bool 1 and on (n) x{a=~"b", c!="d"} > bool 0.5'
    )
