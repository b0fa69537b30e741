"""The chart grants the operator exactly what its code uses, and nothing dangerous.

What the code uses is derived from the code (tests/chart/operator_permissions.py): kopf's
handler registry, the Kube wrapper calls, and the kinds reconcile.plan writes. The chart's
rules are read from the committed config/ manifests (rendered from the chart, checked against
helm in test_config.py) and, when helm is built, from helm template for other value sets.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart import operator_permissions as op
from tests.chart.config_manifests import committed_objects
from tests.chart.helm import NAMESPACE, Manifest, of_kind, one, template
from tests.chart.operator_permissions import Permission

FORBIDDEN_RESOURCES = {
    "secrets",
    "nodes",
    "clusterroles",
    "clusterrolebindings",
    "roles",
    "rolebindings",
    "serviceaccounts/token",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "persistentvolumes",
    "certificatesigningrequests",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
}
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}


def _rules(role: Manifest) -> set[Permission]:
    return op.rules_to_permissions(role.get("rules") or [])


def _role_named(objects: list[Manifest], kind: str, suffix: str) -> Manifest:
    matches = [o for o in of_kind(objects, kind) if o["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, [o["metadata"]["name"] for o in of_kind(objects, kind)]
    return matches[0]


def test_kube_verbs_cover_every_method_of_the_kube_wrapper() -> None:
    assert set(op.KUBE_VERBS) == op.kube_public_methods(), (
        "operator/optiserve_operator/kube.py (or kube_paging.py) changed its methods: say in "
        "tests/chart/operator_permissions.py:KUBE_VERBS which RBAC verbs a new one uses"
    )


def test_every_renderer_the_operator_uses_is_exercised() -> None:
    rendered = set().union(*op.renderers_used_by_operator().values())
    planned = {kind for kinds in op.planned_manifests().values() for _, kind in kinds}
    assert rendered <= planned, (
        f"the operator renders {sorted(rendered - planned)} that planned_manifests() never "
        "plans: add a scenario in tests/chart/operator_permissions.py so its permissions are "
        "derived"
    )


def test_the_derivation_finds_the_calls_it_should() -> None:
    # Guards the guard: a derivation that silently found nothing would make the
    # equality below pass with an empty chart.
    needed = op.operator_permissions()
    assert Permission("batch", "jobs", "create") in needed
    assert Permission("optiserve.io", "optimizedmodels/status", "patch") in needed
    assert Permission("", "pods", "list") in needed
    assert len(needed) >= 15


LEASE_ROLE = "optiserve-leader-election"


def _work_roles(objects: list[Manifest]) -> list[Manifest]:
    return [r for r in of_kind(objects, "Role") if r["metadata"]["name"] != LEASE_ROLE]


def _check_leader_election(objects: list[Manifest], *, replicas: int) -> None:
    """With several replicas: one Role in the release namespace with exactly what leader.py
    does to its Lease, get and update limited to that Lease by name, bound to the operator's
    ServiceAccount; with one replica none of it."""
    roles = [r for r in of_kind(objects, "Role") if r["metadata"]["name"] == LEASE_ROLE]
    bindings = [b for b in of_kind(objects, "RoleBinding") if b["metadata"]["name"] == LEASE_ROLE]
    if replicas == 1:
        assert roles == [] and bindings == []
        return
    (role,), (binding,) = roles, bindings
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert _rules(role) == op.leader_election_permissions()
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    (lease,) = [a.split("=", 1)[1] for a in args if a.startswith("--leader-election-id=")]
    for rule in role["rules"]:
        # RBAC cannot limit create by name (the object does not exist yet); every other verb is.
        expected = None if rule["verbs"] == ["create"] else [lease]
        assert rule.get("resourceNames") == expected, rule
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": LEASE_ROLE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "optiserve", "namespace": NAMESPACE}
    ]


def _check_cluster_wide(objects: list[Manifest], *, replicas: int) -> None:
    work = _role_named(objects, "ClusterRole", "optiserve")
    framework = _role_named(objects, "ClusterRole", "-framework")
    kopf_cluster, kopf_namespaced = op.kopf_permissions(namespaced=False)
    assert _rules(work) == op.operator_permissions() | kopf_namespaced
    assert _rules(framework) == kopf_cluster
    assert _work_roles(objects) == []
    _check_leader_election(objects, replicas=replicas)


def _check_namespaced(objects: list[Manifest], namespaces: list[str], *, replicas: int) -> None:
    kopf_cluster, kopf_namespaced = op.kopf_permissions(namespaced=True)
    assert [r["metadata"]["name"] for r in of_kind(objects, "ClusterRole")] == [
        "optiserve-framework"
    ]
    assert _rules(of_kind(objects, "ClusterRole")[0]) == kopf_cluster
    roles = _work_roles(objects)
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(namespaces)
    for role in roles:
        assert _rules(role) == op.operator_permissions() | kopf_namespaced
    _check_leader_election(objects, replicas=replicas)


def test_committed_config_grants_exactly_what_the_operator_uses() -> None:
    # The chart's default: the release's own namespace, two replicas.
    _check_namespaced(committed_objects(), ["optiserve-system"], replicas=2)


@pytest.mark.usefixtures("helm")
@pytest.mark.parametrize("replicas", [1, 2])
def test_chart_cluster_wide_grants_exactly_what_is_used(replicas: int) -> None:
    _check_cluster_wide(
        template({"clusterWide": True, "replicaCount": replicas}), replicas=replicas
    )


@pytest.mark.usefixtures("helm")
@pytest.mark.parametrize("replicas", [1, 2])
def test_chart_namespaced_grants_exactly_what_is_used(replicas: int) -> None:
    objects = template({"watchNamespaces": ["ml", "research"], "replicaCount": replicas})
    _check_namespaced(objects, ["ml", "research"], replicas=replicas)
    _check_namespaced(template({"replicaCount": replicas}), ["optiserve-system"], replicas=replicas)


def _all_rules(objects: list[Manifest]) -> list[dict[str, Any]]:
    return [
        rule
        for obj in objects
        if obj["kind"] in ("ClusterRole", "Role")
        for rule in obj.get("rules") or []
    ]


def _least_privilege(objects: list[Manifest]) -> None:
    rules = _all_rules(objects)
    assert rules
    for rule in rules:
        assert "*" not in rule.get("apiGroups", []), rule
        assert not set(rule.get("resources", [])) & (FORBIDDEN_RESOURCES | {"*"}), rule
        assert not set(rule.get("verbs", [])) & FORBIDDEN_VERBS, rule
        assert not rule.get("nonResourceURLs"), rule
        if rule.get("resourceNames"):  # only the leader-election Lease is named
            assert rule["resources"] == ["leases"], rule
        if "update" in rule.get("verbs", []):
            # blockOwnerDeletion on children (finalizers), or renewing the one named Lease.
            leases = rule["resources"] == ["leases"] and len(rule.get("resourceNames", [])) == 1
            assert leases or all(r.endswith("/finalizers") for r in rule["resources"]), rule
    for obj in objects:
        assert "aggregationRule" not in obj
        if obj["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            ref = obj["roleRef"]
            assert ref["name"] not in ("cluster-admin", "admin", "edit", "view"), ref
            own = {o["metadata"]["name"] for o in objects if o["kind"] == ref["kind"]}
            assert ref["name"] in own, f"{obj['metadata']['name']} binds a role not in the chart"


def test_committed_config_is_least_privilege() -> None:
    _least_privilege(committed_objects())


@pytest.mark.usefixtures("helm")
def test_chart_is_least_privilege_in_every_mode() -> None:
    for values in (
        {},
        {"replicaCount": 1},
        {"clusterWide": True},
        {"clusterWide": True, "replicaCount": 1},
        {"watchNamespaces": ["ml"]},
        {"watchNamespaces": ["ml"], "replicaCount": 1},
    ):
        _least_privilege(template(values))


def test_leader_election_needs_only_its_lease() -> None:
    """--leader-elect reads, creates and updates one Lease in the operator's own namespace
    (leader.py), nothing in the watched namespaces."""
    assert op.leader_election_permissions() == {
        op.Permission("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update")
    }
