"""A namespace being deleted, on the real API server: its answer to a create is recognised,
and a deleted model whose cleanup Job can no longer be created lets its namespace go.

The model holds the operator's finalizer (``keepArtifactsOnDelete: false`` with an artifact),
so deleting its namespace leaves the namespace Terminating with the model in it, marked for
deletion: the situation the operator meets. One pass must release the finalizer instead of
retrying a create the API server refuses for as long as the namespace exists.
"""

from __future__ import annotations

import copy
import json
import logging
import uuid

import pytest

from optiserve_operator.controller import Controller
from optiserve_operator.deletion import FINALIZER
from optiserve_operator.failures import terminating_namespace
from optiserve_operator.kube import Kube
from optiserve_operator.kube_transport import KubeError
from optiserve_testing.cluster import LocalCluster, install_crd
from optiserve_testing.waiting import wait_until
from tests.e2e.objects import TINY, get
from tests.operator.helpers import CONFIG

pytestmark = pytest.mark.cluster

DIGEST = "b" * 64


def test_a_terminating_namespace_is_recognised_and_does_not_hold_a_deleted_model(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    install_crd(cluster)
    ns = f"doomed-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns, check=True)
    model = copy.deepcopy(TINY)
    model["metadata"] = {"name": "tiny"}
    model["spec"]["storage"] = {"pvc": "model-store", "keepArtifactsOnDelete": False}
    cluster.apply([model], namespace=ns)
    kube = Kube.from_environment(str(cluster.kubeconfig))
    # The finalizer as the operator adds it (its field manager: its to remove).
    meta = {"name": "tiny", "namespace": ns, "finalizers": [FINALIZER]}
    kube.apply({"apiVersion": "optiserve.io/v1alpha1", "kind": "OptimizedModel", "metadata": meta})
    artifact = {"digest": DIGEST, "uri": f"pvc://model-store/optiserve/{ns}/tiny/{DIGEST}"}
    cluster.kubectl(
        *("patch", "-n", ns, "om", "tiny", "--subresource=status", "--type=merge"),
        *("-p", json.dumps({"status": {"artifact": artifact}})),
        check=True,
    )
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=True)

    # The API server's own answer to a create there (its admission sees the deletion soon).
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p", "namespace": ns}}
    refusals: list[KubeError] = []

    def refused() -> bool:
        try:
            kube.create(probe)
        except KubeError as err:
            refusals.append(err)
            return err.status == 403
        kube.delete("v1", "ConfigMap", ns, "p")
        return False

    wait_until("creates refused in the terminating namespace", refused, timeout_s=30)
    assert terminating_namespace(refusals[-1]) == ns, refusals[-1]

    # The model is marked for deletion and waits on our finalizer alone.
    wait_until(
        "the model marked for deletion",
        lambda: bool(get(cluster, ns, "om", "tiny")["metadata"].get("deletionTimestamp")),
        timeout_s=30,
    )
    controller = Controller(kube, CONFIG)
    with caplog.at_level(logging.INFO, logger="optiserve.operator"):
        assert controller.reconcile(ns, "tiny") is None
    wait_until("the model gone", lambda: get(cluster, ns, "om", "tiny") is None, timeout_s=30)
    said = [r.getMessage() for r in caplog.records if "namespace terminating" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"namespace terminating: {ns}: create Job ")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [f"{ns}/tiny: artifacts left in model-store: the namespace is being deleted"]
