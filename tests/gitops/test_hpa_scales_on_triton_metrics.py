"""The real HPA controller scales Triton up when requests wait, and back down when they stop.

Nothing in the loop is simulated but the custom metrics server's thin query layer (see
tests/harness/custom_metrics.py for why): real Triton servers in the Deployment's pods, a real
Prometheus discovering and scraping them, an APIService the API server's aggregator proxies
through, and kube-controller-manager's HPA controller acting on the HorizontalPodAutoscaler
that optiserve renders for ``autoscaling: {metric: pendingRequests, target: "2"}``.

Closed-loop load of 12 clients over one pod leaves several requests pending in Triton's queue
(the pod's ``triton_pending_requests`` is well above 2), so the HPA must add pods up to
``maxReplicas``; the new pods must become Ready (their Triton loaded the model) and take load.
When the load stops the queue is empty, the metric reads 0 and, after the scale-down window,
the HPA must return to ``minReplicas``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.harness.autoscaling_stack import (
    ServedModel,
    SpreadLoad,
    deploy_digits,
    digits_model,
    metrics_pipeline,
    ready_pod_ips,
)
from tests.harness.cluster import LocalCluster
from tests.harness.custom_metrics import GROUP, VERSION, NoRoutableAddress, wait_until
from tests.harness.prometheus import LocalPrometheus, PrometheusUnavailable

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.triton,
    pytest.mark.models,
    pytest.mark.timeout(900),
]

AUTOSCALING = {
    "provider": "hpa",
    "metric": "pendingRequests",
    "target": "2",
    "minReplicas": 1,
    "maxReplicas": 3,
    "scaleUpStabilizationSeconds": 0,
    "scaleDownStabilizationSeconds": 15,
}
CLIENTS = 12


@pytest.fixture(scope="module")
def prometheus(cluster: LocalCluster) -> Iterator[LocalPrometheus]:
    try:
        with metrics_pipeline(cluster) as running:
            yield running
    except (PrometheusUnavailable, NoRoutableAddress) as err:
        pytest.skip(f"the metrics pipeline cannot run here: {err}")


def hpa_status(cluster: LocalCluster, served: ServedModel) -> dict[str, Any]:
    api = client.AutoscalingV2Api(cluster.api_client())
    hpa = api.read_namespaced_horizontal_pod_autoscaler(served.hpa_name, served.namespace)
    status: dict[str, Any] = cluster.api_client().sanitize_for_serialization(  # type: ignore[no-untyped-call]
        hpa.status
    )
    return status


def current_metric(status: dict[str, Any]) -> float | None:
    for metric in status.get("currentMetrics") or []:
        value = (metric.get("pods") or {}).get("current", {}).get("averageValue")
        if value is not None:
            text = str(value)
            return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return None


def test_hpa_scales_triton_up_under_load_and_back_down(
    cluster: LocalCluster, cluster_namespace: str, prometheus: LocalPrometheus
) -> None:
    core = client.CoreV1Api(cluster.api_client())
    served = deploy_digits(cluster, cluster_namespace, digits_model(AUTOSCALING))
    wait_until(lambda: len(ready_pod_ips(core, served)) == 1, 240, "the first Triton pod Ready")
    # Prometheus found the pod through the API server and scrapes Triton's metrics port.
    wait_until(
        lambda: bool(prometheus.query(f'nv_inference_count{{namespace="{served.namespace}"}}')),
        60,
        "Prometheus scraping the Triton pod",
    )
    # The HPA controller reads the metric through the aggregator (every 15 s by default).
    wait_until(
        lambda: current_metric(hpa_status(cluster, served)) is not None,
        120,
        "the HPA reading triton_pending_requests",
    )
    idle = hpa_status(cluster, served)
    assert idle["desiredReplicas"] == 1 and current_metric(idle) == 0.0, idle

    with SpreadLoad(core, served) as load:
        load.concurrency = CLIENTS
        # Through the aggregator, as the HPA controller asks it.
        raw = (
            f"/apis/{GROUP}/{VERSION}/namespaces/{served.namespace}/pods/*/"
            f"triton_pending_requests?labelSelector={served.selector}"
        )
        wait_until(
            lambda: '"value"' in cluster.kubectl("get", "--raw", raw).stdout, 60, "pod metrics"
        )
        wait_until(
            lambda: hpa_status(cluster, served).get("desiredReplicas", 1) > 1,
            180,
            "the HPA deciding to scale up",
        )
        busy = hpa_status(cluster, served)
        busy_metric = current_metric(busy)
        assert busy_metric is not None and busy_metric > 2, busy
        wait_until(
            lambda: len(ready_pod_ips(core, served)) == AUTOSCALING["maxReplicas"],
            300,
            "every added Triton pod Ready",
        )
        served_before = load.completed
        time.sleep(5)
        assert load.completed > served_before, "the scaled-out pods serve no requests"
        load.concurrency = 0
        wait_until(
            lambda: hpa_status(cluster, served).get("desiredReplicas") == 1,
            240,
            "the HPA scaling back down once nothing waits",
        )
    after = hpa_status(cluster, served)
    assert current_metric(after) == 0.0, after
    wait_until(
        lambda: len(ready_pod_ips(core, served)) == AUTOSCALING["minReplicas"],
        120,
        "the extra pods removed",
    )
    assert load.failed <= load.completed * 0.01, (load.failed, load.completed)
