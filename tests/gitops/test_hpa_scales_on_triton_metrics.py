"""The real HPA controller scales Triton up when requests wait, and back down when they stop.

Nothing in the loop is simulated but the custom metrics server's thin query layer (see
optiserve_testing/custom_metrics.py for why): real Triton servers in the Deployment's pods, a real
Prometheus discovering and scraping them, an APIService the API server's aggregator proxies
through, and kube-controller-manager's HPA controller acting on the HorizontalPodAutoscaler
that optiserve renders for ``autoscaling: {metric: pendingRequests, target: "2"}``.

Closed-loop load of 12 clients over one pod leaves several requests pending in Triton's queue
(the pod's ``triton_pending_requests`` is well above 2), so the HPA must add pods; every pod it
asks for must become Ready (its Triton loaded the model) and take load, and while the load
holds the HPA must never ask for fewer pods, even with a scale-down window of only 20 s: the
metric is the mean number of requests queued over a minute (the rate of Triton's queue-time
counter), which does not swing with the batcher's bursts as the sampled pending-request gauge
did (benchmarks/results/hpa_scaling.md). When the load stops the queue is empty, the metric
decays to 0 over its window and the HPA must return to ``minReplicas``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from optiserve_testing.autoscaling_stack import (
    SpreadLoad,
    deploy_digits,
    digits_model,
    hpa_reading,
    metrics_pipeline,
    ready_pod_ips,
)
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.custom_metrics import GROUP, VERSION, NoRoutableAddress
from optiserve_testing.prometheus import LocalPrometheus, PrometheusUnavailable
from optiserve_testing.waiting import wait_until

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
    "scaleDownStabilizationSeconds": 20,
}
CLIENTS = 12
HOLD_S = 40  # steady load after every pod is Ready, watched for a scale-down


@pytest.fixture(scope="module")
def prometheus(cluster: LocalCluster) -> Iterator[LocalPrometheus]:
    try:
        with metrics_pipeline(cluster) as running:
            yield running
    except (PrometheusUnavailable, NoRoutableAddress) as err:
        pytest.skip(f"the metrics pipeline cannot run here: {err}")


def test_hpa_scales_triton_up_under_load_and_back_down(
    cluster: LocalCluster, cluster_namespace: str, prometheus: LocalPrometheus
) -> None:
    core = client.CoreV1Api(cluster.api_client())
    autoscaling = client.AutoscalingV2Api(cluster.api_client())
    served = deploy_digits(cluster, cluster_namespace, digits_model(AUTOSCALING))
    wait_until("the first Triton pod Ready", lambda: len(ready_pod_ips(core, served)) == 1, 240)
    # Prometheus found the pod through the API server and scrapes Triton's metrics port.
    wait_until(
        "Prometheus scraping the Triton pod",
        lambda: bool(prometheus.query(f'nv_inference_count{{namespace="{served.namespace}"}}')),
        60,
    )
    # The HPA controller reads the metric through the aggregator (every 15 s by default).
    wait_until(
        "the HPA reading triton_pending_requests",
        lambda: hpa_reading(autoscaling, served)[0] is not None,
        120,
    )
    idle = hpa_reading(autoscaling, served)
    assert idle == (0.0, 1), idle

    desired_under_load: list[int] = []
    loaded = threading.Event()

    def watch_desired() -> None:
        while loaded.is_set():
            desired_under_load.append(hpa_reading(autoscaling, served)[1])
            time.sleep(1)

    with SpreadLoad(core, served) as load:
        load.concurrency = CLIENTS
        loaded.set()
        watcher = threading.Thread(target=watch_desired, daemon=True)
        watcher.start()
        # Through the aggregator, as the HPA controller asks it.
        raw = (
            f"/apis/{GROUP}/{VERSION}/namespaces/{served.namespace}/pods/*/"
            f"triton_pending_requests?labelSelector={served.selector}"
        )
        wait_until(
            "pod metrics", lambda: '"value"' in cluster.kubectl("get", "--raw", raw).stdout, 60
        )
        wait_until(
            "the HPA deciding to scale up",
            lambda: hpa_reading(autoscaling, served)[1] > 1,
            180,
        )
        busy_metric, _ = busy = hpa_reading(autoscaling, served)
        assert busy_metric is not None and busy_metric > 2, busy
        wait_until(
            "every pod the HPA asked for Ready",
            lambda: len(ready_pod_ips(core, served)) == hpa_reading(autoscaling, served)[1] > 1,
            300,
        )
        ready, before = ready_pod_ips(core, served), load.completed_by_pod.copy()
        time.sleep(5)
        for ip in ready:  # every pod the HPA added takes its share, not only the first
            assert load.completed_by_pod[ip] > before[ip], f"pod {ip} serves no requests"
        time.sleep(HOLD_S)
        loaded.clear()
        watcher.join(timeout=30)
        # Under constant load the replica count only ever rose.
        drops = [(a, b) for a, b in itertools.pairwise(desired_under_load) if b < a]
        assert not drops, desired_under_load
        load.concurrency = 0
        # Idle pods read 0 (not NaN, which the adapter would drop), so the HPA may scale down.
        wait_until(
            "the HPA reading 0 and scaling back down",
            lambda: hpa_reading(autoscaling, served) == (0.0, 1),
            240,
        )
    wait_until(
        "the extra pods removed",
        lambda: len(ready_pod_ips(core, served)) == AUTOSCALING["minReplicas"],
        120,
    )
    assert load.failed <= load.completed * 0.01, (load.failed, load.completed)
