"""The chart rendered by the real helm: defaults, a namespaced + monitored combination, the
restricted pod security, the flags the operator gets, and values that must be refused. (Leader
election, the PodDisruptionBudget and anti-affinity: test_chart_ha.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    HelmFailed,
    Manifest,
    of_kind,
    one,
    run_helm,
    set_flags,
    template,
)

pytestmark = pytest.mark.usefixtures("helm")

COMBINATION: dict[str, Any] = {
    "watchNamespaces": ["ml", "research"],
    "metrics.serviceMonitor.enabled": True,
    "replicaCount": 2,
}


def operator_container(objects: list[Manifest]) -> Manifest:
    containers: list[Manifest] = one(objects, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def flags(container: Manifest) -> list[str]:
    """The flags `optiserve operator` (the image's ENTRYPOINT) gets."""
    assert "command" not in container
    args: list[str] = container["args"]
    return args


def test_helm_lint_passes_with_defaults_and_the_combination(helm: Path) -> None:
    run_helm("lint", "--strict", KUBE_VERSION, str(CHART))
    run_helm("lint", "--strict", KUBE_VERSION, str(CHART), *set_flags(COMBINATION))


def test_defaults_render_two_operators_for_their_own_namespace() -> None:
    objects = template()
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",  # kopf's read-only framework role, nothing else cluster-wide
            "ClusterRoleBinding",
            "Role",  # the operator's work in its namespace
            "RoleBinding",
            "Role",  # the leader-election Lease
            "RoleBinding",
            "PodDisruptionBudget",
            "Service",
            "Deployment",
            "ConfigMap",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 2
    container = operator_container(objects)
    args = flags(container)
    assert "--standalone" in args and "--leader-elect" in args
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={NAMESPACE}"]
    assert "--policy-dir=/etc/optiserve/policy" in args
    assert "--liveness=http://0.0.0.0:8081/healthz" in args
    assert "--metrics-port=8080" in args
    # The same default the operator has without the chart.
    from optiserve_operator.settings import DEFAULT_OPTIMIZER_IMAGE

    assert f"--optimizer-image={DEFAULT_OPTIMIZER_IMAGE}" in args
    assert container["image"] == "ghcr.io/optiserve/operator:0.1.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["resources"]["limits"] and container["resources"]["requests"]
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not of_kind(objects, "ServiceMonitor")


def test_namespaced_monitored_combination() -> None:
    objects = template(COMBINATION)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    container = operator_container(objects)
    args = flags(container)
    # The Lease stays in the release namespace whichever namespaces are watched.
    assert f"--leader-election-namespace={NAMESPACE}" in args
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=ml",
        "--namespace=research",
    ]
    # A Role and RoleBinding in each watched namespace, no cluster-wide work role; the Lease's
    # Role and RoleBinding in the release namespace.
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml", NAMESPACE, "research"]
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml", NAMESPACE, "research"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "optiserve", "namespace": NAMESPACE}
        ]
    cluster_roles = of_kind(objects, "ClusterRole")
    assert [r["metadata"]["name"] for r in cluster_roles] == ["optiserve-framework"]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        one(objects, "Service")["metadata"]["labels"].items()
    )


def test_image_digest_pins_the_images() -> None:
    digest = "sha256:" + "a" * 64
    objects = template({"image.digest": digest, "optimizer.image.digest": digest})
    container = operator_container(objects)
    assert container["image"] == f"ghcr.io/optiserve/operator@{digest}"
    assert f"--optimizer-image=ghcr.io/optiserve/optimizer@{digest}" in flags(container)


