"""The canary's traffic split where traffic really flows: EndpointSlices and kube-proxy.

A cluster of its own (``routed_cluster``): its pods have addresses of their own on lo, so the
EndpointSlice controller (kube-controller-manager, real) publishes them in the model's
Service's slices, and the real kube-proxy (nftables mode) DNATs each new connection to the
Service's ClusterIP to one ready endpoint, uniformly at random. The operator, Prometheus
(the analysis) and the Triton pods are real, as in test_canary_e2e.py.

At a canary step with weight 33 and ``serving.replicas: 2`` (a CPU model: 3 pods in all, 1 of
them canary, ``status.rollout.weight`` 33), the test

1. reads the Service's EndpointSlices: the ready endpoints are the Ready pods of both
   Deployments, by revision in the Deployments' replica ratio, and that ratio is the rollout's
   weight;
2. sends REQUESTS inference requests to the ClusterIP, each on a new connection (kube-proxy
   chooses per connection), and counts which pod answered from each Triton's own
   ``nv_inference_request_success`` counter (read from every pod before and after);
3. asserts that the pods together counted exactly the requests answered (all traffic went to
   the slices' endpoints), and that the canary's share, and each pod's, is the expected one
   within 4 binomial standard deviations: with p = 1/3 and 600 requests, sigma = 0.019, so
   +-0.077 (a false failure once in ~16,000 runs per check, once in ~5,000 for the three pods'
   checks together; a split by revision, 50%, would be 8.7 sigma off).
"""

from __future__ import annotations

import collections
import http.client
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from optiserve_testing.cluster import LocalCluster, install_crd
from optiserve_testing.prometheus import (
    LocalPrometheus,
    PodDiscovery,
    find_prometheus,
    pod_scrape_config,
    scrape,
)
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.objects import get, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.triton, pytest.mark.timeout(1200)]

NAMESPACE = "local-canary"  # kwok_config.RUN_LOCALLY_NAMESPACES: the pod runner runs its pods
NAME = "split"
STEP_WEIGHT = 33
ROLLOUT = {
    "strategy": "canary",
    # Long enough that the step holds while the split is measured.
    "steps": [{"weight": STEP_WEIGHT, "pauseSeconds": 1800}],
    "analysis": {
        "maxErrorRate": 0.05,
        "maxLatencyP99Ratio": 100,  # not what is tested here: 2 busy CPUs, 3 servers
        "minRequests": 10,
        "intervalSeconds": 5,
    },
}
REQUESTS = 600
CLIENTS = 4
SIGMAS = 4.0
SUCCESS = "nv_inference_request_success"
REVISION = "optiserve.io/revision"
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [0.1] * 8}]}
).encode()


def model(max_drop: float) -> dict[str, Any]:
    obj = tiny(NAME, rollout=ROLLOUT)
    obj["spec"]["serving"] = {"maxBatchSize": 8, "replicas": 2, "rolloutDeadlineSeconds": 180}
    obj["spec"]["optimization"]["accuracy"]["maxDrop"] = max_drop
    return obj


