"""Grafana dashboards shipped in the chart, written from the panel lists below.

``python -m tests.chart.dashboards`` writes ``charts/optiserve/dashboards/*.json``;
tests/chart/test_dashboards.py fails when the committed files differ, and evaluates every
expression against a real Prometheus scraping a real Triton (and the real operator).

Series come from two places. Triton's ``nv_*`` metrics, scraped from the Triton pods (the chart's
PodMonitor or the pods' prometheus.io annotations add ``namespace`` and ``pod``; Triton adds
``model``, which is the OptimizedModel's name). The operator's ``optiserve_*`` metrics
(operator/optiserve_operator/metrics.py). Per-request times divide the rate of a duration
counter by the rate of the matching count, the arithmetic Triton's own docs give; ``clamp_min``
keeps an idle model at 0 rather than NaN.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO_ROOT / "charts" / "optiserve" / "dashboards"
WINDOW = "1m"
SEL = 'namespace=~"$namespace", model=~"$model"'
BY = "sum by (namespace, model)"


def _per_request(duration: str, count: str) -> str:
    """Milliseconds per item: rate of a microsecond counter over the rate of its count."""
    return (
        f"{BY} (rate({duration}{{{SEL}}}[{WINDOW}])) / 1000"
        f" / clamp_min({BY} (rate({count}{{{SEL}}}[{WINDOW}])), 1e-9)"
    )


# The one expression allowed to return nothing: a labelled error counter has no series before
# the first error (the tests check that the operator exposes the family).
ERRORS_BY_TYPE = f"sum by (error) (rate(optiserve_reconcile_errors_total[{WINDOW}]))"

# (title, unit, [(legend, expr)]) per panel.
Panel = tuple[str, str, list[tuple[str, str]]]

TRITON_PANELS: list[Panel] = [
    (
        "Requests per second",
        "reqps",
        [
            ("{{model}} ok", f"{BY} (rate(nv_inference_request_success{{{SEL}}}[{WINDOW}]))"),
            ("{{model}} failed", f"{BY} (rate(nv_inference_request_failure{{{SEL}}}[{WINDOW}]))"),
        ],
    ),
    (
        "Time per request (ms)",
        "ms",
        [
            (
                "{{model}} queue",
                _per_request("nv_inference_queue_duration_us", "nv_inference_request_success"),
            ),
            (
                "{{model}} compute input",
                _per_request(
                    "nv_inference_compute_input_duration_us", "nv_inference_request_success"
                ),
            ),
            (
                "{{model}} compute infer",
                _per_request(
                    "nv_inference_compute_infer_duration_us", "nv_inference_request_success"
                ),
            ),
            (
                "{{model}} compute output",
                _per_request(
                    "nv_inference_compute_output_duration_us", "nv_inference_request_success"
                ),
            ),
            (
                "{{model}} whole request",
                _per_request("nv_inference_request_duration_us", "nv_inference_request_success"),
            ),
        ],
    ),
    (
        "Mean batch size (inferences per execution)",
        "short",
        [
            (
                "{{model}}",
                f"{BY} (rate(nv_inference_count{{{SEL}}}[{WINDOW}]))"
                f" / clamp_min({BY} (rate(nv_inference_exec_count{{{SEL}}}[{WINDOW}])), 1e-9)",
            )
        ],
    ),
    (
        "Pending requests",
        "short",
        [("{{model}}", f"{BY} (nv_inference_pending_request_count{{{SEL}}})")],
    ),
    (
        "Response cache hit rate",
        "percentunit",
        [
            (
                "{{model}}",
                f"{BY} (rate(nv_cache_num_hits_per_model{{{SEL}}}[{WINDOW}]))"
                f" / clamp_min({BY} (rate(nv_cache_num_hits_per_model{{{SEL}}}[{WINDOW}]))"
                f" + {BY} (rate(nv_cache_num_misses_per_model{{{SEL}}}[{WINDOW}])), 1e-9)",
            )
        ],
    ),
    (
        "Serving replicas (Triton pods with the model loaded)",
        "short",
        [("{{model}}", f"count by (namespace, model) (nv_inference_count{{{SEL}}})")],
    ),
]

OPERATOR_PANELS: list[Panel] = [
    (
        "Reconciles per second, by result",
        "ops",
        [("{{result}}", f"sum by (result) (rate(optiserve_reconciles_total[{WINDOW}]))")],
    ),
    (
        "Reconcile errors per second, by type",
        "ops",
        [
            # "or vector(0)": the counter has no series until the first error, and "0" is
            # what a person should see then, not "No data".
            ("all", f"sum(rate(optiserve_reconcile_errors_total[{WINDOW}])) or vector(0)"),
            ("{{error}}", ERRORS_BY_TYPE),
        ],
    ),
    (
        "Reconcile duration p50 / p95 (s)",
        "s",
        [
            (
                f"p{q}",
                f"histogram_quantile(0.{q}, sum by (le) "
                f"(rate(optiserve_reconcile_duration_seconds_bucket[{WINDOW}])))",
            )
            for q in (50, 95)
        ],
    ),
    ("OptimizedModels by phase", "short", [("{{phase}}", "sum by (phase) (optiserve_models)")]),
    ("Work queue depth", "short", [("depth", "sum(optiserve_workqueue_depth)")]),
    (
        "Writes to child objects per second",
        "ops",
        [
            (
                "{{verb}} {{kind}}",
                f"sum by (kind, verb) (rate(optiserve_child_operations_total[{WINDOW}]))",
            )
        ],
    ),
]


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard(uid: str, title: str, panels: list[Panel], variables: bool) -> dict[str, Any]:
    templating: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    ]
    if variables:
        templating += [
            _variable("namespace", "label_values(nv_inference_count, namespace)"),
            _variable("model", 'label_values(nv_inference_count{namespace=~"$namespace"}, model)'),
        ]
    return {
        "uid": uid,
        "title": title,
        "tags": ["optiserve"],
        "schemaVersion": 39,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": templating},
        "panels": [
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title_,
                "gridPos": {"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                    for j, (legend, expr) in enumerate(targets)
                ],
            }
            for i, (title_, unit, targets) in enumerate(panels)
        ],
    }


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        "optiserve-triton.json": dashboard(
            "optiserve-triton", "optiserve / Triton per model", TRITON_PANELS, variables=True
        ),
        "optiserve-operator.json": dashboard(
            "optiserve-operator", "optiserve / operator", OPERATOR_PANELS, variables=False
        ),
    }


def dashboard_text(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, sort_keys=True) + "\n"


def expressions(content: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in content["panels"] for t in panel["targets"]]


# A comparison with a number, not the = of a label matcher (=, !=, =~, !~).
_COMPARISON = re.compile(r"(?<![=!<>])(==|!=|>=|<=|>|<)(?![=~])\s*(?=[-\d.])")


def as_bool(expr: str) -> str:
    """``a > 5 and on (x) b == 0`` -> ``a > bool 5 and on (x) b == bool 0``: an alert's signal
    wherever it exists, firing or not (the tests ask Prometheus for it)."""
    return _COMPARISON.sub(lambda m: f"{m.group(1)} bool ", expr)


def main() -> int:
    DASHBOARDS.mkdir(parents=True, exist_ok=True)
    for name, content in dashboards().items():
        (DASHBOARDS / name).write_text(dashboard_text(content))
        print(f"wrote {DASHBOARDS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
