"""A canary's weight on the HTTPRoute, on the real API server (kube-apiserver with the Gateway
API standard-channel CRDs at the pinned version).

Each pass is ``reconcile.plan`` carried out by ``Controller.execute`` (server-side apply, field
manager optiserve; deletes): the route and the Services are the API server's, read back after
every pass and read by the operator's own ``read_exposure`` and ``read_canary`` for the next
one. The pods are not (the Deployments' and the analysis' states are given, as in
tests/operator/test_canary_route.py), so this checks what the API server accepts and stores,
step by step and back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from optiserve.api import API_VERSION, KIND, OptimizedModelSpec
from optiserve.render.kubernetes import Owner
from optiserve_operator.canary_reading import read_canary
from optiserve_operator.canary_rollout import CanaryObserved
from optiserve_operator.controller import Controller
from optiserve_operator.exposure import read_exposure
from optiserve_operator.kube import Kube
from optiserve_operator.reconcile import ModelState, Plan
from optiserve_testing.cluster import LocalCluster, install_crd
from optiserve_testing.gateway_api import GatewayApiUnavailable, install_gateway_api
from tests.operator.test_canary_route import CONFIG, Model, canary_object, stable

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def apis(cluster: LocalCluster) -> Iterator[None]:
    install_crd(cluster)
    try:
        install_gateway_api(cluster)
    except GatewayApiUnavailable as err:
        pytest.skip(str(err))
    yield


class LiveModel(Model):
    """``Model``'s passes, each serving pass (one that observes a stable Deployment) carried
    out against the API server, with the live route and canary Service read back first."""

    def __init__(self, kube: Kube, owner: Owner) -> None:
        super().__init__(owner=owner)
        self.kube = kube
        self.controller = Controller(kube, CONFIG)

    def pass_(self, spec: OptimizedModelSpec, now: str, **observed: Any) -> Plan:
        live = "deployment" in observed
        if live:
            observed["exposure"] = read_exposure(self.kube, self.owner)
            canary = observed.get("canary") or CanaryObserved(configured=True)
            # The canary Service as the operator reads it (the pods' state stays given).
            state = ModelState(self.owner, self.generation, {}, spec, self.status)
            read = read_canary(self.kube, state, None, datetime.now(UTC))
            observed["canary"] = replace(canary, service=read.service)
        result = super().pass_(spec, now, **observed)
        if live:
            obj = self.kube.get(API_VERSION, KIND, self.owner.namespace, self.owner.name)
            assert obj is not None
            self.controller.execute(obj, result)
        return result


def get(cluster: LocalCluster, ns: str, kind: str, name: str) -> Any:
    found = cluster.kubectl("get", "-n", ns, kind, name, "-o", "json")
    return json.loads(found.stdout) if found.returncode == 0 else None


def live_backends(cluster: LocalCluster, ns: str) -> list[tuple[str, int]]:
    route = get(cluster, ns, "httproute.gateway.networking.k8s.io", "digits")
    (rule,) = route["spec"]["rules"]
    return [(ref["name"], ref["weight"]) for ref in rule["backendRefs"]]


def live_selector(cluster: LocalCluster, ns: str, name: str = "digits") -> dict[str, str]:
    selector: dict[str, str] = get(cluster, ns, "service", name)["spec"]["selector"]
    return selector


def stored_as_rendered(cluster: LocalCluster, ns: str, result: Plan) -> None:
    (route,) = [m for m in result.apply if m["kind"] == "HTTPRoute"]
    stored = get(cluster, ns, "httproute.gateway.networking.k8s.io", "digits")
    assert stored["spec"] == route["spec"], "the API server defaulted or changed a field"


def test_the_weight_moves_step_by_step_and_back(
    cluster: LocalCluster, cluster_namespace: str, apis: None
) -> None:
    ns = cluster_namespace
    live_object = canary_object("fp32")
    live_object["metadata"]["namespace"] = ns
    cluster.apply([live_object])
    obj = json.loads(cluster.kubectl("get", "-n", ns, "om", "digits", "-o", "json").stdout)
    kube = Kube.from_environment(str(cluster.kubeconfig))
    model = LiveModel(kube, Owner(name="digits", namespace=ns, uid=obj["metadata"]["uid"]))

    start = model.served()
    assert start.status.rollout is not None and start.status.rollout.phase == "Canary"
    assert live_backends(cluster, ns) == [("digits", 1)]  # the canary pods do not serve yet
    assert live_selector(cluster, ns)["optiserve.io/revision"] == "stable"
    assert live_selector(cluster, ns, "digits-canary")["optiserve.io/revision"] == "canary"

    serving = model.step(
        "2026-01-01T00:03:30Z", deployment=stable(model.old), canary=model.canary(1)
    )
    assert live_backends(cluster, ns) == [("digits", 90), ("digits-canary", 10)]
    stored_as_rendered(cluster, ns, serving)
    route = get(cluster, ns, "httproute.gateway.networking.k8s.io", "digits")
    # Read back by the operator as the weight it sends to the canary.
    assert read_exposure(kube, model.owner).canary_weight == 10
    # The same pass again writes nothing: no defaulting tug of war on the weighted route.
    model.step("2026-01-01T00:03:40Z", deployment=stable(model.old), canary=model.canary(1))
    again = get(cluster, ns, "httproute.gateway.networking.k8s.io", "digits")
    assert again["metadata"]["resourceVersion"] == route["metadata"]["resourceVersion"]

    nxt = model.step("2026-01-01T00:04:01Z", deployment=stable(model.old), canary=model.canary(1))
    assert nxt.status.rollout is not None and nxt.status.rollout.weight == 40
    assert live_backends(cluster, ns) == [("digits", 60), ("digits-canary", 40)]
    stored_as_rendered(cluster, ns, nxt)
    status = get(cluster, ns, "om", "digits")["status"]["rollout"]
    assert (status["step"], status["weight"]) == (1, 40)

    promote = model.step(
        "2026-01-01T00:05:05Z", deployment=stable(model.old, 2), canary=model.canary(2)
    )
    assert promote.status.rollout is not None and promote.status.rollout.phase == "Promoting"
    assert live_backends(cluster, ns) == [("digits", 60), ("digits-canary", 40)]

    model.step("2026-01-01T00:06:30Z", deployment=stable(model.new, 2), canary=model.canary(2))
    assert live_backends(cluster, ns) == [("digits", 1)]
    # The route no longer sends to the canary; its Service and Deployment go on the next pass.
    assert get(cluster, ns, "service", "digits-canary") is not None
    assert get(cluster, ns, "deployment", "digits-canary") is not None

    gone = model.step(
        "2026-01-01T00:06:40Z", deployment=stable(model.new, 2), canary=model.canary(2)
    )
    assert gone.delete_canary and gone.delete_canary_service
    assert get(cluster, ns, "service", "digits-canary") is None
    assert get(cluster, ns, "deployment", "digits-canary") is None

    done = model.step(
        "2026-01-01T00:07:00Z",
        deployment=stable(model.new, 3),
        canary=CanaryObserved(configured=True),
    )
    assert done.status.phase == "Ready" and done.status.rollout is None
    assert live_backends(cluster, ns) == [("digits", 1)]
    assert "optiserve.io/revision" not in live_selector(cluster, ns)
    assert read_exposure(kube, model.owner).canary_weight is None


def test_a_weight_outside_the_gateway_apis_range_is_refused(
    cluster: LocalCluster, cluster_namespace: str, apis: None
) -> None:
    """The check has teeth: the CRD's own validation of backendRefs weights is in force."""
    ns = cluster_namespace
    manifest = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "digits", "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "rules": [{"backendRefs": [{"name": "digits", "port": 8000, "weight": -1}]}],
        },
    }
    result = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(manifest)
    )
    assert result.returncode != 0 and "weight" in result.stderr