@pytest.fixture(scope="module")
def routed_operator(
    routed_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    find_prometheus()
    install_crd(routed_cluster)
    prepare_model_namespace(routed_cluster, NAMESPACE)
    state = tmp_path_factory.mktemp("prometheus")
    targets = state / "pods.json"
    with (
        PodDiscovery(routed_cluster.api_client(), targets),
        LocalPrometheus(pod_scrape_config(targets), state) as prometheus,
    ):
        process = OperatorProcess(
            routed_cluster,
            tmp_path_factory.mktemp("operator"),
            extra_args=["--prometheus-url", prometheus.url],
        )
        process.start()
        yield process
        process.stop()


@dataclass(frozen=True)
class Endpoint:
    pod: str
    address: str
    revision: str


def ready_endpoints(cluster: LocalCluster) -> list[Endpoint]:
    """The ready endpoints of the Service's EndpointSlices, with their pods' revisions."""
    selector = f"kubernetes.io/service-name={NAME}"
    slices = get(cluster, NAMESPACE, "endpointslices", "-l", selector) or {"items": []}
    pods = {
        p["metadata"]["name"]: p
        for p in (get(cluster, NAMESPACE, "pods") or {"items": []})["items"]
    }
    found = []
    for endpoint_slice in slices["items"]:
        for endpoint in endpoint_slice.get("endpoints") or []:
            if not (endpoint.get("conditions") or {}).get("ready"):
                continue
            target = endpoint["targetRef"]
            assert target["kind"] == "Pod", endpoint
            pod = pods[target["name"]]
            # The slice's address is the pod's own (podIP), as a kubelet reports it.
            assert endpoint["addresses"] == [pod["status"]["podIP"]], (endpoint, pod["status"])
            revision = (pod["metadata"].get("labels") or {}).get(REVISION, "unlabelled")
            found.append(Endpoint(target["name"], endpoint["addresses"][0], revision))
    return sorted(found, key=lambda e: e.pod)


def deployment_replicas(cluster: LocalCluster) -> dict[str, int]:
    """The replicas each revision's Deployment asks for: the step's split of the pods."""
    replicas = {}
    for revision, name in (("stable", NAME), ("canary", f"{NAME}-canary")):
        deployment = get(cluster, NAMESPACE, "deployment", name) or {}
        replicas[revision] = int((deployment.get("spec") or {}).get("replicas") or 0)
    return replicas


def rollout_of(cluster: LocalCluster) -> dict[str, Any]:
    obj = get(cluster, NAMESPACE, "om", NAME) or {}
    return dict((obj.get("status") or {}).get("rollout") or {})


def infer(address: str, port: int) -> bool:
    """One request on a connection of its own (kube-proxy picks an endpoint per connection)."""
    connection = http.client.HTTPConnection(address, port, timeout=30)
    try:
        connection.request(
            "POST", f"/v2/models/{NAME}/infer", BODY, headers={"Connection": "close"}
        )
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def send(address: str, port: int, count: int) -> collections.Counter[bool]:
    """``count`` requests from CLIENTS threads; answers by outcome."""
    outcomes: collections.Counter[bool] = collections.Counter()
    lock = threading.Lock()
    left = iter(range(count))

    def client_loop() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            ok = infer(address, port)
            with lock:
                outcomes[ok] += 1

    threads = [threading.Thread(target=client_loop) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def served(endpoints: list[Endpoint], metrics_port: int) -> dict[str, float]:
    """Each pod's own count of successful inferences (Triton's counter, read at the pod)."""
    return {
        e.pod: scrape(f"http://{e.address}:{metrics_port}/metrics", NAME).get(SUCCESS, 0.0)
        for e in endpoints
    }


def within(share: float, expected: float, requests: int) -> tuple[bool, float]:
    """Whether ``share`` is within SIGMAS binomial standard deviations of ``expected``."""
    tolerance = SIGMAS * math.sqrt(expected * (1 - expected) / requests)
    return abs(share - expected) <= tolerance, tolerance


def test_canary_step_split_by_endpoint_slices_and_kube_proxy(
    routed_cluster: LocalCluster, routed_operator: OperatorProcess
) -> None:
    cluster = routed_cluster
    cluster.apply([model(0.05)], namespace=NAMESPACE)
    wait_ready(cluster, routed_operator, NAMESPACE, NAME)
    cluster.apply([model(0.04)], namespace=NAMESPACE)

    def at_step() -> bool:
        revisions = collections.Counter(e.revision for e in ready_endpoints(cluster))
        return rollout_of(cluster).get("phase") == "Canary" and revisions == {
            "stable": 2,
            "canary": 1,
        }

    try:
        wait_until("the canary step's endpoints in the slices", at_step, timeout_s=400)
    except AssertionError:
        described = cluster.kubectl("describe", "-n", NAMESPACE, "om,deploy,pod").stdout
        slices = cluster.kubectl("get", "endpointslices", "-n", NAMESPACE, "-o", "yaml").stdout
        pytest.fail(
            f"no canary step\n{described[-5000:]}\n{slices[-3000:]}\n{routed_operator.logs()}"
        )

    # 1. The slices carry the step's ratio: the Deployments' replicas, the rollout's weight.
    endpoints = ready_endpoints(cluster)
    by_revision = collections.Counter(e.revision for e in endpoints)
    assert dict(by_revision) == deployment_replicas(cluster)
    rollout = rollout_of(cluster)
    canary_share = by_revision["canary"] / len(endpoints)
    assert rollout["weight"] == round(100 * canary_share) == STEP_WEIGHT, rollout

    # 2. Requests to the ClusterIP, spread by kube-proxy; each pod counts what it served.
    service = get(cluster, NAMESPACE, "service", NAME)
    cluster_ip = str(service["spec"]["clusterIP"])
    ports = {p["name"]: int(p["port"]) for p in service["spec"]["ports"]}
    assert cluster_ip not in {e.address for e in endpoints}
    # kube-proxy has programmed every endpoint once each pod has answered through it.
    start = served(endpoints, ports["metrics"])

    def every_pod_reached() -> bool:
        send(cluster_ip, ports["http"], 10)
        now = served(endpoints, ports["metrics"])
        return all(now[pod] > start[pod] for pod in start)

    wait_until("kube-proxy routing the ClusterIP to every endpoint", every_pod_reached, 120)
    before = served(endpoints, ports["metrics"])
    outcomes = send(cluster_ip, ports["http"], REQUESTS)
    assert outcomes[True] == REQUESTS, outcomes
    after = served(endpoints, ports["metrics"])

    # The step held throughout: same endpoints, same phase.
    assert ready_endpoints(cluster) == endpoints
    assert rollout_of(cluster)["phase"] == "Canary"

    # 3. Every request answered by a slice's endpoint; the canary's share and each pod's
    # within 4 binomial sigmas of what the endpoints give.
    per_pod = {pod: after[pod] - before[pod] for pod in after}
    assert sum(per_pod.values()) == REQUESTS, per_pod
    canary_pods = {e.pod for e in endpoints if e.revision == "canary"}
    measured = sum(per_pod[pod] for pod in canary_pods) / REQUESTS
    ok, tolerance = within(measured, canary_share, REQUESTS)
    said = f"canary share {measured:.3f}, expected {canary_share:.3f} +- {tolerance:.3f}"
    assert ok, said
    for pod, count in per_pod.items():
        uniform, pod_tolerance = within(count / REQUESTS, 1 / len(endpoints), REQUESTS)
        assert uniform, (
            f"{pod} served {count} of {REQUESTS}: not 1/{len(endpoints)} +- {pod_tolerance:.3f}"
        )
    print(f"{said}; per pod {per_pod}")  # -s shows it: the numbers of this run
