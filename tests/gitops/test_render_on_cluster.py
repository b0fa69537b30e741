"""``optiserve render`` output on a real API server: valid, and `kubectl diff`-clean once applied.

The local control plane (testing/optiserve_testing) validates every object with the API server's own
schemas and strict field checking; after a server-side apply as the operator does it (field
manager ``optiserve``), rendering again must show no difference, in both kubectl diff modes:
nothing the renderer writes is rewritten by the server (quantities, defaults, ordering).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from optiserve.api import OptimizedModel
from optiserve.render.kubernetes import FIELD_MANAGER
from optiserve.render.manifests import render_all
from optiserve_operator.reconcile import recipe_digest
from optiserve_testing.cluster import LocalCluster, wait_established
from tests.gitops.keda_crd import KedaCrdUnavailable, keda_crd

pytestmark = pytest.mark.cluster

IMAGE = "ghcr.io/optiserve/optimizer:0.1.0"
MODEL: dict[str, Any] = {
    "apiVersion": "optiserve.io/v1alpha1",
    "kind": "OptimizedModel",
    "metadata": {"name": "minilm"},
    "spec": {
        "source": {"uri": "pvc://models/minilm.onnx"},
        "optimization": {
            "target": {"device": "gpu", "gpuProduct": "NVIDIA-A100-SXM4-80GB"},
            "accuracy": {"dataset": "pvc://data/eval.npz"},
        },
        "serving": {
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 8,
                "target": "50ms",
                "scaleUpStabilizationSeconds": 15,
            },
            "responseCache": {"enabled": True},
        },
        "storage": {"pvc": "model-store"},
    },
}


def rendered(namespace: str, **serving: Any) -> list[dict[str, Any]]:
    obj = copy.deepcopy(MODEL)
    obj["spec"]["serving"].update(serving)
    model = OptimizedModel.model_validate(obj)
    return render_all(
        model,
        digest=recipe_digest(model.metadata.name, model.spec),
        optimizer_image=IMAGE,
        namespace=namespace,
    )


def kubectl_ok(cluster: LocalCluster, manifests: list[dict[str, Any]], *args: str) -> str:
    result = cluster.kubectl(*args, "-f", "-", input=yaml.safe_dump_all(manifests))
    assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("metric", ["queueTime", "pendingRequests", "gpuUtilization"])
def test_the_api_server_accepts_every_object(
    cluster: LocalCluster, cluster_namespace: str, metric: str
) -> None:
    manifests = rendered(cluster_namespace, autoscaling={"metric": metric, "target": "50"})
    kubectl_ok(cluster, manifests, "apply", "--dry-run=server", "--validate=strict")


def test_applied_objects_diff_clean(cluster: LocalCluster, cluster_namespace: str) -> None:
    # The Job is left out: applied for real, the test pod runner would start the optimizer.
    manifests = [m for m in rendered(cluster_namespace) if m["kind"] != "Job"]
    kubectl_ok(
        cluster,
        manifests,
        "apply",
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        "--validate=strict",
    )
    again = [m for m in rendered(cluster_namespace) if m["kind"] != "Job"]
    # Exit 0 means no difference (1: differences, >1: error).
    kubectl_ok(cluster, again, "diff")
    kubectl_ok(cluster, again, "diff", "--server-side", f"--field-manager={FIELD_MANAGER}")
    hpa = yaml.safe_load(
        cluster.kubectl(
            "get", "hpa", "minilm", "-n", cluster_namespace, "-o", "yaml", check=True
        ).stdout
    )
    target = hpa["spec"]["metrics"][0]["pods"]["target"]
    assert target == {"type": "AverageValue", "averageValue": "50k"}


def test_the_api_server_accepts_the_scaled_object_with_kedas_crd(
    cluster: LocalCluster, cluster_namespace: str
) -> None:
    try:
        crd = keda_crd()
    except KedaCrdUnavailable as err:
        pytest.skip(str(err))
    kubectl_ok(cluster, [crd], "apply", "--server-side")
    name = crd["metadata"]["name"]
    wait_established(cluster, name)
    manifests = rendered(cluster_namespace, autoscaling={"provider": "keda", "minReplicas": 0})
    assert manifests[-1]["kind"] == "ScaledObject"
    kubectl_ok(cluster, manifests, "apply", "--dry-run=server", "--validate=strict")


NETWORK_POLICY = {
    "enabled": True,
    "ingressFrom": [
        {"namespaceSelector": {"kubernetes.io/metadata.name": "gateway"}},
        {"namespaceSelector": {}, "podSelector": {"app": "web"}},
    ],
    "metricsFrom": [{"namespaceSelector": {"kubernetes.io/metadata.name": "monitoring"}}],
}


def test_the_network_policy_is_accepted_and_diff_clean(
    cluster: LocalCluster, cluster_namespace: str
) -> None:
    policies = [
        m
        for m in rendered(cluster_namespace, networkPolicy=NETWORK_POLICY)
        if m["kind"] == "NetworkPolicy"
    ]
    assert len(policies) == 1
    kubectl_ok(cluster, policies, "apply", "--dry-run=server", "--validate=strict")
    kubectl_ok(
        cluster,
        policies,
        "apply",
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        "--validate=strict",
    )
    kubectl_ok(cluster, policies, "diff")
    kubectl_ok(cluster, policies, "diff", "--server-side", f"--field-manager={FIELD_MANAGER}")
    stored = yaml.safe_load(
        cluster.kubectl(
            "get", "networkpolicy", "minilm", "-n", cluster_namespace, "-o", "yaml", check=True
        ).stdout
    )
    ingress = stored["spec"]["ingress"]
    assert [sorted(p["port"] for p in rule["ports"]) for rule in ingress] == [[8000, 8001], [8002]]
    assert stored["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert not stored["spec"].get("egress")  # Egress denied: no rule allows any
