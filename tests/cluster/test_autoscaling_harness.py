"""Pure parts of the autoscaling loop's harness: pod network, probes, discovery, metric queries.

The loop itself runs for real in tests/gitops/test_hpa_scales_on_triton_metrics.py; these pin
the translations it relies on without a cluster.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any

import pytest

from optiserve.render.autoscaling import parse_quantity
from optiserve.render.prometheus_adapter import adapter_rules
from optiserve_testing import pod_spec
from optiserve_testing.custom_metrics import pod_metric_query, quantity
from optiserve_testing.prometheus import pod_target_groups
from optiserve_testing.tritonserver_shim import serve_arguments

TRITON = {
    "name": "triton",
    "command": ["tritonserver"],
    "args": ["--model-repository=/models/repo", "--http-port=8000", "--exit-timeout-secs=30"],
    "ports": [{"name": "http", "containerPort": 8000}, {"name": "metrics", "containerPort": 8002}],
    "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}},
}


def pod(uid: str = "u1", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "digits-abc-1",
            "namespace": "ns",
            "uid": uid,
            "labels": {"app.kubernetes.io/component": "server"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8002"},
        },
        "spec": {"nodeName": "cpu-0", "containers": [TRITON]},
        "status": status,
    }


def test_each_pod_gets_its_own_stable_loopback_address() -> None:
    addresses = {pod_spec.pod_ip(f"uid-{i}") for i in range(500)}
    assert len(addresses) == 500
    assert pod_spec.pod_ip("uid-1") == pod_spec.pod_ip("uid-1")
    for address in addresses:
        first, second, _, last = (int(part) for part in address.split("."))
        assert first == 127 and 64 <= second < 192 and 1 <= last <= 254


def test_pod_ip_reaches_env_field_refs_and_status() -> None:
    container = {
        "name": "main",
        "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    }
    mapping = {"/dev/termination-log": "/tmp/term"}
    env = pod_spec.container_env(pod(), container, {}, mapping, lambda *_: None, "127.70.1.2")
    assert env["IP"] == env[pod_spec.POD_IP_ENV] == "127.70.1.2"
    status = pod_spec.running_status(pod(), "t0", "127.70.1.2", ready=False)
    assert status["podIP"] == "127.70.1.2" and status["hostIP"] == pod_spec.HOST_IP
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "False" and ready["PodScheduled"] == "True"
    assert [c["ready"] for c in status["containerStatuses"]] == [False]


def test_readiness_url_resolves_named_and_numbered_ports() -> None:
    assert pod_spec.readiness_url(TRITON, "127.70.0.9") == "http://127.70.0.9:8000/v2/health/ready"
    numbered = {**TRITON, "readinessProbe": {"httpGet": {"port": 8002, "path": "/metrics"}}}
    assert pod_spec.readiness_url(numbered, "127.70.0.9") == "http://127.70.0.9:8002/metrics"
    assert pod_spec.readiness_url({"name": "plain"}, "127.70.0.9") is None
    unknown = {**TRITON, "readinessProbe": {"httpGet": {"port": "grpc"}}}
    with pytest.raises(pod_spec.PodSpecError, match="grpc"):
        pod_spec.readiness_url(unknown, "127.70.0.9")


def test_tritonserver_runs_the_local_stand_in_with_the_pods_ports() -> None:
    argv = pod_spec.command_line(TRITON, {}, {"/models": "/data/models"})
    assert argv[:2] == [sys.executable, pod_spec.DEFAULT_COMMAND_ALIASES["tritonserver"][1]]
    assert argv[2:] == [
        "--model-repository=/data/models/repo",
        "--http-port=8000",
        "--exit-timeout-secs=30",
    ]
    assert serve_arguments(argv[2:], "127.70.0.9") == [
        "serve",
        "/data/models/repo",
        "--host=127.70.0.9",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]


def test_discovered_pods_carry_kubernetes_sd_labels() -> None:
    groups = pod_target_groups(
        [pod(podIP="127.70.0.9", phase="Running"), pod("u2", phase="Pending")]
    )
    assert len(groups) == 1  # a pod without an IP cannot be scraped yet
    assert groups[0]["targets"] == ["127.70.0.9"]
    labels = groups[0]["labels"]
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert labels["__meta_kubernetes_pod_label_app_kubernetes_io_component"] == "server"
    assert labels["__meta_kubernetes_pod_name"] == "digits-abc-1"
    assert labels["__meta_kubernetes_pod_phase"] == "Running"


def test_adapter_rule_queries_select_the_requested_pods() -> None:
    rules = {rule["name"]["as"]: rule for rule in adapter_rules()}
    query = pod_metric_query(rules["triton_pending_requests"], "ns", ["digits-a-1", "digits-b-2"])
    selector = 'namespace="ns",pod=~"digits-a-1|digits-b-2"'
    assert query == f"sum by (pod) (rate(nv_inference_queue_duration_us{{{selector}}}[1m])) / 1e6"
    for rule in rules.values():
        filled = pod_metric_query(rule, "ns", ["p"])
        assert "<<" not in filled and 'pod=~"p"' in filled


@pytest.mark.parametrize(
    ("value", "text"), [(0.0, "0m"), (2.5, "2500m"), (1e-4, "0m"), (12.0, "12000m")]
)
def test_metric_values_are_quantities_in_thousandths(value: float, text: str) -> None:
    assert quantity(value) == text
    # ... and the HPA's reading of it (hpa_reading) parses back what was served.
    assert parse_quantity(text) == Decimal(round(value * 1000)) / 1000


def test_a_crashing_container_waits_in_crash_loop_backoff_and_keeps_its_pod() -> None:
    status = pod_spec.crash_loop_status(
        pod(), "t0", "127.70.0.9", "triton", 3, (2, "Error", "model failed to load")
    )
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"
    (triton,) = status["containerStatuses"]
    assert triton["restartCount"] == 3 and triton["ready"] is False
    assert triton["state"] == {"waiting": {"reason": "CrashLoopBackOff"}}
    last = triton["lastState"]["terminated"]
    assert (last["exitCode"], last["message"]) == (2, "model failed to load")
