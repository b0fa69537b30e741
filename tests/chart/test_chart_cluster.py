"""The chart against a real kube-apiserver (optiserve_testing): server-side validation of every
object, helm install and upgrade, the CRD served, and what the chart's ServiceAccount may do."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optiserve_testing.cluster import LocalCluster, wait_established
from tests.chart.config_manifests import CONFIG
from tests.chart.helm import CHART, run_helm, set_flags, template_text
from tests.chart.service_account import service_account_kubeconfig

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("helm")]

# Just enough of prometheus-operator's CRD for the API server to know the kind.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def _ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def _new_namespace(cluster: LocalCluster) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    _ok(cluster.kubectl("create", "namespace", name))
    return name


@pytest.fixture
def release(cluster: LocalCluster, cluster_namespace: str) -> Iterator[str]:
    """A release name unique to the test (its ClusterRoles are named after it); uninstalled
    afterwards so no cluster-scoped object is left behind."""
    name = cluster_namespace  # "t-<hex>": unique, and a valid release name
    yield name
    run_helm(
        "uninstall",
        name,
        f"--namespace={cluster_namespace}",
        "--ignore-not-found",
        kubeconfig=cluster.kubeconfig,
    )


def test_the_api_server_accepts_the_crds(cluster: LocalCluster) -> None:
    """The CRDs the chart ships, as the API server sees them (CEL cost budget, defaults
    checked against the CEL rules): what helm install does first."""
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        # apply, not create: another test of the session may have installed the CRD already.
        result = cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", str(crd)
        )
        assert result.returncode == 0, f"{crd.name} refused:\n{result.stderr}"


def test_server_side_dry_run_accepts_every_object(
    cluster: LocalCluster, cluster_namespace: str
) -> None:
    cluster.apply([SERVICE_MONITOR_CRD])
    wait_established(cluster, "servicemonitors.monitoring.coreos.com")
    watched = _new_namespace(cluster)
    for values in (
        {},
        {"watchNamespaces": [watched], "metrics.serviceMonitor.enabled": True},
        {"clusterWide": True, "replicaCount": 1},
    ):
        rendered = template_text(values, include_crds=True, namespace=cluster_namespace)
        _ok(
            cluster.kubectl("apply", "--dry-run=server", "--server-side", "-f", "-", input=rendered)
        )


def _can_i(cluster: LocalCluster, kubeconfig: Path, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def test_install_serves_the_crd_and_upgrade_turns_on_leader_election(
    cluster: LocalCluster, cluster_namespace: str, release: str, tmp_path: Path
) -> None:
    ns = cluster_namespace
    notes = run_helm(
        "install",
        release,
        str(CHART),
        f"--namespace={ns}",
        *set_flags({"replicaCount": 1}),
        kubeconfig=cluster.kubeconfig,
    )
    assert f"rollout status deployment/{release}-optiserve" in notes
    assert f"watches the namespaces {ns}" in notes  # its own namespace, by default
    wait_established(cluster, "optimizedmodels.optiserve.io")
    _ok(cluster.kubectl("get", "om", f"--namespace={ns}"))  # the short name is served
    deployment = json.loads(
        _ok(cluster.kubectl("get", "deployment", f"{release}-optiserve", "-n", ns, "-o", "json"))
    )
    assert deployment["spec"]["strategy"]["type"] == "Recreate"

    sa = service_account_kubeconfig(cluster, ns, f"{release}-optiserve", tmp_path)
    lease = f"leases.coordination.k8s.io/{release}-optiserve"
    assert not _can_i(cluster, sa, "get", lease, f"--namespace={ns}")

    # The chart's default (helm would otherwise reuse replicaCount 1): two replicas electing a
    # leader on a Lease.
    run_helm(
        "upgrade",
        release,
        str(CHART),
        f"--namespace={ns}",
        "--reset-values",
        kubeconfig=cluster.kubeconfig,
    )
    deployment = json.loads(
        _ok(cluster.kubectl("get", "deployment", f"{release}-optiserve", "-n", ns, "-o", "json"))
    )
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    _ok(cluster.kubectl("get", "poddisruptionbudget", f"{release}-optiserve", f"--namespace={ns}"))
    for verb in ("get", "update"):
        assert _can_i(cluster, sa, verb, lease, f"--namespace={ns}")
    assert _can_i(cluster, sa, "create", "leases.coordination.k8s.io", f"--namespace={ns}")
    assert not _can_i(
        cluster, sa, "update", "leases.coordination.k8s.io/other", f"--namespace={ns}"
    )
    history = run_helm(
        "history", release, f"--namespace={ns}", "-o", "json", kubeconfig=cluster.kubeconfig
    )
    assert [r["status"] for r in json.loads(history)] == ["superseded", "deployed"]


def test_cluster_wide_service_account_may_do_its_work_and_nothing_more(
    cluster: LocalCluster, cluster_namespace: str, release: str, tmp_path: Path
) -> None:
    ns = cluster_namespace
    run_helm(
        "install",
        release,
        str(CHART),
        f"--namespace={ns}",
        *set_flags({"clusterWide": True}),
        kubeconfig=cluster.kubeconfig,
    )
    sa = service_account_kubeconfig(cluster, ns, f"{release}-optiserve", tmp_path)
    other = _new_namespace(cluster)
    allowed = [
        ("list", "optimizedmodels.optiserve.io", "--all-namespaces"),
        ("watch", "optimizedmodels.optiserve.io", "--all-namespaces"),
        ("patch", "optimizedmodels.optiserve.io", "--subresource=status", f"--namespace={other}"),
        (
            "update",
            "optimizedmodels.optiserve.io",
            "--subresource=finalizers",
            f"--namespace={other}",
        ),
        ("patch", "optimizedmodels.optiserve.io", f"--namespace={other}"),  # its finalizer
        ("create", "jobs.batch", f"--namespace={other}"),
        ("delete", "jobs.batch", f"--namespace={other}"),
        ("create", "configmaps", f"--namespace={other}"),
        ("list", "pods", f"--namespace={other}"),
        ("patch", "deployments.apps", f"--namespace={other}"),
        ("delete", "deployments.apps", f"--namespace={other}"),  # a canary's, once it ends
        ("create", "services", f"--namespace={other}"),
        ("delete", "services", f"--namespace={other}"),  # a canary's, once the route leaves it
        ("delete", "horizontalpodautoscalers.autoscaling", f"--namespace={other}"),
        ("create", "events", f"--namespace={other}"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("update", f"leases.coordination.k8s.io/{release}-optiserve", f"--namespace={ns}"),
        ("create", "leases.coordination.k8s.io", f"--namespace={ns}"),
    ]
    refused = [
        ("get", "secrets", f"--namespace={other}"),
        ("list", "secrets", "--all-namespaces"),
        ("delete", "nodes"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("create", "optimizedmodels.optiserve.io", f"--namespace={other}"),  # users' objects
        ("delete", "optimizedmodels.optiserve.io", f"--namespace={other}"),
        ("get", "pods", f"--namespace={other}"),  # lists the Job's pods, nothing more
        ("create", "pods", "--subresource=exec", f"--namespace={other}"),
        ("create", "serviceaccounts", "--subresource=token", f"--namespace={other}"),
        # The leader-election Lease: its own, in its own namespace, nothing else.
        ("update", "leases.coordination.k8s.io/kube-controller-manager", "-n", "kube-system"),
        ("update", "leases.coordination.k8s.io/other", f"--namespace={ns}"),
        ("create", "leases.coordination.k8s.io", f"--namespace={other}"),
    ]
    assert [a for a in allowed if not _can_i(cluster, sa, *a)] == []
    assert [r for r in refused if _can_i(cluster, sa, *r)] == []


def test_namespaced_service_account_stays_in_its_namespaces(
    cluster: LocalCluster, cluster_namespace: str, release: str, tmp_path: Path
) -> None:
    ns = cluster_namespace
    watched, unwatched = _new_namespace(cluster), _new_namespace(cluster)
    run_helm(
        "install",
        release,
        str(CHART),
        f"--namespace={ns}",
        *set_flags({"watchNamespaces": [watched]}),
        kubeconfig=cluster.kubeconfig,
    )
    sa = service_account_kubeconfig(cluster, ns, f"{release}-optiserve", tmp_path)
    assert _can_i(cluster, sa, "create", "jobs.batch", f"--namespace={watched}")
    # The Lease lives in the release namespace, not the watched one.
    lease = f"leases.coordination.k8s.io/{release}-optiserve"
    assert _can_i(cluster, sa, "update", lease, f"--namespace={ns}")
    assert not _can_i(cluster, sa, "update", lease, f"--namespace={watched}")
    assert _can_i(cluster, sa, "list", "namespaces")
    assert not _can_i(cluster, sa, "create", "jobs.batch", f"--namespace={unwatched}")
    assert not _can_i(cluster, sa, "list", "optimizedmodels.optiserve.io", "--all-namespaces")
    assert not _can_i(cluster, sa, "get", "secrets", f"--namespace={watched}")
    assert not _can_i(cluster, sa, "list", "pods", "--all-namespaces")
    assert not _can_i(cluster, sa, "create", "jobs.batch", "--namespace=kube-system")
    assert not _can_i(cluster, sa, "create", "deployments.apps", "--namespace=kube-system")


def test_kubectl_apply_k_config(cluster: LocalCluster) -> None:
    """config/ applies as is; the namespace, roles and bindings are removed afterwards (the CRD
    stays: other tests of the session share it)."""
    try:
        _ok(cluster.kubectl("apply", "-k", str(CONFIG)))
        _ok(cluster.kubectl("get", "deployment", "optiserve", "-n", "optiserve-system"))
        _ok(cluster.kubectl("get", "om", "--all-namespaces"))
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            cluster.kubectl(
                "delete", kind, "optiserve", "optiserve-framework", "--ignore-not-found"
            )
        cluster.kubectl(
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            "optiserve-policy",
            "--ignore-not-found",
        )
        cluster.kubectl("delete", "namespace", "optiserve-system", "--wait=false")
