"""serving.exposure end to end: the real operator makes the HTTPRoute (Gateway API CRDs at the
pinned version) or the Ingress for a served model, and ``kubectl get om`` shows the external
URL; without the Gateway API CRDs the model serves in the cluster and a condition says why."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.gateway_api import (
    GatewayApiUnavailable,
    gateway_api_crds,
    install_gateway_api,
    uninstall_gateway_api,
)
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess
from tests.e2e.objects import condition, get, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(900)]

ROUTE = {
    "httpRoute": {
        "parentRefs": [{"name": "public", "namespace": "gateways"}],
        "hostnames": ["digits.example.com"],
        "path": "/digits",
        "scheme": "https",
    }
}
ROUTE_URL = "https://digits.example.com/digits"


@pytest.fixture(scope="module")
def gateway_crds() -> None:
    try:
        gateway_api_crds()  # fetched (or found cached) before any test changes the cluster
    except GatewayApiUnavailable as err:
        pytest.skip(str(err))


def exposed(name: str, exposure: dict[str, Any]) -> dict[str, Any]:
    obj = tiny(name)
    obj["spec"]["serving"] = {**obj["spec"]["serving"], "exposure": exposure}
    return obj


def url_column(cluster: LocalCluster, ns: str, name: str) -> str:
    table = cluster.kubectl("get", "-n", ns, "om", name, check=True).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    return row[header.index("URL")]


def events(cluster: LocalCluster, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    found = get(
        cluster, ns, "events", f"--field-selector=involvedObject.name={name},reason={reason}"
    )
    return list((found or {}).get("items") or [])


def exposed_condition(cluster: LocalCluster, ns: str, name: str) -> tuple[str, str]:
    cond = condition(get(cluster, ns, "om", name), "Exposed")
    return cond.get("status", ""), cond.get("reason", "")


def test_route_without_the_gateway_api_then_with_it_then_refused_then_dropped(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str, gateway_crds: None
) -> None:
    ns, name = e2e_namespace, "routed"
    uninstall_gateway_api(cluster)  # another module of the session may have installed them

    cluster.apply([exposed(name, ROUTE)], namespace=ns)
    obj = wait_ready(cluster, operator, ns, name)
    wait_until(
        "Exposed=False GatewayAPIMissing",
        lambda: exposed_condition(cluster, ns, name) == ("False", "GatewayAPIMissing"),
        timeout_s=60,
    )
    obj = get(cluster, ns, "om", name)
    assert obj["status"]["phase"] == "Ready"
    assert obj["status"]["endpoint"] == f"http://{name}.{ns}.svc:8000"
    assert url_column(cluster, ns, name) == f"http://{name}.{ns}.svc:8000"
    (warning,) = events(cluster, ns, name, "GatewayAPIMissing")
    assert warning["type"] == "Warning" and "Gateway API CRDs" in warning["message"]
    assert "Traceback" not in operator.full_logs()

    # The CRDs installed later: the next resync (15 s here) exposes the model.
    install_gateway_api(cluster)

    def route() -> Any:
        return get(cluster, ns, "httproute", name)

    wait_until("the HTTPRoute", route, timeout_s=120)
    wait_until(
        "status.endpoint the external URL",
        lambda: get(cluster, ns, "om", name)["status"].get("endpoint") == ROUTE_URL,
        timeout_s=60,
    )
    obj = get(cluster, ns, "om", name)
    assert url_column(cluster, ns, name) == ROUTE_URL
    assert obj["status"]["clusterEndpoint"] == f"http://{name}.{ns}.svc:8000"
    assert obj["status"]["grpcEndpoint"] == f"{name}.{ns}.svc:8001"
    assert exposed_condition(cluster, ns, name) == ("True", "Exposed")
    found = route()
    (ref,) = found["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == (
        "OptimizedModel",
        obj["metadata"]["uid"],
        True,
    )
    (rule,) = found["spec"]["rules"]
    assert rule["backendRefs"][0]["name"] == name and rule["backendRefs"][0]["port"] == 8000
    assert found["spec"]["parentRefs"][0]["name"] == "public"
    # Only one Warning for the missing CRDs, however many passes saw them missing.
    assert len(events(cluster, ns, name, "GatewayAPIMissing")) == 1

    # A Gateway controller refuses the route: it says so in the route's status.
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "public", "namespace": "gateways"},
                    "controllerName": "example.com/gateway-controller",
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "False",
                            "reason": "NotAllowedByListeners",
                            "message": f"no listener allows routes from namespace {ns}",
                            "observedGeneration": found["metadata"]["generation"],
                            "lastTransitionTime": now,
                        }
                    ],
                }
            ]
        }
    }
    cluster.kubectl(
        "patch", "-n", ns, "httproute", name, "--subresource=status", "--type=merge",
        "-p", json.dumps(status), check=True,
    )  # fmt: skip
    wait_until(
        "Exposed=False RouteNotAccepted",
        lambda: exposed_condition(cluster, ns, name) == ("False", "RouteNotAccepted"),
        timeout_s=60,
    )
    message = condition(get(cluster, ns, "om", name), "Exposed")["message"]
    assert "gateways/public: NotAllowedByListeners" in message
    assert condition(get(cluster, ns, "om", name), "Ready")["status"] == "True"

    # The spec drops the exposure: the route goes, the endpoint is the cluster's again.
    cluster.apply([tiny(name)], namespace=ns)
    wait_until("the HTTPRoute deleted", lambda: route() is None, timeout_s=60)
    wait_until(
        "the in-cluster endpoint",
        lambda: url_column(cluster, ns, name) == f"http://{name}.{ns}.svc:8000",
        timeout_s=60,
    )
    assert exposed_condition(cluster, ns, name) == ("", "")


def test_ingress_with_tls_shows_https_url(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str
) -> None:
    ns, name = e2e_namespace, "ingressed"
    exposure = {
        "ingress": {
            "host": "digits.example.com",
            "ingressClassName": "nginx",
            "tlsSecretName": "digits-tls",
        }
    }
    cluster.apply([exposed(name, exposure)], namespace=ns)
    obj = wait_ready(cluster, operator, ns, name)
    wait_until(
        "the external URL",
        lambda: url_column(cluster, ns, name) == "https://digits.example.com",
        timeout_s=60,
    )
    ingress = get(cluster, ns, "ingress", name)
    assert ingress["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["digits.example.com"], "secretName": "digits-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": name, "port": {"number": 8000}}
    assert exposed_condition(cluster, ns, name) == ("True", "Exposed")
