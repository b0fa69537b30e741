"""The whole autoscaling loop on the local cluster, for the HPA test and the scaling benchmark.

    Triton pods (real local servers, run by the pod runner, one loopback IP each)
      <- scraped by a real Prometheus (pod discovery from the API server, annotation-based job)
      <- queried by the custom metrics API (optiserve_testing.custom_metrics, behind an APIService)
      <- asked by the real HPA controller in kube-controller-manager
      -> scales the Deployment, whose new pods the pod runner starts and probes for readiness.

``deploy_digits`` renders the Service, Deployment and HPA of an OptimizedModel for the digits
CNN with the operator's own pure renderers (no optimization Job: the model repository is
written straight to the claim) and applies them. ``SpreadLoad`` is closed-loop load spread
evenly over the Ready pods, as a Service would spread it.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from optiserve.api import OptimizedModel
from optiserve.api.serving import ServingSpec
from optiserve.render.autoscaling import parse_quantity
from optiserve.render.deployment import selector_string
from optiserve.render.job import artifact_uri
from optiserve.render.manifests import render_all
from optiserve.serve.repository import write_onnx_model
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.custom_metrics import GROUP, VERSION, CustomMetricsAPI
from optiserve_testing.example_models import digits_onnx, digits_samples
from optiserve_testing.kwok_config import RUN_LOCALLY_LABEL
from optiserve_testing.prometheus import (
    LocalPrometheus,
    PodDiscovery,
    find_prometheus,
    pod_scrape_config,
)
from optiserve_testing.volume_binder import claim_manifest
from optiserve_testing.waiting import wait_until

MODEL = "digits"
SERVED_KINDS = ("Service", "Deployment", "HorizontalPodAutoscaler")


@contextlib.contextmanager
def metrics_pipeline(cluster: LocalCluster) -> Iterator[LocalPrometheus]:
    """Prometheus scraping the cluster's pods, and custom.metrics.k8s.io answered from it."""
    find_prometheus()  # fail fast (PrometheusUnavailable) before anything starts
    state = cluster.state_dir / "prometheus"
    state.mkdir(parents=True, exist_ok=True)
    targets = state / "pods.json"
    with (
        PodDiscovery(cluster.api_client(), targets),
        LocalPrometheus(pod_scrape_config(targets), state) as prometheus,
    ):
        core = client.CoreV1Api(cluster.api_client())
        ca = cluster.certificate_authority()
        with CustomMetricsAPI(prometheus.query, core, cluster.pki_dir, ca) as api:
            cluster.apply(api.api_service_manifests(ca.cert.read_bytes()))
            wait_until(
                "the custom metrics APIService answering through the API server",
                lambda: cluster.kubectl("get", "--raw", f"/apis/{GROUP}/{VERSION}").returncode == 0,
                120,
            )
            yield prometheus


@dataclass(frozen=True)
class ServedModel:
    namespace: str
    name: str
    selector: str  # label selector of its Triton pods

    @property
    def hpa_name(self) -> str:
        return self.name


def digits_model(autoscaling: dict[str, Any]) -> OptimizedModel:
    """An OptimizedModel serving the digits CNN on CPU; no response cache, so load queues."""
    return OptimizedModel.model_validate(
        {
            "apiVersion": "optiserve.io/v1alpha1",
            "kind": "OptimizedModel",
            "metadata": {"name": MODEL},
            "spec": {
                "source": {"uri": "pvc://models/digits.onnx", "format": "onnx"},
                "optimization": {
                    "target": {"device": "cpu"},
                    "accuracy": {"dataset": "pvc://models/eval.npz"},
                },
                "serving": {
                    "maxBatchSize": 32,
                    "dynamicBatching": {"maxQueueDelayMicroseconds": 2000},
                    "responseCache": {"enabled": False},
                    "autoscaling": autoscaling,
                },
                "storage": {"pvc": "model-store"},
            },
        }
    )


