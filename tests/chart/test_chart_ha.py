"""Two operator replicas from the chart: leader election on a Lease in the release namespace
(not kopf peering), a Role for exactly that Lease, a PodDisruptionBudget, anti-affinity across
nodes and a rollout that may overlap; one replica gets none of it (docs/scale.md)."""

from __future__ import annotations

import pytest

from tests.chart.helm import NAMESPACE, Manifest, of_kind, one, template

pytestmark = pytest.mark.usefixtures("helm")

SELECTOR = {
    "app.kubernetes.io/name": "optiserve",
    "app.kubernetes.io/instance": "optiserve",
    "app.kubernetes.io/component": "operator",
}


def _args(objects: list[Manifest]) -> list[str]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    args: list[str] = containers[0]["args"]
    return args


def _named(objects: list[Manifest], kind: str, name: str) -> list[Manifest]:
    return [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]


def test_defaults_run_two_replicas_with_leader_election_on_a_lease() -> None:
    objects = template()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    args = _args(objects)
    # kopf's peering stays off: only the Lease decides which replica reconciles.
    assert "--standalone" in args
    assert not [a for a in args if a.startswith(("--peering", "--priority"))]
    assert "--leader-elect" in args
    assert f"--leader-election-namespace={NAMESPACE}" in args
    assert "--leader-election-id=optiserve" in args  # the release's full name
    assert not of_kind(objects, "KopfPeering") and not of_kind(objects, "ClusterKopfPeering")

    (role,) = _named(objects, "Role", "optiserve-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert sorted(
        (tuple(r["verbs"]), tuple(r.get("resourceNames", []))) for r in role["rules"]
    ) == [(("create",), ()), (("get", "update"), ("optiserve",))]
    for rule in role["rules"]:
        assert (rule["apiGroups"], rule["resources"]) == (["coordination.k8s.io"], ["leases"])
    (binding,) = _named(objects, "RoleBinding", "optiserve-leader-election")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["roleRef"]["name"] == "optiserve-leader-election"
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}
    ]


def test_two_replicas_survive_a_drain_and_spread_over_nodes() -> None:
    objects = template()
    budget = one(objects, "PodDisruptionBudget")
    assert budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": SELECTOR}}
    deployment = one(objects, "Deployment")
    assert SELECTOR.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": SELECTOR},
    }
    # Only the Lease holder works, so old and new pods may overlap during a rollout; one
    # replica stays up throughout.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_an_affinity_of_ones_own_replaces_the_default_anti_affinity() -> None:
    mine = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}
                ]
            }
        }
    }
    objects = template({"affinity": mine})
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["affinity"] == mine


@pytest.mark.parametrize("values", [{"replicaCount": 1}, {"replicaCount": 1, "clusterWide": True}])
def test_one_replica_runs_no_leader_election_and_never_overlaps(values: dict[str, object]) -> None:
    objects = template(values)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    args = _args(objects)
    assert "--standalone" in args
    assert not [a for a in args if a.startswith("--leader-elect")]
    assert not of_kind(objects, "PodDisruptionBudget")
    assert not _named(objects, "Role", "optiserve-leader-election")
    assert not _named(objects, "RoleBinding", "optiserve-leader-election")


def test_cluster_wide_keeps_the_lease_in_the_release_namespace() -> None:
    objects = template({"clusterWide": True})
    assert f"--leader-election-namespace={NAMESPACE}" in _args(objects)
    (role,) = _named(objects, "Role", "optiserve-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