def test_every_pod_is_restricted() -> None:
    for values in ({}, COMBINATION):
        for deployment in of_kind(template(values), "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 10001
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not pod.get("hostNetwork") and not pod.get("hostPID")
            for container in pod["containers"]:
                ctx = container["securityContext"]
                assert ctx["allowPrivilegeEscalation"] is False
                assert ctx["readOnlyRootFilesystem"] is True
                assert ctx["runAsNonRoot"] is True
                assert ctx["runAsUser"] == 10001
                assert ctx["capabilities"] == {"drop": ["ALL"]}
                assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
                assert not ctx.get("privileged")
                # The read-only root needs a writable /tmp, and nothing else; the policy is
                # mounted read-only.
                mounts = {
                    m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]
                }
                assert mounts == {"/tmp": False, "/etc/optiserve/policy": True}


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCounts": 2}, "replicaCounts"),
        ({"image.tagg": "1"}, "tagg"),
        ({"metrics.serviceMonitor.enable": True}, "enable"),
        ({"image.tag": "latest"}, "image.tag"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"metrics.port": 70000}, "metrics.port"),
    ],
)
def test_schema_refuses_typos_and_bad_values(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(HelmFailed, match=complaint):
        template(values)


def test_a_service_monitor_without_metrics_is_refused() -> None:
    values = {"metrics.enabled": False, "metrics.serviceMonitor.enabled": True}
    with pytest.raises(HelmFailed, match=r"needs metrics\.enabled"):
        template(values)


def test_without_service_account_creation_a_name_is_required() -> None:
    with pytest.raises(HelmFailed, match=r"serviceAccount\.name is required"):
        template({"serviceAccount.create": False})
    objects = template({"serviceAccount.create": False, "serviceAccount.name": "mine"})
    assert not of_kind(objects, "ServiceAccount")
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


@pytest.mark.parametrize(
    "values",
    [
        {},
        COMBINATION,
        {"verbose": True, "logFormat": "json", "optimizer.serviceAccountName": "optimizer"},
        {"metrics.enabled": False, "extraArgs": ["--resync-seconds=600"]},
        {"replicaCount": 1},
        {"prometheus.url": "http://prometheus.monitoring.svc:9090"},
    ],
    ids=["defaults", "combination", "logging", "no-metrics", "one-replica", "prometheus"],
)
def test_the_operator_parses_every_flag_the_chart_passes(values: dict[str, Any]) -> None:
    from optiserve_operator.settings import parse_settings

    args = flags(operator_container(template(values)))
    settings = parse_settings(args)  # SystemExit(2) on a flag the operator does not know
    assert settings.leader_elect is (values.get("replicaCount", 2) > 1)
    if settings.leader_elect:
        assert settings.leader_election_namespace == NAMESPACE
        assert settings.leader_election_id == "optiserve"
    assert settings.liveness == "http://0.0.0.0:8081/healthz"
    assert settings.metrics_port == (None if values.get("metrics.enabled") is False else 8080)
    assert settings.namespaces == tuple(values.get("watchNamespaces", [NAMESPACE]))
    assert settings.policy_dir == "/etc/optiserve/policy"
    assert settings.optimizer_image == "ghcr.io/optiserve/optimizer:0.1.0"
    assert settings.job_service_account == values.get("optimizer.serviceAccountName")
    assert settings.verbose is values.get("verbose", False)
    assert settings.log_format == values.get("logFormat", "full")
    if "extraArgs" in values:
        assert settings.resync_seconds == 600
    assert settings.prometheus_url == values.get("prometheus.url")  # canary analysis


def test_triton_pod_monitor_selects_the_pods_optiserve_renders() -> None:
    from optiserve.api import OptimizedModel
    from optiserve.render.manifests import render_all

    assert not of_kind(template(), "PodMonitor")
    objects = template(
        {"tritonMetrics.podMonitor.enabled": True, "tritonMetrics.podMonitor.interval": "5s"}
    )
    monitor = one(objects, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # Canary analysis tells the revisions apart by these pod labels on the series.
    assert monitor["spec"]["podTargetLabels"] == ["optiserve.io/model", "optiserve.io/revision"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
        "metrics",
        "/metrics",
        "5s",
    )
    model = OptimizedModel.model_validate(
        {
            "apiVersion": "optiserve.io/v1alpha1",
            "kind": "OptimizedModel",
            "metadata": {"name": "m", "namespace": "ml"},
            "spec": {
                "source": {"uri": "pvc://models/m.onnx"},
                "optimization": {"accuracy": {"dataset": "pvc://models/eval.npz"}},
                "storage": {"pvc": "store"},
            },
        }
    )
    (deployment,) = [
        m
        for m in render_all(model, digest="0" * 64, optimizer_image="x")
        if m["kind"] == "Deployment"
    ]
    pod = deployment["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert endpoint["port"] in ports
