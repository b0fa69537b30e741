"""One finalizer name: a model still carrying the retired one is released by the operator.

On the real API server: a model being deleted that holds ``optiserve.io/finalizer`` (and
another controller's finalizer, which must stay) loses only the retired name in one reconcile
pass, so its deletion is not blocked by a name nothing removes any more.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator

import pytest

from optiserve_operator.controller import Controller
from optiserve_operator.deletion import FINALIZER, RETIRED_FINALIZERS, retired_finalizers_patch
from optiserve_operator.kube import Kube
from optiserve_testing.cluster import LocalCluster, install_crd
from tests.e2e.objects import TINY
from tests.operator.helpers import CONFIG

pytestmark = pytest.mark.cluster

OTHER = "example.com/keep-me"  # another controller's: never ours to remove
(RETIRED,) = RETIRED_FINALIZERS


def test_the_patch_drops_only_retired_names_and_tests_the_list_it_read() -> None:
    assert retired_finalizers_patch([FINALIZER, OTHER]) is None
    assert retired_finalizers_patch([]) is None
    assert retired_finalizers_patch([OTHER, RETIRED, FINALIZER]) == [
        {"op": "test", "path": "/metadata/finalizers", "value": [OTHER, RETIRED, FINALIZER]},
        {"op": "replace", "path": "/metadata/finalizers", "value": [OTHER, FINALIZER]},
    ]


@pytest.fixture(scope="module")
def crd_installed(cluster: LocalCluster) -> Iterator[None]:
    install_crd(cluster)
    yield


def finalizers(cluster: LocalCluster, ns: str, name: str) -> list[str] | None:
    found = cluster.kubectl("get", "-n", ns, "om", name, "-o", "json")
    if found.returncode != 0:
        return None
    return list(json.loads(found.stdout)["metadata"].get("finalizers") or [])


def test_a_deleted_model_holding_the_retired_finalizer_is_released(
    cluster: LocalCluster, cluster_namespace: str, crd_installed: None
) -> None:
    ns = cluster_namespace
    model = copy.deepcopy(TINY)
    model["metadata"] = {"name": "legacy", "finalizers": [RETIRED, OTHER]}
    model["spec"]["storage"] = {"pvc": "model-store", "keepArtifactsOnDelete": True}
    cluster.apply([model], namespace=ns)
    cluster.kubectl("delete", "-n", ns, "om", "legacy", "--wait=false", check=True)
    assert finalizers(cluster, ns, "legacy") == [RETIRED, OTHER]  # held by both

    controller = Controller(Kube.from_environment(str(cluster.kubeconfig)), CONFIG)
    assert controller.reconcile(ns, "legacy") is None  # nothing of ours to clean up

    assert finalizers(cluster, ns, "legacy") == [OTHER]  # the retired name is gone, only it
    cluster.kubectl(
        "patch", "-n", ns, "om", "legacy", "--type=merge", "-p", '{"metadata":{"finalizers":[]}}'
    )
    assert finalizers(cluster, ns, "legacy") is None
