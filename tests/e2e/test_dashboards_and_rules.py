"""Every PromQL expression the chart ships, evaluated against a real Prometheus over real metrics.

A real local Triton (the digits CNN with the response cache) under load, and the real operator
reconciling two OptimizedModels on the local control plane (one of them Stalled), are scraped by
a real Prometheus. Each dashboard panel's expression must parse and return series. Each alert
rule's expression is asked with its comparisons made ``bool`` ones (``x > 50`` becomes
``x > bool 50``): the answer then has a series wherever the signal exists, firing or not, so
an alert over a misspelt metric or label (which would never fire) fails here.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve.serve import LocalTriton
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.example_models import digits_samples
from optiserve_testing.processes import free_ports
from optiserve_testing.prometheus import LocalPrometheus, find_prometheus
from optiserve_testing.waiting import wait_until
from tests.chart.dashboards import ERRORS_BY_TYPE, as_bool, dashboards, expressions
from tests.chart.helm import parse_documents, template_text
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.triton.conftest import MODEL, cached_server, digits_model, make_repository

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.models, pytest.mark.timeout(600)]
__all__ = ["cached_server", "digits_model", "make_repository"]  # fixtures, used by name

NAMESPACE = "observe"


def rule_expressions() -> dict[str, str]:
    text = template_text({"prometheusRule.enabled": True})
    rules = [d for d in parse_documents(text) if d.get("kind") == "PrometheusRule"]
    assert len(rules) == 1
    return {
        rule["alert"]: rule["expr"]
        for group in rules[0]["spec"]["groups"]
        for rule in group["rules"]
    }


class Load:
    """Closed-loop gRPC requests to Triton: half repeat one sample (cache hits), half do not."""

    def __init__(self, server: LocalTriton) -> None:
        self.server = server
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import tritonclient.grpc as grpcclient

        samples = digits_samples(64)
        with grpcclient.InferenceServerClient(self.server.grpc_url) as triton:
            i = 0
            while not self.stop.is_set():
                sample = samples[0 if i % 2 else i % len(samples)]
                requests = []
                for name, array in sample.items():
                    request = grpcclient.InferInput(name, list(array.shape), "FP32")
                    request.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.float32))
                    requests.append(request)
                triton.infer(MODEL, requests)
                i += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def scrape_config(triton_metrics: str, operator_port: int) -> dict[str, Any]:
    target = urllib.parse.urlparse(triton_metrics)
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "triton",
                "static_configs": [
                    {
                        "targets": [target.netloc],
                        # What the PodMonitor / annotation job adds to a Triton pod's series.
                        "labels": {"namespace": NAMESPACE, "pod": "digits-triton-0"},
                    }
                ],
            },
            {
                "job_name": "operator",
                "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"]}],
            },
        ],
    }


@pytest.fixture
def prometheus(
    cluster: LocalCluster, cached_server: LocalTriton, tmp_path: Path
) -> Iterator[tuple[LocalPrometheus, int]]:
    """A real Prometheus scraping the Triton server and a real operator (--metrics-port)."""
    find_prometheus()
    (port,) = free_ports(1)
    (tmp_path / "operator").mkdir()
    operator = OperatorProcess(
        cluster, tmp_path / "operator", extra_args=["--metrics-port", str(port)]
    )
    operator.start()
    config = scrape_config(cached_server.metrics_url, port)
    try:
        with LocalPrometheus(config, tmp_path / "prometheus") as server:
            yield server, port
    finally:
        operator.stop()


def _model(name: str) -> dict[str, Any]:
    """Every condition type is on a model's status from its first reconcile, whatever phase."""
    optimization = {"accuracy": {"dataset": "pvc://models/eval.npz", "metric": "top1"}}
    return {
        "apiVersion": "optiserve.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "source": {"uri": "pvc://models/model.pt", "format": "torchscript"},
            "optimization": optimization,
            "storage": {"pvc": "model-store"},
        },
    }


def test_every_dashboard_and_alert_expression_returns_series(
    cluster: LocalCluster,
    crd: None,
    cached_server: LocalTriton,
    prometheus: tuple[LocalPrometheus, int],
) -> None:
    server, port = prometheus
    prepare_model_namespace(cluster, NAMESPACE)
    cluster.apply([_model("served")], namespace=NAMESPACE)

    def conditions_published() -> bool:
        found = {r["metric"].get("type") for r in server.query("optiserve_model_condition")}
        return {"Ready", "Optimized", "Degraded", "Stalled"} <= found

    with Load(cached_server):
        wait_until("the operator's condition series in Prometheus", conditions_published, 180, 2)
        # Rates over [1m] need two scrapes after the load began; five leave a margin.
        time.sleep(6)
        asked = [
            expr.replace("$namespace", ".*").replace("$model", ".*")
            for content in dashboards().values()
            for expr in expressions(content)
        ] + [as_bool(expr) for expr in rule_expressions().values()]
        empty = [expr for expr in asked if not answer(server, expr) and expr != ERRORS_BY_TYPE]
        exposed = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    assert b"# TYPE optiserve_reconcile_errors_total counter" in exposed
    assert len(asked) >= 20
    assert empty == [], "no series (or a parse error) for:\n" + "\n".join(empty)


def answer(server: LocalPrometheus, expr: str) -> list[dict[str, Any]]:
    """The query's series; none when Prometheus refuses the expression (HTTP 400)."""
    try:
        return server.query(expr)
    except urllib.error.HTTPError:
        return []