def deploy_digits(cluster: LocalCluster, namespace: str, model: OptimizedModel) -> ServedModel:
    """Claim, model repository, and the rendered Service, Deployment and HPA, applied."""
    claim = model.spec.storage.pvc
    assert claim is not None, "digits_model stores on a claim"
    cluster.apply([claim_manifest(claim)], namespace=namespace)
    digest = hashlib.sha256(model.model_dump_json().encode()).hexdigest()
    repository = cluster.claim_path(
        namespace, artifact_uri(model.spec, digest, namespace=namespace, name=model.metadata.name)
    )
    serving: ServingSpec = model.spec.serving
    write_onnx_model(repository, model.metadata.name, digits_onnx(), serving)
    manifests = [
        m
        for m in render_all(model, digest=digest, optimizer_image="unused", namespace=namespace)
        if m["kind"] in SERVED_KINDS
    ]
    for manifest in manifests:
        if manifest["kind"] == "Deployment":
            # The one test-only touch: the pod runner, not kwok, runs these pods.
            manifest["spec"]["template"]["metadata"]["labels"][RUN_LOCALLY_LABEL] = "true"
    cluster.apply(manifests, namespace=namespace)
    return ServedModel(namespace, model.metadata.name, selector_string(model.metadata.name))


def ready_pod_ips(core: client.CoreV1Api, served: ServedModel) -> list[str]:
    """Addresses of the model's Ready pods that are not being deleted."""
    pods = core.list_namespaced_pod(served.namespace, label_selector=served.selector).items
    ips = []
    for pod in pods:
        status, meta = pod.status, pod.metadata
        if status is None or meta is None or meta.deletion_timestamp or not status.pod_ip:
            continue
        if any(c.type == "Ready" and c.status == "True" for c in status.conditions or []):
            ips.append(str(status.pod_ip))
    return sorted(ips)


def hpa_reading(
    autoscaling: client.AutoscalingV2Api, served: ServedModel
) -> tuple[float | None, int]:
    """The HPA's current metric value (None before its first read) and desired replicas."""
    status = autoscaling.read_namespaced_horizontal_pod_autoscaler(
        served.hpa_name, served.namespace
    ).status
    value = None
    for metric in (status.current_metrics if status else None) or []:
        if metric.pods and metric.pods.current and metric.pods.current.average_value is not None:
            value = float(parse_quantity(str(metric.pods.current.average_value)))
    return value, int((status.desired_replicas if status else 0) or 0)


class SpreadLoad:
    """Closed-loop inference load: ``concurrency`` clients, each request to the next Ready pod.

    The pod list is refreshed every half second, like endpoints behind a Service; requests that
    fail (a pod going away) are counted and retried on the next pod.
    """

    def __init__(self, core: client.CoreV1Api, served: ServedModel, max_clients: int = 64):
        self.core = core
        self.served = served
        self.concurrency = 0
        self.completed = 0
        self.failed = 0
        self.completed_by_pod: collections.Counter[str] = collections.Counter()  # by pod IP
        self._ips: list[str] = []
        self._cycle = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        sample = next(iter(digits_samples(1)[0].items()))
        self._body = json.dumps(
            {
                "inputs": [
                    {
                        "name": sample[0],
                        "shape": list(sample[1].shape),
                        "datatype": "FP32",
                        "data": sample[1].astype("float32").ravel().tolist(),
                    }
                ]
            }
        ).encode()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(max_clients)
        ]
        self._threads.append(threading.Thread(target=self._refresh, daemon=True))

    def __enter__(self) -> SpreadLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _refresh(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                ips = ready_pod_ips(self.core, self.served)
                with self._lock:
                    self._ips = ips
            self._stop.wait(0.5)

    def _next_ip(self) -> str | None:
        with self._lock:
            return self._ips[next(self._cycle) % len(self._ips)] if self._ips else None

    def _client(self, index: int) -> None:
        connections: dict[str, http.client.HTTPConnection] = {}
        path = f"/v2/models/{self.served.name}/infer"
        while not self._stop.is_set():
            ip = self._next_ip() if index < self.concurrency else None
            if ip is None:
                self._stop.wait(0.05)
                continue
            connection = connections.setdefault(ip, http.client.HTTPConnection(ip, 8000, 10))
            try:
                connection.request("POST", path, self._body)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connections.pop(ip, None)
                ok = False
            with self._lock:
                if ok:
                    self.completed += 1
                    self.completed_by_pod[ip] += 1
                else:
                    self.failed += 1
            if not ok:
                time.sleep(0.05)
