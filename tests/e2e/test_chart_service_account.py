"""The operator run with the chart's ServiceAccount token, not admin: the RBAC the chart renders
(tests/chart/operator_permissions.py derives it from the operator's code) is enough to reconcile
an OptimizedModel to Ready, and the same credentials are refused what lies outside the role.
The operator gets the chart's default leader-election flags (two replicas: --leader-elect on a
Lease in the release namespace), so the chart's Lease Role is exercised too.

The Job pods are still run by the harness's pod runner with admin rights: that is the stand-in
for a kubelet, not the operator."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.waiting import wait_until
from tests.chart.helm import CHART, KUBE_VERSION, HelmUnavailable, helm_binary, run_helm
from tests.chart.service_account import service_account_kubeconfig
from tests.e2e.conftest import OperatorProcess
from tests.e2e.objects import condition, get, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(600)]

# The chart's objects that give the operator its identity and permissions; the Deployment is
# left out: the operator runs here as a local process holding the ServiceAccount's token.
RBAC_TEMPLATES = ("templates/serviceaccount.yaml", "templates/rbac.yaml")


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str
    kubeconfig: Path  # authenticates with a token of this ServiceAccount, nothing else
    leader_election_args: tuple[str, ...]  # the chart Deployment's --leader-elect flags


def render_operator_rbac(release: str, namespace: str, templates: tuple[str, ...]) -> str:
    """``helm template`` of the given templates, cluster-wide (``clusterWide: true``: every
    namespace watched, so cluster-wide roles), otherwise the chart's defaults."""
    show_only = [f"--show-only={template}" for template in templates]
    return run_helm(
        "template",
        release,
        str(CHART),
        f"--namespace={namespace}",
        KUBE_VERSION,
        "--set=clusterWide=true",
        *show_only,
    )


@pytest.fixture(scope="module")
def chart_service_account(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceAccount]:
    """The chart's RBAC applied for a release of its own: its cluster-scoped names clash with
    no other test of the session, and are deleted afterwards."""
    try:
        helm_binary()
    except HelmUnavailable as err:
        pytest.skip(str(err))
    release = namespace = f"sa-{uuid.uuid4().hex[:8]}"
    rendered = render_operator_rbac(release, namespace, RBAC_TEMPLATES)
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
    # The Role and RoleBinding: the leader-election Lease's, in the release namespace.
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    (deployment,) = yaml.safe_load_all(
        render_operator_rbac(release, namespace, ("templates/deployment.yaml",))
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    leader_election = tuple(a for a in args if a.startswith("--leader-elect"))
    assert len(leader_election) == 3, args  # --leader-elect, its namespace and its id
    cluster.kubectl("create", "namespace", namespace, check=True)
    try:
        cluster.apply(rendered, namespace=namespace)
        name = f"{release}-optiserve"  # the chart's fullname
        directory = tmp_path_factory.mktemp("service-account")
        kubeconfig = service_account_kubeconfig(cluster, namespace, name, directory)
        yield ServiceAccount(namespace, name, kubeconfig, leader_election)
    finally:
        cluster.kubectl(
            "delete",
            "clusterrolebinding,clusterrole",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "--ignore-not-found",
        )
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="module")
def operator_as_service_account(
    cluster: LocalCluster,
    crd: None,
    chart_service_account: ServiceAccount,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster,
        tmp_path_factory.mktemp("operator-sa"),
        kubeconfig=chart_service_account.kubeconfig,
        extra_args=chart_service_account.leader_election_args,
    )
    process.start()
    yield process
    process.stop()


# What the API server says when RBAC refuses a request ("jobs.batch is forbidden: User
# "system:serviceaccount:ns:sa" cannot list resource ..."). Not every 403 is RBAC: a namespace
# being deleted refuses new content with one too (another test's namespace, still terminating,
# holding a model this cluster-wide operator reconciles), and that says nothing of the role.
RBAC_REFUSAL = re.compile(r'forbidden: User "[^"]+" cannot ', re.IGNORECASE)


def rbac_refusals(operator: OperatorProcess) -> list[str]:
    """The operator's log lines that report a request its role did not allow."""
    logs = "\n".join(
        log.read_text(errors="replace") for log in sorted(operator.log_dir.glob("*.log"))
    )
    return [line for line in logs.splitlines() if RBAC_REFUSAL.search(line)]


def test_the_kubeconfig_is_the_service_account_not_admin(
    cluster: LocalCluster, chart_service_account: ServiceAccount
) -> None:
    sa = chart_service_account
    whoami = cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=sa.kubeconfig)
    assert whoami.returncode == 0, whoami.stderr
    user = json.loads(whoami.stdout)["status"]["userInfo"]["username"]
    assert user == f"system:serviceaccount:{sa.namespace}:{sa.name}"


def test_operator_as_the_service_account_reconciles_an_example_to_ready(
    cluster: LocalCluster,
    chart_service_account: ServiceAccount,
    operator_as_service_account: OperatorProcess,
    e2e_namespace: str,
) -> None:
    ns = e2e_namespace
    cluster.apply([tiny("as-service-account")], namespace=ns)
    obj = wait_ready(cluster, operator_as_service_account, ns, "as-service-account")

    assert condition(obj, "Ready")["status"] == "True"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["phase"] == "Ready"
    deployment = get(cluster, ns, "deployment", "as-service-account")
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    # Nothing the operator asked for was refused on the way (a role one verb short would
    # show up here even where the operator recovers).
    refusals = rbac_refusals(operator_as_service_account)
    assert refusals == [], "\n".join(refusals)
    # It reconciled as the leader: it holds the chart's Lease, in the release namespace.
    sa = chart_service_account
    lease = get(cluster, sa.namespace, "lease", sa.name)
    assert lease is not None and lease["spec"]["holderIdentity"], lease


def _refused(cluster: LocalCluster, sa: ServiceAccount, *args: str, input: str | None) -> str:
    result = cluster.kubectl(*args, kubeconfig=sa.kubeconfig, input=input)
    assert result.returncode != 0, f"kubectl {' '.join(args)} was allowed:\n{result.stdout}"
    return result.stderr


def test_the_service_account_is_refused_outside_its_role(
    cluster: LocalCluster, chart_service_account: ServiceAccount, e2e_namespace: str
) -> None:
    sa, ns = chart_service_account, e2e_namespace
    # The same credentials do reach the API server and may read what the operator reads...
    allowed = cluster.kubectl("get", "optimizedmodels", "-n", ns, kubeconfig=sa.kubeconfig)
    assert allowed.returncode == 0, allowed.stderr
    node = cluster.kubectl("get", "nodes", "-o", "name", check=True).stdout.split()[0]
    # ...and nothing more. Dry runs: were a refusal missing, nothing would change.
    escalation = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{sa.name}-escalated"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{"kind": "ServiceAccount", "name": sa.name, "namespace": sa.namespace}],
    }
    attempts: dict[str, tuple[list[str], str | None]] = {
        "read secrets": (["get", "secrets", "-n", ns], None),
        "delete a node": (["delete", node, "--dry-run=server"], None),
        "bind itself to cluster-admin": (
            ["create", "--dry-run=server", "-f", "-"],
            yaml.safe_dump(escalation),
        ),
    }
    for what, (args, manifest) in attempts.items():
        message = _refused(cluster, sa, *args, input=manifest)
        assert "Forbidden" in message, f"{what}: {message}"
        assert f"system:serviceaccount:{sa.namespace}:{sa.name}" in message, f"{what}: {message}"


def test_the_network_policy_follows_the_spec_with_the_charts_rights(
    cluster: LocalCluster, operator_as_service_account: OperatorProcess, e2e_namespace: str
) -> None:
    """serving.networkPolicy on: the operator applies it with the Deployment; switched off: the
    operator deletes it. Both with the chart's role (get, create, patch, delete)."""
    ns, name = e2e_namespace, "guarded"
    serving = {
        **tiny(name)["spec"]["serving"],
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"kubernetes.io/metadata.name": "monitoring"}}],
        },
    }
    cluster.apply([tiny(name, serving=serving)], namespace=ns)
    obj = wait_ready(cluster, operator_as_service_account, ns, name)
    policy = get(cluster, ns, "networkpolicy", name)
    assert policy is not None, "no NetworkPolicy applied"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ports = [sorted(p["port"] for p in rule["ports"]) for rule in policy["spec"]["ingress"]]
    assert ports == [[8000, 8001], [8002]]

    cluster.apply(
        [tiny(name, serving={**serving, "networkPolicy": {"enabled": False}})], namespace=ns
    )
    wait_until(
        "the NetworkPolicy deleted",
        lambda: get(cluster, ns, "networkpolicy", name) is None,
        timeout_s=60,
    )
    assert get(cluster, ns, "deployment", name) is not None  # serving goes on
    assert rbac_refusals(operator_as_service_account) == []


def test_the_ingress_follows_the_spec_with_the_charts_rights(
    cluster: LocalCluster, operator_as_service_account: OperatorProcess, e2e_namespace: str
) -> None:
    """serving.exposure.ingress: applied with the Deployment, deleted when dropped, with the
    chart's role (list, create, patch, delete on ingresses; the HTTPRoute list every pass)."""
    ns, name = e2e_namespace, "exposed"
    serving = {**tiny(name)["spec"]["serving"], "exposure": {"ingress": {"host": "m.example.com"}}}
    cluster.apply([tiny(name, serving=serving)], namespace=ns)
    obj = wait_ready(cluster, operator_as_service_account, ns, name)
    wait_until("the Ingress", lambda: get(cluster, ns, "ingress", name), timeout_s=60)
    ingress = get(cluster, ns, "ingress", name)
    assert ingress["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    wait_until(
        "the external URL in status",
        lambda: get(cluster, ns, "om", name)["status"].get("endpoint") == "http://m.example.com",
        timeout_s=60,
    )

    cluster.apply([tiny(name)], namespace=ns)
    wait_until(
        "the Ingress deleted", lambda: get(cluster, ns, "ingress", name) is None, timeout_s=60
    )
    assert rbac_refusals(operator_as_service_account) == []
